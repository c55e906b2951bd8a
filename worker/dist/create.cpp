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

Result<std::unique_ptr<train::DataParallel>> CreateDataParallel(const DistConfig& config) {
  EFFNET_RETURN_IF_ERROR(Validate(config));
  if (config.backend == "nccl" && !HaveNccl()) {
    return FailedPrecondition("dist.backend 'nccl': this build has no NCCL");
  }
  const MpiWorld world = InitMpi();
  log::SetTag("rank " + std::to_string(world.rank));
  EFFNET_ASSIGN_OR_RETURN(std::shared_ptr<Communicator> host, CreateMpiCommunicator(config.comm));
  return std::unique_ptr<train::DataParallel>(
      std::make_unique<DistDataParallel>(config, std::move(host)));
}

DistDataParallel::DistDataParallel(const DistConfig& config, std::shared_ptr<Communicator> host)
    : config_(config), host_(std::move(host)) {}

DistDataParallel::~DistDataParallel() = default;

Status DistDataParallel::Context(const Status& s, const char* operation) const {
  return s.WithContext("rank " + std::to_string(rank()) + ": " + operation);
}

Status DistDataParallel::Attach(torch::nn::Module& model) {
  std::vector<at::Tensor> params;
  std::vector<std::string> names;
  for (const auto& item : model.named_parameters(true)) {
    names.push_back(item.key());
    params.push_back(item.value());
  }
  const bool on_cuda = !params.empty() && params.front().is_cuda();
  grad_comm_ = host_;
  if (on_cuda && config_.backend != "mpi" && HaveNccl()) {
    auto nccl = CreateNcclCommunicator(host_, params.front().device().index(), config_.comm);
    if (!nccl.ok()) return Context(nccl.status(), "Attach");
    grad_comm_ = std::move(nccl).value();
  } else if (config_.backend == "nccl") {
    return Context(FailedPrecondition("dist.backend 'nccl' needs CUDA parameters"), "Attach");
  }
  if (config_.sync_batchnorm) {
    auto n = ConvertSyncBatchNorm(model, grad_comm_);
    if (!n.ok()) return Context(n.status(), "Attach");
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
  if (!s.ok()) return Context(s, "Attach");
  reducer_ = std::make_unique<Reducer>(params, names, grad_comm_, config_.reducer);
  log::Info("data parallel: " + grad_comm_->backend() + ", world " + std::to_string(world_size()) +
            ", " + std::to_string(reducer_->layout().size()) + " gradient buckets");
  return Status::Ok();
}

Status DistDataParallel::BeforeBackward() {
  if (!reducer_) return Context(FailedPrecondition("called before Attach"), "BeforeBackward");
  reducer_->PrepareForBackward();
  return Status::Ok();
}

Status DistDataParallel::AfterBackward() {
  if (!reducer_) return Context(FailedPrecondition("called before Attach"), "AfterBackward");
  return Context(reducer_->FinalizeBackward(), "AfterBackward");
}

Result<std::vector<double>> DistDataParallel::AllReduceSum(const std::vector<double>& values) {
  at::Tensor t = at::tensor(values, at::TensorOptions().dtype(at::kDouble));
  EFFNET_RETURN_IF_ERROR(Context(host_->AllReduce(t, ReduceOp::kSum), "AllReduceSum"));
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

Status DistDataParallel::Barrier() { return Context(host_->Barrier(), "Barrier"); }

}  // namespace effnet::dist
