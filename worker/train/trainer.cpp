#include "worker/train/trainer.h"

#include <ATen/autocast_mode.h>
#include <ATen/cpu/Utils.h>
#include <c10/core/InferenceMode.h>
#include <torch/cuda.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/types.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/job/shards.h"
#include "common/log.h"
#include "common/progress.h"
#include "common/text.h"
#include "worker/data/augment.h"
#include "worker/data/loader.h"
#include "worker/data/rng.h"
#include "worker/formats/checkpoint.h"
#include "worker/train/ema.h"
#include "worker/train/graph_step.h"
#include "worker/train/optim.h"
#include "worker/train/schedule.h"

namespace effnet::train {
namespace fs = std::filesystem;
using data::HostRng;

namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// bf16 autocast of the forward pass on `device`'s type while alive; a no-op when off.
class AutocastGuard {
 public:
  AutocastGuard(bool on, const torch::Device& device) : on_(on), type_(device.type()) {
    if (on_) {
      at::autocast::set_autocast_dtype(type_, at::kBFloat16);
      at::autocast::set_autocast_enabled(type_, true);
    }
  }
  ~AutocastGuard() {
    if (on_) {
      at::autocast::set_autocast_enabled(type_, false);
      at::autocast::clear_cache();
    }
  }

 private:
  bool on_;
  c10::DeviceType type_;
};

// Sum over ranks of one entry per rank: every rank learns every rank's number.
Result<std::vector<int64_t>> GatherCounts(DataParallel& dp, int64_t mine) {
  std::vector<double> v(static_cast<size_t>(dp.world_size()), 0.0);
  v[static_cast<size_t>(dp.rank())] = static_cast<double>(mine);
  EFFNET_ASSIGN_OR_RETURN(auto sum, dp.AllReduceSum(v));
  std::vector<int64_t> out(sum.size());
  for (size_t i = 0; i < sum.size(); ++i) out[i] = static_cast<int64_t>(std::llround(sum[i]));
  return out;
}

}  // namespace

Result<std::string> ResumeCheckpointPath(const CheckpointSection& c, JobControl& jc) {
  if (c.resume == "auto") return jc.ResumeCheckpoint();
  if (c.resume == "never") return std::string();
  return c.resume;
}

Trainer::Trainer(TrainConfig config, ModelHandle model, storage::DatasetReader& reader,
                 DataParallel& dp, JobControl& jc, std::string run_dir)
    : config_(std::move(config)),
      model_(std::move(model)),
      reader_(reader),
      dp_(dp),
      jc_(jc),
      run_dir_(std::move(run_dir)) {
  ckpt_dir_ = run_dir_.empty() ? "" : run_dir_ + "/checkpoints";
}

Trainer::~Trainer() = default;

int Trainer::eval_image_size() const {
  return config_.data.eval_image_size > 0 ? config_.data.eval_image_size
                                          : config_.job.progressive.max_image_size;
}

bool CpuHasBf16() {
  const auto caps = at::cpu::get_cpu_capabilities();
  for (const char* key : {"avx512_bf16", "amx_bf16"}) {
    auto it = caps.find(key);
    if (it != caps.end() && it->second.isBool() && it->second.toBool()) return true;
  }
  return false;
}

