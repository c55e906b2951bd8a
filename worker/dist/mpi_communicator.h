// MPI communicator (internal to worker/dist): the class behind CreateMpiCommunicator, exposed so
// the NCCL communicator can share its heartbeat. No MPI headers here (pimpl).
//
// Note [heartbeat]: besides the data communicator, each MpiCommunicator owns a second duplicate of
// MPI_COMM_WORLD on which its thread sends every peer a tiny progress message (last started and
// completed sequence number, host and device) every heartbeat_interval_s, and drains the peers'
// messages. Collectives never block the thread (non-blocking MPI + MPI_Test polling), so the
// heartbeat keeps flowing while a collective waits. When a collective passes its deadline the
// table tells which peers are silent (dead or frozen process) and which are alive but never
// started that sequence number (stalled or diverged), and the error names them.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "worker/dist/communicator.h"

namespace effnet::dist {

class MpiCommunicator final : public Communicator {
 public:
  // Use CreateMpiCommunicator.
  explicit MpiCommunicator(const CommOptions& options);
  ~MpiCommunicator() override;
  Status Init();

  int rank() const override;
  int world_size() const override;
  std::string backend() const override { return "mpi"; }
  std::shared_ptr<Work> AllReduceAsync(const at::Tensor& tensor, ReduceOp op) override;
  std::shared_ptr<Work> BroadcastAsync(const at::Tensor& tensor, int root) override;
  Status Barrier() override;
  Result<std::vector<std::string>> AllGather(const std::string& bytes) override;
  uint64_t next_seq() const override;

  // Progress of a device communicator sharing this heartbeat (see Note [heartbeat]).
  void PublishDeviceProgress(uint64_t started, uint64_t completed);
  // "rank 1 silent for 2.1 s (last started #4, completed #4)"; `device` selects which progress
  // counters are compared against `seq`.
  std::string DescribeMissing(bool device, uint64_t seq) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Marks the process as having a broken communicator (AnyCommunicatorBroken()).
void MarkProcessBroken();

}  // namespace effnet::dist
