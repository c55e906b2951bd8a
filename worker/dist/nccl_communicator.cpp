// NCCL communicator (compiled only with EFFNET_HAVE_NCCL): CUDA tensors, own stream, events,
// ncclCommGetAsyncError polling against each collective's deadline, ncclCommAbort on expiry.
//
// Note [NCCL deadlines]: the communicator is created non-blocking (config.blocking = 0), so no
// NCCL call can block the host: init and enqueue return ncclInProgress and are polled with
// ncclCommGetAsyncError. A collective's completion is a CUDA event on the NCCL stream, polled in
// Wait(); past the deadline the communicator is aborted (ncclCommAbort releases the GPU kernels
// stuck waiting for a dead peer) and the error names the missing ranks from the MPI heartbeat
// (device progress counters, see Note [heartbeat]).
#include <ATen/ATen.h>
#include <c10/cuda/CUDACachingAllocator.h>  // for recordStream
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

#include "common/log.h"
#include "common/text.h"
#include "worker/dist/communicator.h"
#include "worker/dist/mpi_communicator.h"

namespace effnet::dist {
namespace {

bool NcclType(at::ScalarType t, ncclDataType_t* out) {
  switch (t) {
    case at::kFloat:
      *out = ncclFloat32;
      return true;
    case at::kHalf:
      *out = ncclFloat16;
      return true;
    case at::kBFloat16:
      *out = ncclBfloat16;
      return true;
    case at::kDouble:
      *out = ncclFloat64;
      return true;
    case at::kLong:
      *out = ncclInt64;
      return true;
    case at::kInt:
      *out = ncclInt32;
      return true;
    case at::kByte:
      *out = ncclUint8;
      return true;
    case at::kChar:
      *out = ncclInt8;
      return true;
    default:
      return false;
  }
}

class NcclCommunicator;

class NcclWork final : public Work {
 public:
  NcclWork(NcclCommunicator* comm, OpType op, uint64_t seq, cudaEvent_t done, int64_t deadline_ns,
           WorkTiming timing, Status status)
      : comm_(comm),
        op_(op),
        seq_(seq),
        done_(done),
        deadline_ns_(deadline_ns),
        timing_(timing),
        status_(std::move(status)),
        finished_(!status_.ok()) {}
  ~NcclWork() override {
    if (done_ != nullptr) cudaEventDestroy(done_);
  }
  Status Wait() override;
  bool IsCompleted() override {
    std::lock_guard<std::mutex> lock(mu_);
    return finished_ || cudaEventQuery(done_) == cudaSuccess;
  }
  uint64_t seq() const override { return seq_; }
  OpType op() const override { return op_; }
  WorkTiming timing() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return timing_;
  }