Status Trainer::Setup() {
  const auto& info = reader_.info();
  // A data file whose class count disagrees with the model (or the config) is refused.
  if (config_.model.num_classes > 0 && config_.model.num_classes != info.num_classes()) {
    return InvalidArgument("model.num_classes is " + std::to_string(config_.model.num_classes) +
                           " but " + reader_.path() + " has " + std::to_string(info.num_classes()) +
                           " classes");
  }
  if (!label_map_.empty()) {
    if (static_cast<int>(label_map_.size()) != info.num_classes()) {
      return InvalidArgument("label map has " + std::to_string(label_map_.size()) +
                             " entries but " + reader_.path() + " has " +
                             std::to_string(info.num_classes()) + " classes");
    }
    for (int64_t m : label_map_) {
      if (m < 0 || m >= model_.num_classes) {
        return InvalidArgument("label map entry " + std::to_string(m) + " outside the model's " +
                               std::to_string(model_.num_classes) + " classes");
      }
    }
  } else if (model_.num_classes != info.num_classes()) {
    return InvalidArgument("the model has " + std::to_string(model_.num_classes) + " classes but " +
                           reader_.path() + " has " + std::to_string(info.num_classes()) +
                           " classes");
  }
  const auto& dev = config_.runtime.device;
  if (dev == "auto") {
    device_ = torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::kCPU;
  } else {
    try {
      device_ = torch::Device(dev);
    } catch (const std::exception& e) {
      return InvalidArgument("runtime.device: expected auto|cpu|cuda|cuda:N, got '" + dev + "'");
    }
    if (device_.is_cuda() && !torch::cuda::is_available()) {
      return FailedPrecondition("runtime.device is " + dev + " but CUDA is not available");
    }
  }
  model_.module->to(device_);
  {
    const std::string& mode = config_.runtime.bf16;
    const bool hw = device_.is_cuda() || CpuHasBf16();
    if (mode == "on" && !hw) {
      return FailedPrecondition(
          "runtime.bf16 is on but this CPU has neither AVX512-BF16 nor AMX (bf16 would be "
          "emulated, "
          "slower than fp32); use runtime.bf16=auto or off");
    }
    bf16_ = mode == "on" || (mode == "auto" && hw);
    const std::string& cl = config_.runtime.channels_last;
    channels_last_ = cl == "on" || (cl == "auto" && bf16_);
    log::Info(std::string("bf16 autocast ") + (bf16_ ? "on" : "off") + ", channels_last " +
              (channels_last_ ? "on" : "off") + " (runtime.bf16 " + mode +
              (device_.is_cpu() ? std::string(", CPU bf16 instructions: ") + (hw ? "yes" : "no")
                                : std::string()) +
              ")");
  }
  {
    // Note [CUDA graph step] (graph_step.h): where the step can be captured, and why not.
    std::string why_not;
    if (!device_.is_cuda()) {
      why_not = "the device is " + device_.str();
    } else if (!CudaGraphsBuilt()) {
      why_not = "this build has no CUDA graph support (no CUDA toolkit at configure time)";
    } else if (dp_.HooksBackward()) {
      why_not = "backward runs the reducer's gradient hooks (a data-parallel worker)";
    }
    const std::string& mode = config_.runtime.cuda_graphs;
    if (mode == "on" && !why_not.empty()) {
      return FailedPrecondition("runtime.cuda_graphs is on but " + why_not +
                                "; use runtime.cuda_graphs=auto or off");
    }
    cuda_graphs_ = why_not.empty() && mode != "off";
    if (device_.is_cuda()) {
      const bool bench = config_.runtime.cudnn_benchmark != "off";
      at::globalContext().setBenchmarkCuDNN(bench);
      log::Info(std::string("CUDA graphs ") + (cuda_graphs_ ? "on" : "off") +
                (cuda_graphs_ || mode == "off" ? "" : " (" + why_not + ")") +
                ", cuDNN autotuning " + (bench ? "on" : "off"));
    }
  }
  if (channels_last_) {
    torch::NoGradGuard g;
    for (auto& p : model_.module->parameters()) {
      if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
    }
  }
  train_indices_ = info.IndicesOf(storage::Split::kTrain);
  EFFNET_ASSIGN_OR_RETURN(rank_batch_, PerRankBatch(config_.data, dp_.world_size()));
  const int64_t max_shard =
      job::ShardSize(static_cast<int64_t>(train_indices_.size()), dp_.world_size(), 0);
  steps_per_epoch_ = std::max<int64_t>(1, (max_shard + rank_batch_ - 1) / rank_batch_);
  schedule_ = std::make_unique<LrSchedule>(MakeLrSchedule(config_, steps_per_epoch_));

  // Note [unfreeze]: a frozen part is frozen before the optimiser and the reducer see the model.
  // With model.unfreeze_epoch the optimiser holds every parameter from the start (frozen ones have
  // no gradient and are skipped), so unfreezing needs no new optimiser and the optimiser state
  // keeps one layout for resume. The reducer buckets only trainable parameters at Attach
  // (worker/dist/reducer.h), so gradients of parameters unfrozen later would not be averaged over
  // ranks: unfreezing is refused with more than one rank.
  const auto& tr = config_.transfer;
  const bool freeze = tr.freeze != "none";
  if (freeze) {
    if (!model_.set_frozen) return InvalidArgument("model.freeze: this model cannot be frozen");
    if (tr.unfreeze_epoch >= 0 && dp_.world_size() > 1) {
      return InvalidArgument(
          "model.unfreeze_epoch: unfreezing during a run is supported with one rank only (world "
          "size is " +
          std::to_string(dp_.world_size()) +
          "; frozen parameters are not in the gradient buckets); train the frozen phase and the "
          "fine-tuning phase as two runs, the second with model.pretrained = the first's "
          "checkpoints/best/model.safetensors");
    }
    EFFNET_RETURN_IF_ERROR(model_.set_frozen(true));
    frozen_ = true;
  }
  EFFNET_ASSIGN_OR_RETURN(optimizer_,
                          MakeOptimizer(*model_.module, config_.optimizer,
                                        /*include_frozen=*/freeze && tr.unfreeze_epoch >= 0));
  // Note [attach before EMA]: Attach broadcasts rank 0's parameters; the EMA must start from
  // those, not from this rank's own initialisation.
  EFFNET_RETURN_IF_ERROR(dp_.Attach(*model_.module));
  if (config_.ema.enabled) {
    ema_ = std::make_unique<ModelEma>(*model_.module, config_.ema.decay, config_.ema.tf_warmup);
  }
  if (!ckpt_dir_.empty() && dp_.rank() == 0) {
    std::error_code ec;
    fs::create_directories(ckpt_dir_, ec);
    if (ec) return Internal("creating " + ckpt_dir_ + ": " + ec.message());
  }
  EFFNET_ASSIGN_OR_RETURN(const std::string resume, ResumeCheckpointPath(config_.checkpoint, jc_));
  if (!resume.empty()) EFFNET_RETURN_IF_ERROR(Resume(resume));
  setup_done_ = true;
  return Status::Ok();
}

Status Trainer::ResumeFrom(const std::string& path) {
  // Note [same run]: a checkpoint of another variant or class count is refused saying exactly
  // that, before any weights are read; other changes that alter what the run learns are named
  // (RunDifferences, Note [what a run is]) but allowed, as when a schedule is extended by hand.
  if (auto meta = formats::ReadCheckpointMeta(path); meta.ok()) {
    const auto& m = meta->model;
    if (m.variant != config_.model.variant || m.num_classes != model_.num_classes) {
      return FailedPrecondition(
          "cannot resume from " + path + ": the run was trained as variant '" + m.variant +
          "' with " + std::to_string(m.num_classes) + " classes, this config asks for variant '" +
          config_.model.variant + "' with " + std::to_string(model_.num_classes) +
          " classes (data " + reader_.path() + "); train it as a new run with another --out (to " +
          "start from these weights: --set model.pretrained=" + path + "/" +
          formats::kCheckpointModelFile + ")");
    }
    if (auto before = ParseTrainConfig(meta->config_yaml); before.ok()) {
      const auto diffs = RunDifferences(*before, config_);
      if (!diffs.empty()) {
        std::string text;
        for (const auto& d : diffs) text += (text.empty() ? "" : "; ") + d;
        log::Warn("resuming " + path + " with a config that differs from the run's: " + text);
      }
    }
  }
  EFFNET_RETURN_IF_ERROR(LoadCheckpoint(path, /*weights_only=*/false));
  log::Info("resumed from " + path + ": next epoch " + std::to_string(start_epoch_ + 1) +
            ", step " + std::to_string(global_step_));
  return Status::Ok();
}

