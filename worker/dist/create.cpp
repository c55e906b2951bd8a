// CreateDataParallel / InitMpi and the DistDataParallel glue.
#include "worker/dist/create.h"

#include <mpi.h>

#include <cstdio>
#include <cstdlib>

#include "common/log.h"
#include "worker/dist/dist_data_parallel.h"
#include "worker/dist/sync_batchnorm.h"

namespace effnet::dist {
namespace {

// Note [MPI finalisation]: a process whose communicator gave up on a collective must not call
// MPI_Finalize (it can wait forever for the abandoned request); it calls MPI_Abort, which also
// brings down the other ranks with a non-zero status.
void FinalizeMpiAtExit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (AnyCommunicatorBroken()) {
    // stderr, not log::: spdlog's registry may already be destroyed at exit.
    std::fprintf(stderr, "effnet-dist: aborting MPI: a collective failed (see the error above)\n");
    MPI_Abort(MPI_COMM_WORLD, 3);
  }
  MPI_Finalize();
}

}  // namespace

MpiWorld InitMpi() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
    std::atexit(&FinalizeMpiAtExit);
  }
  MpiWorld w;
  MPI_Comm_rank(MPI_COMM_WORLD, &w.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &w.world_size);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, w.rank, MPI_INFO_NULL, &local);
  MPI_Comm_rank(local, &w.local_rank);
  MPI_Comm_free(&local);
  return w;
}

CommOptions CommOptionsFrom(const DistConfig& config) {
  CommOptions o;
  o.timeout_s = config.timeout_s;
  o.heartbeat_interval_s = config.heartbeat_interval_s;
  o.heartbeat_silence_s = config.heartbeat_silence_s;
  return o;
}

ReducerConfig ReducerConfigFrom(const DistConfig& config) {
  ReducerConfig r;
  r.first_bucket_mb = config.first_bucket_mb;
  r.bucket_cap_mb = config.bucket_cap_mb;
  r.compress_bf16 = config.compress_bf16;
  r.rebuild_buckets = config.rebuild_buckets;
  r.record_events = config.record_events;
  return r;
}

std::unique_ptr<train::DataParallel> CreateDataParallel(const DistConfig& config) {
  if (config.backend != "auto" && config.backend != "mpi" && config.backend != "nccl") {
    ThrowIfError(InvalidArgument("dist backend '" + config.backend + "': expected auto|nccl|mpi"));
  }
  if (config.backend == "nccl" && !HaveNccl()) {
    ThrowIfError(FailedPrecondition("dist backend 'nccl': this build has no NCCL"));
  }
  const MpiWorld world = InitMpi();
  log::SetTag("rank " + std::to_string(world.rank));
  auto host = CreateMpiCommunicator(CommOptionsFrom(config)).ValueOrThrow();
  return std::make_unique<DistDataParallel>(config, std::move(host));
}

DistDataParallel::DistDataParallel(const DistConfig& config, std::shared_ptr<Communicator> host)
    : config_(config), host_(std::move(host)) {}

DistDataParallel::~DistDataParallel() = default;

void DistDataParallel::Fail(const Status& s) const {
  log::Error(s.ToString());
  throw StatusError(s);
}

void DistDataParallel::Attach(torch::nn::Module& model) {
  std::vector<at::Tensor> params;
  std::vector<std::string> names;
  for (const auto& item : model.named_parameters(true)) {
    names.push_back(item.key());
    params.push_back(item.value());
  }
  const bool on_cuda = !params.empty() && params.front().is_cuda();
  grad_comm_ = host_;
  if (on_cuda && config_.backend != "mpi" && HaveNccl()) {
    auto nccl =
        CreateNcclCommunicator(host_, params.front().device().index(), CommOptionsFrom(config_));
    if (!nccl.ok()) Fail(nccl.status().WithContext("rank " + std::to_string(rank())));
    grad_comm_ = std::move(nccl).value();
  } else if (config_.backend == "nccl") {
    Fail(FailedPrecondition("dist backend 'nccl' needs CUDA parameters"));
  }
  if (config_.sync_batchnorm) {
    auto n = ConvertSyncBatchNorm(model, grad_comm_);
    if (!n.ok()) Fail(n.status());
    log::Info("sync batchnorm: converted " + std::to_string(*n) + " BatchNorm2d layers");
  }
  std::vector<at::Tensor> buffers;
  std::vector<std::string> buffer_names;
  for (const auto& item : model.named_buffers(true)) {
    buffer_names.push_back(item.key());
    buffers.push_back(item.value());
  }
  Status s = VerifyAcrossRanks(*host_, params, names, "parameters");
  if (s.ok()) s = VerifyAcrossRanks(*host_, buffers, buffer_names, "buffers");
  if (s.ok()) s = BroadcastFromRank0(*grad_comm_, params);
  if (s.ok()) s = BroadcastFromRank0(*grad_comm_, buffers);
  if (!s.ok()) Fail(s.WithContext("rank " + std::to_string(rank()) + ": attaching the model"));
  reducer_ = std::make_unique<Reducer>(params, names, grad_comm_, ReducerConfigFrom(config_));
  log::Info("data parallel: " + grad_comm_->backend() + ", world " + std::to_string(world_size()) +
            ", " + std::to_string(reducer_->layout().size()) + " gradient buckets");
}

void DistDataParallel::BeforeBackward() {
  if (!reducer_) Fail(FailedPrecondition("DataParallel::BeforeBackward before Attach"));
  reducer_->PrepareForBackward();
}

void DistDataParallel::AfterBackward() {
  if (!reducer_) Fail(FailedPrecondition("DataParallel::AfterBackward before Attach"));
  Status s = reducer_->FinalizeBackward();
  if (!s.ok()) Fail(s);
}

std::vector<double> DistDataParallel::AllReduceSum(const std::vector<double>& values) {
  at::Tensor t = at::tensor(values, at::TensorOptions().dtype(at::kDouble));
  Status s = host_->AllReduce(t, ReduceOp::kSum);
  if (!s.ok()) Fail(s.WithContext("reducing metrics"));
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

void DistDataParallel::Barrier() {
  Status s = host_->Barrier();
  if (!s.ok()) Fail(s);
}

}  // namespace effnet::dist
