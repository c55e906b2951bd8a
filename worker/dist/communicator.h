// Communicator: the collectives data parallelism needs, each with a deadline and a sequence number.
// Three implementations: MPI over host tensors (mpi_communicator.cpp, always built), NCCL over
// CUDA tensors (nccl_communicator.cpp, built only with EFFNET_HAVE_NCCL), and N ranks as threads
// of one process for tests (inprocess_communicator.h). No MPI/NCCL headers here.
//
// Note [collective order and sequence numbers]: every collective (all-reduce, broadcast, barrier,
// all-gather) takes the next sequence number of its communicator when it is issued. All ranks
// must issue the same collectives in the same order, so "#17" names the same operation on every
// rank; a rank that times out in #17 reports which peers never started #17 (or went silent).
//
// Note [deadlines]: a collective is issued with deadline = now + CommOptions::timeout_s. Wait()
// never blocks past it (plus a small grace): the communicator gives up on the operation, marks
// itself broken (later calls fail at once with the first error), and returns DeadlineExceeded or
// Unavailable naming the operation, its sequence number and the missing ranks.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/dist/dist_config.h"  // CommOptions

namespace effnet::dist {

enum class ReduceOp { kSum, kAvg };
enum class OpType { kAllReduce, kBroadcast, kBarrier, kAllGather };
const char* OpTypeName(OpType op);  // "all_reduce", ...

// steady_clock nanoseconds (common time base of WorkTiming and the reducer's event log).
int64_t NowNs();

struct WorkTiming {
  int64_t issued_ns = 0;    // the caller issued the collective
  int64_t started_ns = 0;   // the transport started it (MPI request posted / NCCL call enqueued)
  int64_t finished_ns = 0;  // completion observed (0 until then)
};

// Handle of one asynchronous collective.
class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the collective finished or its deadline passed. Idempotent.
  virtual Status Wait() = 0;
  virtual bool IsCompleted() = 0;
  virtual uint64_t seq() const = 0;
  virtual OpType op() const = 0;
  virtual WorkTiming timing() const = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend() const = 0;  // "mpi" | "nccl" | "inprocess"

  // In place on a contiguous tensor (MPI: host tensors, device tensors are staged through the
  // host; NCCL: CUDA tensors). kAvg divides by world_size.
  virtual std::shared_ptr<Work> AllReduceAsync(const at::Tensor& tensor, ReduceOp op) = 0;
  virtual std::shared_ptr<Work> BroadcastAsync(const at::Tensor& tensor, int root) = 0;
  virtual Status Barrier() = 0;
  // Every rank's `bytes` (sizes may differ), in rank order. For small host buffers.
  virtual Result<std::vector<std::string>> AllGather(const std::string& bytes) = 0;

  // Sequence number the next collective will get (= number issued so far).
  virtual uint64_t next_seq() const = 0;

  Status AllReduce(const at::Tensor& tensor, ReduceOp op) {
    return AllReduceAsync(tensor, op)->Wait();
  }
  Status Broadcast(const at::Tensor& tensor, int root) {
    return BroadcastAsync(tensor, root)->Wait();
  }
};

// MPI communicator on a duplicate of MPI_COMM_WORLD (MPI must be initialised, see InitMpi in
// create.h). All MPI calls run on the communicator's own thread, so an all-reduce issued from a
// gradient hook proceeds while backward continues on the caller's thread.
Result<std::shared_ptr<Communicator>> CreateMpiCommunicator(const CommOptions& options);

// True when the build has the NCCL backend (EFFNET_HAVE_NCCL).
bool HaveNccl();

// NCCL communicator on CUDA device `device` over the ranks of `host` (an MPI communicator from
// CreateMpiCommunicator: it carries the ncclUniqueId and names missing ranks on a timeout).
// Returns FailedPrecondition when the build has no NCCL.
Result<std::shared_ptr<Communicator>> CreateNcclCommunicator(std::shared_ptr<Communicator> host,
                                                             int device,
                                                             const CommOptions& options);

// Set when any communicator of this process gave up on a collective (see Note [deadlines]);
// at exit a broken process calls MPI_Abort instead of MPI_Finalize (which could hang).
bool AnyCommunicatorBroken();

}  // namespace effnet::dist