// Note [resume fallback]: the committed checkpoint can still be unreadable at resume (a disk
// error, a truncated copy, a flipped bit: DataLoss or NotFound from the checksums of
// worker/formats/checkpoint.h). With checkpoint.resume=auto the run then resumes from the newest
// checkpoint of an earlier epoch in checkpoints/ that verifies (epoch-NNNN/ or best/), and says
// which and why. Any other error (another variant, another format) is not a fallback case. The
// JobControl learns of the fallback (ResumedFromOlder): a coordinator rolls the job back to the
// fallback's epoch (Note [resume fallback under a coordinator] in coordinator/job.h).
Status Trainer::Resume(const std::string& committed) {
  const Status st = ResumeFrom(committed);
  const bool unreadable = st.code() == StatusCode::kDataLoss || st.code() == StatusCode::kNotFound;
  if (st.ok() || !unreadable || config_.checkpoint.resume != "auto" || ckpt_dir_.empty()) {
    return st;
  }
  int failed_epoch = -1;  // from the directory name when meta.json itself is unreadable
  const std::string name = fs::path(committed).filename().string();
  if (name.rfind("epoch-", 0) == 0 && name.size() > 6 &&
      name.find_first_not_of("0123456789", 6) == std::string::npos && name.size() < 16) {
    failed_epoch = std::stoi(name.substr(6));
  }
  std::string fallback;
  int fallback_epoch = -1;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(ckpt_dir_, ec)) {
    const std::string n = e.path().filename().string();
    if ((n.rfind("epoch-", 0) != 0 && n != formats::kBestCheckpointName) ||
        e.path() == fs::path(committed)) {
      continue;
    }
    auto meta = formats::VerifyCheckpoint(e.path().string());
    if (!meta.ok()) {
      log::Warn("not resuming from " + e.path().string() + ": " + meta.status().ToString());
      continue;
    }
    if (failed_epoch >= 0 && meta->epoch >= failed_epoch) continue;
    // Newest epoch first; between best/ and epoch-NNNN/ of the same epoch, the epoch directory.
    if (meta->epoch > fallback_epoch ||
        (meta->epoch == fallback_epoch && n != formats::kBestCheckpointName)) {
      fallback_epoch = meta->epoch;
      fallback = e.path().string();
    }
  }
  if (fallback.empty()) {
    return st.WithContext("resuming (no other valid checkpoint of an earlier epoch in " +
                          ckpt_dir_ + ")");
  }
  log::Warn("checkpoint " + committed + " is unreadable (" + st.ToString() +
            "); resuming from the newest valid one, " + fallback);
  EFFNET_RETURN_IF_ERROR(ResumeFrom(fallback));
  return jc_.ResumedFromOlder(committed, start_epoch_ - 1, fallback, st.ToString());
}

void Trainer::AppendMetrics(const std::string& line) {
  if (run_dir_.empty() || dp_.rank() != 0) return;
  std::ofstream f(run_dir_ + "/metrics.jsonl", std::ios::app);
  f << line << "\n";
}

Result<StepOutputs> Trainer::GraphOrWarmupStep(const StepBody& body, const StepInputs& in,
                                               const job::Stage& stage) {
  // The shape key (Note [CUDA graph step]): what the captured kernels bake in.
  const std::string key = std::string(c10::str(in.images.sizes())) + "/" +
                          std::string(c10::str(in.targets.sizes())) + "/" +
                          std::to_string(stage.dropout) + "/" + (frozen_ ? "frozen" : "all");
  if (key != graph_key_) {
    graph_.reset();
    graph_key_ = key;
    graph_key_steps_ = 0;
  }
  if (!graph_ && ++graph_key_steps_ <= kGraphWarmupSteps) return body(in);
  if (!graph_) {
    std::vector<torch::Tensor> trainable;
    for (auto& p : model_.module->parameters()) {
      if (p.requires_grad()) trainable.push_back(p);
    }
    EFFNET_ASSIGN_OR_RETURN(graph_, GraphedStep::Capture(body, in, std::move(trainable)));
    log::Info("captured the training step as a CUDA graph for " + key);
  }
  return graph_->Replay(in);
}

