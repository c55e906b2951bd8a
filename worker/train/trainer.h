// The training engine: progressive learning, augmentation, loss, optimiser + LR schedule, EMA,
// data-parallel hooks, validation, decisions through JobControl, and exact-resume checkpoints
// (written and read by worker/formats/checkpoint.h).
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "storage/dataset_reader.h"
#include "worker/train/config.h"
#include "worker/train/data_parallel.h"
#include "worker/train/job_control.h"

namespace effnet::train {

class ModelEma;
class GraphedStep;
struct LrSchedule;
struct StepInputs;
struct StepOutputs;

// The model as the trainer sees it; the apps wrap EfficientNetV2, tests may wrap a tiny stand-in.
struct ModelHandle {
  std::shared_ptr<torch::nn::Module> module;
  std::function<torch::Tensor(const torch::Tensor&)> forward;  // [N,3,H,W] -> logits [N,C]
  std::function<void(double)> set_dropout;                     // may be empty
  // Freezes (true) or unfreezes (false) the part named by model.freeze; empty: model.freeze must
  // be none.
  std::function<Status(bool)> set_frozen;
  int num_classes = 0;
  std::string name;  // "EfficientNetV2-B0"
};

// One evaluated image (this rank's shard only): classes are the model's indices.
struct ImagePrediction {
  int64_t index = 0;                 // in the data file
  int label = 0;                     // true class (after the label map)
  std::vector<float> probabilities;  // softmax over the model's classes
};

struct EvalResult {
  double loss = 0, accuracy = 0;  // reduced over ranks
  int64_t count = 0;
  std::vector<std::vector<int64_t>> confusion;  // [true][predicted], reduced over ranks
  std::vector<ImagePrediction> images;          // this rank's images, in file order
};

struct FitResult {
  int epochs_run = 0;   // epochs trained by this process
  int last_epoch = -1;  // last finished epoch
  int best_epoch = -1;
  double fit_time_s = 0;  // training + validation wall time, accumulated across resumes
  std::string best_checkpoint, last_checkpoint;
  std::string stop_reason;
  bool stopped_early_for_test = false;  // output.stop_after_epoch hit
};

// The checkpoint a run resumes from: checkpoint.resume auto = the last committed one (JobControl),
// never = "", else that path. Trainer::Setup resumes from it; a pretrained start is skipped when
// it is not empty.
Result<std::string> ResumeCheckpointPath(const CheckpointSection& c, JobControl& jc);

// Whether this CPU has bf16 instructions (AVX512-BF16 or AMX), as LibTorch's cpuinfo reads them:
// runtime.bf16=on is refused on a CPU without them.
bool CpuHasBf16();

class Trainer {
 public:
  // `run_dir`: metrics.jsonl and checkpoints/ go there (rank 0 writes). `reader` outlives this.
  // Resume (checkpoint.resume) and LoadWeights take a checkpoint directory.
  Trainer(TrainConfig config, ModelHandle model, storage::DatasetReader& reader, DataParallel& dp,
          JobControl& jc, std::string run_dir);
  ~Trainer();

  // Device, class-count check, optimiser, Attach, EMA, resume. Call once before Fit/Evaluate.
  Status Setup();
  Result<FitResult> Fit();
  // Evaluates `split` (each rank a shard; sums reduced). EMA weights when enabled and configured.
  // fp32 unless `validation` (Fit's per-epoch validation, Note [validation precision]).
  Result<EvalResult> Evaluate(storage::Split split, int image_size = 0, bool validation = false);
  // Loads the weights (and EMA) of a checkpoint directory only, e.g. checkpoints/best before the
  // test evaluation (worker/formats/checkpoint.h).
  Status LoadWeights(const std::string& path);

  // Evaluation of a data file whose classes are the model's in another order (or a subset):
  // store label i is model class store_to_model[i]. Call before Setup; Setup then checks that the
  // map covers the file's classes instead of requiring the same class count.
  void SetLabelMap(std::vector<int64_t> store_to_model) { label_map_ = std::move(store_to_model); }

  // Optional sink for scalars (TensorBoard): tag, value, global step. Rank 0 only.
  std::function<void(const std::string&, double, int64_t)> on_scalar;

  const TrainConfig& config() const { return config_; }
  torch::Device device() const { return device_; }
  int64_t global_step() const { return global_step_; }
  torch::nn::Module& module() { return *model_.module; }
  torch::optim::Optimizer& optimizer() { return *optimizer_; }
  int eval_image_size() const;

 private:
  // Resume from the committed checkpoint, or the newest valid earlier one (Note [resume
  // fallback]); ResumeFrom refuses another variant or class count (Note [same run]).
  Status Resume(const std::string& committed);
  Status ResumeFrom(const std::string& path);
  Status LoadCheckpoint(const std::string& path, bool weights_only);
  Status SaveCheckpoint(int epoch, const job::EpochDecision& decision, const job::Stage& stage,
                        std::string* epoch_path, std::string* best_path);
  void AppendMetrics(const std::string& json_line);
  // A full batch's step where the step is captured (Note [CUDA graph step], graph_step.h): eager
  // for the first steps of a shape key, then captured once and replayed.
  Result<StepOutputs> GraphOrWarmupStep(const std::function<StepOutputs(const StepInputs&)>& body,
                                        const StepInputs& in, const job::Stage& stage);

  TrainConfig config_;
  ModelHandle model_;
  storage::DatasetReader& reader_;
  DataParallel& dp_;
  JobControl& jc_;
  std::string run_dir_, ckpt_dir_;
  torch::Device device_ = torch::kCPU;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<ModelEma> ema_;
  std::unique_ptr<LrSchedule> schedule_;
  std::vector<int64_t> train_indices_;
  int64_t steps_per_epoch_ = 0;
  bool bf16_ = false;           // runtime.bf16 resolved for this device
  bool channels_last_ = false;  // runtime.channels_last resolved
  bool cuda_graphs_ = false;    // runtime.cuda_graphs resolved
  std::unique_ptr<GraphedStep> graph_;
  std::string graph_key_;    // shape key of graph_ (or of the steps warming up for it)
  int graph_key_steps_ = 0;  // eager steps run with graph_key_
  int rank_batch_ = 1;       // this rank's share of data.batch_size (Note [global batch])
  int64_t global_step_ = 0;
  int start_epoch_ = 0;
  double fit_time_before_ = 0;  // from the resumed checkpoint
  double fit_start_ = 0;        // start of the running Fit (0 outside Fit)
  std::string last_good_checkpoint_;
  std::string best_checkpoint_;
  int best_epoch_ = -1;  // of best_checkpoint_
  bool setup_done_ = false;
  bool frozen_ = false;             // model.freeze is in effect
  std::vector<int64_t> label_map_;  // empty: store labels are model classes
};

}  // namespace effnet::train