 private:
  NcclCommunicator* comm_;
  OpType op_;
  uint64_t seq_;
  cudaEvent_t done_;
  int64_t deadline_ns_;
  mutable std::mutex mu_;
  WorkTiming timing_;
  Status status_;
  bool finished_;
};

class NcclCommunicator final : public Communicator,
                               public std::enable_shared_from_this<NcclCommunicator> {
 public:
  NcclCommunicator(std::shared_ptr<MpiCommunicator> host, int device, const CommOptions& options)
      : host_(std::move(host)),
        device_(device),
        options_(options),
        stream_(c10::cuda::getStreamFromPool(/*isHighPriority=*/true,
                                             static_cast<c10::DeviceIndex>(device))) {}

  ~NcclCommunicator() override {
    if (comm_ == nullptr) return;
    if (!BrokenStatus().ok()) return;  // already aborted
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
    cudaStreamSynchronize(stream_.stream());
    ncclCommDestroy(comm_);
  }

  Status Init() {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
    ncclUniqueId id;
    std::memset(&id, 0, sizeof id);
    if (host_->rank() == 0) {
      ncclResult_t r = ncclGetUniqueId(&id);
      if (r != ncclSuccess)
        return Unavailable(std::string("ncclGetUniqueId: ") + ncclGetErrorString(r));
    }
    at::Tensor bytes = at::empty({static_cast<int64_t>(sizeof id)}, at::kByte);
    std::memcpy(bytes.data_ptr(), &id, sizeof id);
    EFFNET_RETURN_IF_ERROR(host_->Broadcast(bytes, 0).WithContext("broadcasting the ncclUniqueId"));
    std::memcpy(&id, bytes.data_ptr(), sizeof id);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // Note [NCCL deadlines]
    const int64_t deadline = NowNs() + static_cast<int64_t>(options_.timeout_s * 1e9);
    ncclResult_t r =
        ncclCommInitRankConfig(&comm_, host_->world_size(), id, host_->rank(), &config);
    if (r != ncclSuccess && r != ncclInProgress) {
      return Unavailable(std::string("ncclCommInitRankConfig: ") + ncclGetErrorString(r));
    }
    EFFNET_RETURN_IF_ERROR(PollAsync("ncclCommInitRank", 0, deadline));
    EFFNET_RETURN_IF_ERROR(host_->Barrier().WithContext("barrier after NCCL init"));
    log::Info("NCCL " + std::to_string(NCCL_MAJOR) + "." + std::to_string(NCCL_MINOR) +
              " communicator ready on cuda:" + std::to_string(device_));
    return Status::Ok();
  }

  int rank() const override { return host_->rank(); }
  int world_size() const override { return host_->world_size(); }
  std::string backend() const override { return "nccl"; }
  uint64_t next_seq() const override { return next_seq_.load(); }

  std::shared_ptr<Work> AllReduceAsync(const at::Tensor& tensor, ReduceOp op) override {
    return Enqueue(OpType::kAllReduce, tensor, [&](ncclDataType_t dt) {
      return ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), dt,
                           op == ReduceOp::kAvg ? ncclAvg : ncclSum, comm_, stream_.stream());
    });
  }
  std::shared_ptr<Work> BroadcastAsync(const at::Tensor& tensor, int root) override {
    return Enqueue(OpType::kBroadcast, tensor, [&](ncclDataType_t dt) {
      return ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), dt, root, comm_,
                           stream_.stream());
    });
  }
  // Host-side collectives go over MPI.
  Status Barrier() override { return host_->Barrier(); }
  Result<std::vector<std::string>> AllGather(const std::string& bytes) override {
    return host_->AllGather(bytes);
  }

  // Polls the communicator's async state until it leaves ncclInProgress (or fails/expires).
  Status PollAsync(const std::string& what, uint64_t seq, int64_t deadline_ns) {
    for (;;) {
      ncclResult_t state = ncclSuccess;
      ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
      if (r != ncclSuccess) state = r;
      if (state == ncclSuccess) return Status::Ok();
      if (state != ncclInProgress) {
        return Abort(Unavailable("rank " + std::to_string(rank()) + ": " + what + " #" +
                                 std::to_string(seq) + " failed: " + ncclGetErrorString(state) +
                                 "; " + host_->DescribeMissing(true, seq)));
      }
      if (NowNs() > deadline_ns) return Abort(Expired(what, seq));
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  Status Expired(const std::string& what, uint64_t seq) {
    return DeadlineExceeded("rank " + std::to_string(rank()) + ": nccl " + what + " #" +
                            std::to_string(seq) + " did not complete within " +
                            Fixed(options_.timeout_s, 1) + " s; " +
                            host_->DescribeMissing(true, seq));
  }

  // Marks the communicator broken and aborts it once; returns `s`.
  Status Abort(Status s) {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_.ok()) {
      broken_ = s;
      MarkProcessBroken();
      log::Error(s.message() + " (aborting the NCCL communicator)");
      ncclCommAbort(comm_);
    }
    return s;
  }
  Status BrokenStatus() {
    std::lock_guard<std::mutex> lock(mu_);
    return broken_;
  }

  void Completed(uint64_t seq) {
    uint64_t prev = completed_.load();
    while (prev < seq + 1 && !completed_.compare_exchange_weak(prev, seq + 1)) {
    }
    host_->PublishDeviceProgress(started_.load(), completed_.load());
  }

 private:
  template <typename Fn>
  std::shared_ptr<Work> Enqueue(OpType type, const at::Tensor& tensor, Fn&& call) {
    const uint64_t seq = next_seq_.fetch_add(1);
    WorkTiming timing;
    timing.issued_ns = NowNs();
    const int64_t deadline = timing.issued_ns + static_cast<int64_t>(options_.timeout_s * 1e9);
    auto fail = [&](Status s) {
      return std::make_shared<NcclWork>(this, type, seq, nullptr, deadline, timing, std::move(s));
    };
    Status prior = BrokenStatus();
    if (!prior.ok()) {
      return fail(Status(prior.code(), std::string(OpTypeName(type)) + " #" + std::to_string(seq) +
                                           " not run: " + prior.message()));
    }
    ncclDataType_t dt;
    if (!tensor.is_cuda() || !tensor.is_contiguous() || !NcclType(tensor.scalar_type(), &dt)) {
      return fail(InvalidArgument(std::string(OpTypeName(type)) + " #" + std::to_string(seq) +
                                  ": NCCL needs a contiguous CUDA tensor of a supported dtype"));
    }
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
    // The NCCL stream waits for the work queued so far on the caller's stream.
    cudaEvent_t ready = nullptr, done = nullptr;
    cudaEventCreateWithFlags(&ready, cudaEventDisableTiming);
    cudaEventCreateWithFlags(&done, cudaEventDisableTiming);
    cudaStream_t current = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_));
    cudaEventRecord(ready, current);
    cudaStreamWaitEvent(stream_.stream(), ready, 0);
    cudaEventDestroy(ready);
    started_ = seq + 1;
    host_->PublishDeviceProgress(started_.load(), completed_.load());
    timing.started_ns = NowNs();
    ncclResult_t r = call(dt);
    if (r == ncclInProgress) {
      Status s = PollAsync(OpTypeName(type), seq, deadline);
      if (!s.ok()) {
        cudaEventDestroy(done);
        return fail(s);
      }
    } else if (r != ncclSuccess) {
      cudaEventDestroy(done);
      return fail(Abort(Unavailable("rank " + std::to_string(rank()) + ": " + OpTypeName(type) +
                                    " #" + std::to_string(seq) + ": " + ncclGetErrorString(r))));
    }
    // The caching allocator must not reuse the tensor's memory before the NCCL stream is done.
    c10::cuda::CUDACachingAllocator::recordStream(tensor.storage().data_ptr(), stream_);
    cudaEventRecord(done, stream_.stream());
    return std::make_shared<NcclWork>(this, type, seq, done, deadline, timing, Status::Ok());
  }

  std::shared_ptr<MpiCommunicator> host_;
  int device_;
  CommOptions options_;
  c10::cuda::CUDAStream stream_;
  ncclComm_t comm_ = nullptr;
  std::atomic<uint64_t> next_seq_{0}, started_{0}, completed_{0};
  std::mutex mu_;
  Status broken_;
};