Result<FitResult> Trainer::Fit() {
  if (!setup_done_) return FailedPrecondition("Trainer::Fit before Setup");
  if (train_indices_.empty()) return FailedPrecondition(reader_.path() + ": no train samples");
  FitResult result;
  fit_start_ = Now();
  const int world = dp_.world_size(), rank = dp_.rank();
  const int64_t batch = rank_batch_;
  const int num_classes = model_.num_classes;
  const bool autocast = bf16_;
  result.best_checkpoint = best_checkpoint_;
  result.last_checkpoint = last_good_checkpoint_;
  result.best_epoch = best_epoch_;
  result.last_epoch = start_epoch_ - 1;
  for (int epoch = start_epoch_;; ++epoch) {
    EFFNET_ASSIGN_OR_RETURN(job::EpochPlan plan, jc_.PlanEpoch(epoch));
    if (plan.stop) {
      if (result.stop_reason.empty())
        result.stop_reason = "job over before epoch " + std::to_string(epoch + 1);
      break;
    }
    const double epoch_start = Now();
    // Note [epoch profile]: wall time per phase of the epoch, in the epoch record's "profile_s"
    // (bench/study reads it). On a CPU the phases are exact (ops run synchronously); on CUDA they
    // are host times (kernels run asynchronously; a replayed graph is all "backward").
    std::map<std::string, double> profile;
    double lap_start = epoch_start;
    auto lap = [&](const char* phase) {
      const double now = Now();
      profile[phase] += now - lap_start;
      lap_start = now;
    };
    const job::Stage& stage = plan.stage;
    if (model_.set_dropout) model_.set_dropout(stage.dropout);
    if (frozen_ && config_.transfer.unfreeze_epoch >= 0 &&
        epoch >= config_.transfer.unfreeze_epoch) {
      EFFNET_RETURN_IF_ERROR(model_.set_frozen(false));
      frozen_ = false;
      log::Info("epoch " + std::to_string(epoch + 1) + ": model unfrozen (model.unfreeze_epoch " +
                std::to_string(config_.transfer.unfreeze_epoch) + ", 0-based)");
    }
    model_.module->train();
    // Note [per-epoch seeds]: every random stream of an epoch is seeded from (seed, epoch, rank),
    // so an epoch run after a resume draws exactly what the uninterrupted run drew.
    const uint64_t epoch_seed = HostRng::Mix(
        HostRng::Mix(config_.job.seed, static_cast<uint64_t>(epoch)), static_cast<uint64_t>(rank));
    torch::manual_seed(epoch_seed);
    HostRng aug_rng(HostRng::Mix(epoch_seed, 1));

    // Note [shard plan] (common/job/shards.h): shards differ by at most one sample, so every rank
    // runs ceil(max_shard / batch) steps. A rank whose shard has run out feeds zero-weight copies
    // of real samples so that its collectives match the others'.
    const auto& shard = plan.sample_indices;
    EFFNET_ASSIGN_OR_RETURN(const auto shard_sizes,
                            GatherCounts(dp_, static_cast<int64_t>(shard.size())));
    const int64_t max_shard = *std::max_element(shard_sizes.begin(), shard_sizes.end());
    const int64_t steps = (max_shard + batch - 1) / batch;
    // Note [two samples per batch]: BatchNorm in training needs more than one value per channel,
    // which one sample at a 1x1 feature map (the head at small image sizes) does not give. A batch
    // with fewer than 2 real samples (a shard that ran out, or a remainder of 1) is topped up to 2
    // with zero-weight samples of this rank's shard, other than the real one where possible.
    // (AppTest.WorkerUnderMpirunWithTwoRanks: 21 samples per rank in batches of 4.)
    const std::vector<int64_t>& pad_pool = shard.empty() ? train_indices_ : shard;
    auto top_up = [&](std::vector<int64_t> b) {
      for (size_t k = 0; b.size() < 2 && k < 2 * pad_pool.size() + 2; ++k) {
        const int64_t c = pad_pool[k % pad_pool.size()];
        if (k < pad_pool.size() && std::find(b.begin(), b.end(), c) != b.end()) continue;
        b.push_back(c);
      }
      return b;
    };
    std::vector<std::vector<int64_t>> batches;
    std::vector<int64_t> real_counts, global_counts;
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t begin = s * batch;
      const int64_t n = std::clamp<int64_t>(static_cast<int64_t>(shard.size()) - begin, 0, batch);
      int64_t global = 0;
      for (auto size : shard_sizes) global += std::clamp<int64_t>(size - begin, 0, batch);
      real_counts.push_back(n);
      global_counts.push_back(global);
      batches.push_back(top_up(std::vector<int64_t>(
          shard.begin() + std::min<int64_t>(begin, static_cast<int64_t>(shard.size())),
          shard.begin() + std::min<int64_t>(begin + n, static_cast<int64_t>(shard.size())))));
    }
    data::Loader loader(reader_, batches, device_, config_.data.prefetch_depth);
    ProgressOptions po;
    po.label = "epoch " + std::to_string(epoch + 1) + "/" + std::to_string(config_.job.epochs);
    po.unit = "step";
    po.enabled = config_.output.progress && rank == 0;
    Progress progress(steps, po);

    double loss_sum = 0, correct = 0, seen = 0;
    double collective_wait = 0;  // seconds blocked in the step's collectives (straggler view)
    double window_start = Now();
    int64_t window_images = 0;
    double window_loss = 0, window_correct = 0;  // since the last step record
    double lr = 0;
    // Note [metrics without host sync]: a step's loss and correct count are summed on the device
    // and read every `sync_every` steps: every step on a CPU (a read costs nothing there, and a
    // non-finite loss stops the run before its optimiser step), at the logging interval on CUDA,
    // where a read would stall the launch queue (Note [CUDA graph step], 3). Every rank syncs at
    // the same steps, so the non-finite check's collective matches.
    const int64_t sync_every = device_.is_cuda() ? config_.output.log_every_steps : 1;
    const auto acc_opts = torch::TensorOptions().dtype(torch::kDouble).device(device_);
    torch::Tensor acc_loss = torch::zeros({}, acc_opts), acc_correct = torch::zeros({}, acc_opts);
    int64_t acc_first = 0, acc_real = 0;  // first step of the unread sums, their real samples
    const StepBody body = [&](const StepInputs& in) {
      torch::Tensor logits;
      {
        AutocastGuard ac(autocast, device_);
        logits = model_.forward(in.images);
      }
      lap("forward");
      logits = logits.to(torch::kFloat);
      auto per_sample = -(in.targets * torch::log_softmax(logits, 1)).sum(1);
      auto weighted_sum = (per_sample * in.weights).sum();
      // Note [loss scaling]: gradients are averaged over ranks, so the local loss is scaled by
      // world_size / global_count (in.scale): the average then equals the mean over the global
      // batch, and 2 ranks x b matches 1 rank x 2b exactly.
      (weighted_sum * in.scale).backward();
      return StepOutputs{logits, weighted_sum};
    };
    lap("setup");
    for (int64_t s = 0; s < steps; ++s) {
      data::DeviceBatch b;
      EFFNET_ASSIGN_OR_RETURN(bool more, loader.Next(&b));
      if (!more) return Internal("loader ended early at step " + std::to_string(s));
      lap("data");
      lr = schedule_->At(global_step_);
      SetLearningRate(*optimizer_, lr);
      auto tb = data::AugmentTrain(b.images, b.labels, num_classes, stage,
                                   config_.optimizer.label_smoothing, config_.augment, aug_rng);
      auto x = tb.images;
      if (channels_last_) x = x.contiguous(at::MemoryFormat::ChannelsLast);
      const int64_t n = x.size(0);
      auto weights = torch::zeros({n}, torch::TensorOptions().device(device_));
      if (real_counts[s] > 0) weights.narrow(0, 0, real_counts[s]).fill_(1.0);
      const StepInputs in{
          x, tb.targets, weights,
          torch::full({}, static_cast<double>(world) / static_cast<double>(global_counts[s]),
                      torch::TensorOptions().dtype(torch::kFloat).device(device_))};

      lap("augment");
      optimizer_->zero_grad();
      EFFNET_RETURN_IF_ERROR(dp_.BeforeBackward());
      StepOutputs out;
      if (cuda_graphs_ && n == batch) {
        EFFNET_ASSIGN_OR_RETURN(out, GraphOrWarmupStep(body, in, stage));
      } else {
        out = body(in);
      }
      lap("backward");
      const double wait_start = Now();
      EFFNET_RETURN_IF_ERROR(dp_.AfterBackward());
      collective_wait += Now() - wait_start;
      lap("gradient_sync");
      // Detached: the summed loss is a metric; attached, it chained every step's autograd graph
      // (and what its nodes keep) until the end of the epoch (TrainerTest.StepGraphs...).
      acc_loss += out.weighted_sum.detach();
      acc_correct += (out.logits.argmax(1).eq(b.labels).to(torch::kFloat) * weights).sum();
      acc_real += real_counts[s];

      if ((s + 1) % sync_every == 0 || s + 1 == steps) {
        const double sync_start = Now();
        const double step_loss = acc_loss.item<double>();
        const double step_correct = acc_correct.item<double>();
        double bad = std::isfinite(step_loss) ? 0.0 : 1.0;
        if (world > 1) {
          EFFNET_ASSIGN_OR_RETURN(const auto bad_sum, dp_.AllReduceSum({bad}));
          bad = bad_sum[0];
        }
        collective_wait += Now() - sync_start;
        if (bad > 0) {
          const int64_t first = global_step_ - (s - acc_first);
          return FailedPrecondition(
              "non-finite loss at epoch " + std::to_string(epoch + 1) + ", step " +
              (first == global_step_
                   ? std::to_string(global_step_)
                   : "in " + std::to_string(first) + "-" + std::to_string(global_step_)) +
              " (step " + std::to_string(s) + " of the epoch" +
              (std::isfinite(step_loss) ? ", on another rank"
                                        : ", loss " + Significant(step_loss, 6)) +
              "); last good checkpoint: " +
              (last_good_checkpoint_.empty() ? "none" : last_good_checkpoint_));
        }
        loss_sum += step_loss;
        correct += step_correct;
        seen += static_cast<double>(acc_real);
        window_loss += step_loss;
        window_correct += step_correct;
        window_images += acc_real;
        acc_loss.zero_();
        acc_correct.zero_();
        acc_first = s + 1;
        acc_real = 0;
      }
      lap("metrics");
      if (config_.optimizer.clip_grad_norm > 0) {
        torch::nn::utils::clip_grad_norm_(model_.module->parameters(),
                                          config_.optimizer.clip_grad_norm);
      }
      optimizer_->step();
      if (ema_) ema_->Update(*model_.module);
      ++global_step_;
      lap("optimizer");

      progress.Add(1);
      if ((s + 1) % config_.output.log_every_steps == 0 || s + 1 == steps) {
        const double now = Now();
        const double ips = window_images / std::max(1e-9, now - window_start);
        // loss and accuracy: the mean over the real samples since the last record.
        const double mean_div = std::max<double>(1.0, static_cast<double>(window_images));
        nlohmann::json j = {{"kind", "step"},
                            {"epoch", epoch},
                            {"step", global_step_},
                            {"rank", rank},
                            {"loss", window_loss / mean_div},
                            {"accuracy", window_correct / mean_div},
                            {"lr", lr},
                            {"image_size", stage.image_size},
                            {"randaug_magnitude", stage.randaug_magnitude},
                            {"mixup_alpha", stage.mixup_alpha},
                            {"cutmix_alpha", stage.cutmix_alpha},
                            {"dropout", stage.dropout},
                            {"img_per_s", ips}};
        AppendMetrics(j.dump());
        if (on_scalar && rank == 0) {
          on_scalar("train/step_loss", j["loss"].get<double>(), global_step_);
          on_scalar("train/lr", lr, global_step_);
          on_scalar("train/img_per_s", ips, global_step_);
        }
        window_start = now;
        window_images = 0;
        window_loss = window_correct = 0;
      }
      lap("logging");
    }
    progress.Finish();
    const double train_time = Now() - epoch_start;
    EFFNET_ASSIGN_OR_RETURN(const auto sums, dp_.AllReduceSum({loss_sum, correct, seen}));
    lap("metrics");
    EFFNET_ASSIGN_OR_RETURN(EvalResult val, Evaluate(storage::Split::kVal, 0, /*validation=*/true));
    lap("validation");

    job::RankMetrics m;
    m.epoch = epoch;
    m.rank = rank;
    m.train_loss = sums[2] > 0 ? sums[0] / sums[2] : 0;
    m.train_accuracy = sums[2] > 0 ? sums[1] / sums[2] : 0;
    m.val_loss = val.loss;
    m.val_accuracy = val.accuracy;
    m.images_per_second = seen / std::max(1e-9, train_time);
    m.step_time_ms = 1000.0 * train_time / std::max<int64_t>(1, steps);
    m.image_size = stage.image_size;
    // Note [rank throughput]: in synchronous data parallelism every rank's wall-clock img/s is
    // the same (the fast ones wait for the slowest at each all-reduce), so the straggler view
    // uses each rank's own pace: its images over its training time minus the time it was blocked
    // in the step's collectives (the gradient wait and the loss check). The slowest rank has the
    // lowest; the others show how long they waited. Each rank fills its slots of a zero vector
    // and the sum gathers them (a few doubles per rank, once per epoch).
    std::vector<double> slots(2 * static_cast<size_t>(world), 0.0);
    slots[2 * rank] = seen / std::max(1e-9, train_time - collective_wait);
    slots[2 * rank + 1] = collective_wait;
    EFFNET_ASSIGN_OR_RETURN(const auto per_rank, dp_.AllReduceSum(slots));
    nlohmann::json rank_img_per_s = nlohmann::json::array(), rank_wait_s = nlohmann::json::array();
    for (int r = 0; r < world; ++r) {
      rank_img_per_s.push_back(per_rank[2 * r]);
      rank_wait_s.push_back(per_rank[2 * r + 1]);
    }
    EFFNET_ASSIGN_OR_RETURN(job::EpochDecision decision, jc_.EndEpoch(m));
    lap("decision");

    std::string epoch_path, best_path;
    EFFNET_RETURN_IF_ERROR(SaveCheckpoint(epoch, decision, stage, &epoch_path, &best_path));
    if (rank == 0) {
      EFFNET_RETURN_IF_ERROR(jc_.CommitCheckpoint(epoch, epoch_path, decision.is_best));
    }
    EFFNET_RETURN_IF_ERROR(dp_.Barrier());
    last_good_checkpoint_ = epoch_path;
    if (!best_path.empty()) best_checkpoint_ = best_path;
    lap("checkpoint");
    const double epoch_time = Now() - epoch_start;
    nlohmann::json ej = {{"kind", "epoch"},
                         {"epoch", epoch},
                         {"step", global_step_},
                         {"stage", stage.index},
                         {"train_loss", m.train_loss},
                         {"train_accuracy", m.train_accuracy},
                         {"val_loss", m.val_loss},
                         {"val_accuracy", m.val_accuracy},
                         {"lr", lr},
                         {"image_size", stage.image_size},
                         {"eval_image_size", eval_image_size()},
                         {"randaug_magnitude", stage.randaug_magnitude},
                         {"mixup_alpha", stage.mixup_alpha},
                         {"cutmix_alpha", stage.cutmix_alpha},
                         {"dropout", stage.dropout},
                         {"img_per_s", m.images_per_second},
                         {"img_per_s_global", m.images_per_second * world},
                         {"rank_img_per_s", rank_img_per_s},
                         {"rank_wait_s", rank_wait_s},
                         {"epoch_time_s", epoch_time},
                         {"profile_s", profile},
                         {"is_best", decision.is_best},
                         {"best_epoch", decision.best_epoch},
                         {"world_size", world}};
    AppendMetrics(ej.dump());
    // Note [TensorBoard step axis]: every series (train/* per logged step, epoch/* per epoch,
    // test/* once) uses the global optimizer step; epoch/* sits at the step that ended the epoch,
    // and epoch/epoch maps steps back to epochs, counted from 1 (Note [epoch numbering]).
    if (on_scalar && rank == 0) {
      on_scalar("epoch/epoch", epoch + 1, global_step_);
      on_scalar("epoch/train_loss", m.train_loss, global_step_);
      on_scalar("epoch/train_accuracy", m.train_accuracy, global_step_);
      on_scalar("epoch/val_loss", m.val_loss, global_step_);
      on_scalar("epoch/val_accuracy", m.val_accuracy, global_step_);
      on_scalar("epoch/image_size", stage.image_size, global_step_);
      on_scalar("epoch/img_per_s", m.images_per_second * world, global_step_);
    }
    log::Info("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(config_.job.epochs) +
              " size " + std::to_string(stage.image_size) + ": loss " + Fixed(m.train_loss, 4) +
              " acc " + Fixed(m.train_accuracy, 4) + " | val loss " + Fixed(m.val_loss, 4) +
              " acc " + Fixed(m.val_accuracy, 4) + " | " + Fixed(m.images_per_second * world, 1) +
              " img/s" + (decision.is_best ? " | best" : ""));
    result.epochs_run++;
    result.last_epoch = epoch;
    result.best_epoch = best_epoch_ = decision.best_epoch;
    result.best_checkpoint = best_checkpoint_;
    result.last_checkpoint = last_good_checkpoint_;
    if (decision.stop) {
      result.stop_reason = decision.reason;
      break;
    }
    if (config_.output.stop_after_epoch >= 0 && epoch >= config_.output.stop_after_epoch) {
      result.stop_reason = "output.stop_after_epoch " + std::to_string(epoch);
      result.stopped_early_for_test = true;
      break;
    }
  }
  result.fit_time_s = fit_time_before_ + (Now() - fit_start_);
  fit_time_before_ = result.fit_time_s;
  fit_start_ = 0;
  return result;
}

Result<EvalResult> Trainer::Evaluate(storage::Split split, int image_size, bool validation) {
  if (!setup_done_) return FailedPrecondition("Trainer::Evaluate before Setup");
  if (image_size <= 0) image_size = eval_image_size();
  const int world = dp_.world_size(), rank = dp_.rank();
  const int C = model_.num_classes;
  auto all = reader_.info().IndicesOf(split);
  std::vector<int64_t> mine;
  for (size_t i = static_cast<size_t>(rank); i < all.size(); i += static_cast<size_t>(world)) {
    mine.push_back(all[i]);
  }
  const int eval_batch =
      config_.data.eval_batch_size > 0 ? config_.data.eval_batch_size : 2 * rank_batch_;
  const bool use_ema = ema_ && config_.ema.evaluate_with_ema;
  if (use_ema) ema_->Swap(*model_.module);
  const bool was_training = model_.module->is_training();
  model_.module->eval();
  std::vector<double> sums(3 + static_cast<size_t>(C) * C, 0.0);  // loss, correct, count, cm
  Status status = Status::Ok();
  EvalResult r;
  at::Tensor label_map;
  if (!label_map_.empty()) {
    label_map = torch::tensor(label_map_, torch::TensorOptions().dtype(torch::kLong)).to(device_);
  }
  {
    // Inference mode: no autograd bookkeeping at all (version counters, views), cheaper than
    // no_grad; nothing computed here is ever used by autograd.
    c10::InferenceMode inference;
    data::Loader loader(reader_, data::MakeBatches(mine, eval_batch), device_,
                        config_.data.prefetch_depth);
    // Note [validation precision]: Fit's per-epoch validation runs under the training forward's
    // bf16 autocast when that is on (as timm's train.py validates under AMP): it only ranks epochs
    // for early stopping and best/, and bf16 evaluation was about 2x faster per image on the
    // AVX512-BF16 CPU. Everything reported as a result stays fp32: the test metrics, and
    // effnet-evaluate, whose probabilities then equal effnet-predict's exactly
    // (tests/train/test_transfer).
    AutocastGuard ac(validation && bf16_, device_);
    while (true) {
      data::DeviceBatch b;
      auto more = loader.Next(&b);
      if (!more.ok()) {
        status = more.status();
        break;
      }
      if (!*more) break;
      auto x = data::AugmentEval(b.images, image_size, config_.augment);
      if (channels_last_) x = x.contiguous(at::MemoryFormat::ChannelsLast);
      const torch::Tensor logits = model_.forward(x).to(at::kFloat);
      const auto labels = label_map.defined() ? label_map.index_select(0, b.labels) : b.labels;
      const auto log_probs = torch::log_softmax(logits, 1);
      auto loss = -log_probs.gather(1, labels.unsqueeze(1)).sum();
      auto pred = logits.argmax(1);
      sums[0] += loss.item<double>();
      sums[1] += pred.eq(labels).sum().item<double>();
      sums[2] += static_cast<double>(labels.size(0));
      auto cm = torch::zeros({C * C}, torch::TensorOptions().dtype(torch::kLong).device(device_));
      cm.index_add_(0, labels * C + pred, torch::ones_like(pred));
      const auto probs = log_probs.exp().cpu().contiguous();
      const auto labels_cpu = labels.cpu();
      for (size_t i = 0; i < b.indices.size(); ++i) {
        const float* p = probs.data_ptr<float>() + i * static_cast<size_t>(C);
        r.images.push_back({b.indices[i], static_cast<int>(labels_cpu[i].item<int64_t>()),
                            std::vector<float>(p, p + C)});
      }
      auto cm_cpu = cm.cpu();
      const auto* cp = cm_cpu.data_ptr<int64_t>();
      for (int i = 0; i < C * C; ++i) sums[3 + i] += static_cast<double>(cp[i]);
    }
  }
  if (use_ema) ema_->Swap(*model_.module);
  if (was_training) model_.module->train();
  // Every rank reaches the reduction even after a local read error, so none waits alone.
  sums.push_back(status.ok() ? 0.0 : 1.0);
  auto reduced = dp_.AllReduceSum(sums);
  if (!status.ok())
    return status.WithContext("evaluating " + std::string(storage::SplitName(split)));
  EFFNET_ASSIGN_OR_RETURN(const auto total, std::move(reduced));
  if (total.back() > 0) return Unavailable("evaluation failed on another rank");
  r.count = static_cast<int64_t>(std::llround(total[2]));
  r.loss = r.count > 0 ? total[0] / total[2] : 0;
  r.accuracy = r.count > 0 ? total[1] / total[2] : 0;
  r.confusion.assign(static_cast<size_t>(C), std::vector<int64_t>(static_cast<size_t>(C), 0));
  for (int i = 0; i < C; ++i) {
    for (int j = 0; j < C; ++j) r.confusion[i][j] = std::llround(total[3 + i * C + j]);
  }
  return r;
}