Status NcclWork::Wait() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return status_;
  for (;;) {
    cudaError_t e = cudaEventQuery(done_);
    if (e == cudaSuccess) {
      // Later work on the caller's stream sees the reduced values.
      cudaStreamWaitEvent(c10::cuda::getCurrentCUDAStream().stream(), done_, 0);
      comm_->Completed(seq_);
      timing_.finished_ns = NowNs();
      finished_ = true;
      return status_;
    }
    if (e != cudaErrorNotReady) {
      status_ = comm_->Abort(Internal(std::string("cudaEventQuery on ") + OpTypeName(op_) + " #" +
                                      std::to_string(seq_) + ": " + cudaGetErrorString(e)));
      finished_ = true;
      return status_;
    }
    Status async = comm_->PollAsync(OpTypeName(op_), seq_, deadline_ns_);
    if (!async.ok()) {
      status_ = async;
      finished_ = true;
      return status_;
    }
    if (NowNs() > deadline_ns_) {
      status_ = comm_->Abort(comm_->Expired(OpTypeName(op_), seq_));
      finished_ = true;
      return status_;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

}  // namespace

bool HaveNccl() { return true; }

Result<std::shared_ptr<Communicator>> CreateNcclCommunicator(std::shared_ptr<Communicator> host,
                                                             int device,
                                                             const CommOptions& options) {
  auto mpi = std::dynamic_pointer_cast<MpiCommunicator>(host);
  if (!mpi) return InvalidArgument("CreateNcclCommunicator: host must be an MPI communicator");
  auto comm = std::make_shared<NcclCommunicator>(std::move(mpi), device, options);
  EFFNET_RETURN_IF_ERROR(comm->Init().WithContext("creating the NCCL communicator"));
  return std::shared_ptr<Communicator>(comm);
}

}  // namespace effnet::dist