Status Trainer::SaveCheckpoint(int epoch, const job::EpochDecision& decision,
                               const job::Stage& stage, std::string* epoch_path,
                               std::string* best_path) {
  *epoch_path = ckpt_dir_ + "/" + formats::EpochCheckpointName(epoch);
  // best/ comes from this epoch, or from the best epoch's directory when a resume removed a
  // stale best/ (Note [best after a roll-back]).
  std::string best_source;
  std::error_code ec;
  if (!ckpt_dir_.empty() && config_.checkpoint.save_best) {
    if (decision.is_best) {
      best_source = *epoch_path;
    } else if (best_checkpoint_.empty() && decision.best_epoch >= 0 &&
               decision.best_epoch < epoch) {
      const std::string from = ckpt_dir_ + "/" + formats::EpochCheckpointName(decision.best_epoch);
      if (fs::is_directory(from, ec)) best_source = from;
    }
  }
  *best_path = best_source.empty() ? "" : ckpt_dir_ + "/" + formats::kBestCheckpointName;
  if (ckpt_dir_.empty() || dp_.rank() != 0) return Status::Ok();
  formats::CheckpointMeta meta;
  meta.model_name = model_.name;
  meta.model = config_.model;
  meta.model.num_classes = model_.num_classes;
  meta.class_names = reader_.info().class_names;
  meta.config_yaml = TrainConfigToYaml(config_);
  meta.epoch = epoch;
  meta.next_epoch = epoch + 1;
  meta.global_step = global_step_;
  meta.steps_per_epoch = steps_per_epoch_;
  meta.stage = stage;
  meta.fit_time_s = fit_time_before_ + (fit_start_ > 0 ? Now() - fit_start_ : 0.0);
  meta.decision_state = jc_.SaveDecisionState();
  meta.world_size = dp_.world_size();
  meta.eval_image_size = eval_image_size();
  meta.data_path = reader_.path();
  formats::CheckpointSource source;
  source.model = model_.module.get();
  source.optimizer = optimizer_.get();
  if (ema_) {
    source.ema = ema_->tensors();
    source.ema_num_updates = ema_->num_updates();
  }
  EFFNET_RETURN_IF_ERROR(formats::WriteCheckpoint(*epoch_path, meta, source));
  // best/ shares the epoch checkpoint's files (hard links): no second serialisation and hash.
  if (!best_path->empty()) EFFNET_RETURN_IF_ERROR(formats::CopyCheckpoint(best_source, *best_path));
  return formats::PruneCheckpoints(ckpt_dir_, config_.checkpoint.keep_last);
}

Status Trainer::LoadCheckpoint(const std::string& path, bool weights_only) {
  formats::CheckpointTarget target;
  target.model = model_.module.get();
  target.variant = config_.model.variant;
  target.num_classes = model_.num_classes;
  int64_t ema_updates = 0;
  if (ema_) {
    target.ema = ema_->tensors();
    target.ema_num_updates = &ema_updates;
  }
  if (!weights_only) {
    target.optimizer = optimizer_.get();
    target.device = device_;
    target.restore_cpu_rng = true;
  }
  EFFNET_ASSIGN_OR_RETURN(formats::CheckpointMeta meta, formats::LoadCheckpoint(path, target));
  if (ema_ && meta.has_ema) ema_->set_num_updates(ema_updates);
  if (weights_only) return Status::Ok();
  start_epoch_ = meta.next_epoch;
  global_step_ = meta.global_step;
  fit_time_before_ = meta.fit_time_s;
  last_good_checkpoint_ = path;
  // Note [best after a roll-back]: best/ holds the best epoch so far. A resume from an older
  // checkpoint (Note [resume fallback], or a coordinator's roll-back) can find a best/ of an epoch
  // after the resumed one: it belongs to the abandoned attempt (a byte copy, where hard links were
  // refused, survives damage to its epoch's directory). Evaluating the test split with it would
  // report another run's weights, so it is removed; the next epoch's decision names the best
  // epoch, and best/ is written again from that epoch's directory (SaveCheckpoint) if keep_last
  // left it, else the test split uses the last checkpoint, as a run without best/ does.
  const std::string best = ckpt_dir_ + "/" + formats::kBestCheckpointName;
  std::error_code ec;
  best_checkpoint_.clear();
  if (!ckpt_dir_.empty() && fs::is_directory(best, ec)) {
    auto bm = formats::ReadCheckpointMeta(best);
    if (bm.ok() && bm->epoch <= meta.epoch) {
      best_checkpoint_ = best;
      best_epoch_ = bm->epoch;  // a rerun that trains no further epoch still reports it
    } else {
      log::Warn(best +
                (bm.ok() ? " holds epoch " + std::to_string(bm->epoch + 1) +
                               ", after the resumed epoch " + std::to_string(meta.epoch + 1)
                         : " is unreadable (" + bm.status().ToString() + ")") +
                ": removed; the best epoch's checkpoint takes its place at the next epoch's end");
      if (dp_.rank() == 0) EFFNET_RETURN_IF_ERROR(formats::RemoveCheckpoint(best));
    }
  }
  return jc_.RestoreDecisionState(meta.decision_state).WithContext("resuming from " + path);
}

Status Trainer::LoadWeights(const std::string& path) {
  if (!setup_done_) return FailedPrecondition("Trainer::LoadWeights before Setup");
  return LoadCheckpoint(path, /*weights_only=*/true);
}

}  // namespace effnet::train
