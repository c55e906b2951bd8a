// The run configuration: one struct per component, every tunable with its default, parsed from YAML
// (+ `--set section.field=value` overrides) through ONE field table (config.cpp, Note [one field
// table]) that also writes the resolved YAML and docs/config.md (`effnet-train --config-doc`).
//
// No ATen, no gRPC here: the coordinator parses the same file with the same table. Each section's
// struct lives with the code that uses it; this header only assembles them.
#pragma once

#include <string>
#include <vector>

#include "common/job/config.h"
#include "common/status.h"
#include "worker/client/client_config.h"
#include "worker/data/augment_config.h"
#include "worker/dist/dist_config.h"
#include "worker/model/architecture.h"

namespace effnet::train {

// Transfer learning (keys under `model.`): what the model starts from and which part trains.
struct TransferSection {
  std::string pretrained;       // weights file (safetensors / torch zip); "" = random init
  std::string freeze = "none";  // none | backbone | stages:N (ParseFreeze)
  int unfreeze_epoch = -1;      // first epoch trained with everything unfrozen; -1 = never
};

// model.freeze as EfficientNetV2Impl::freeze_stages' k: "none" -> -1, "stages:N" -> N,
// "backbone" -> stages + 1 (the architecture's stage count is not known here: kFreezeBackbone).
constexpr int kFreezeBackbone = 1 << 20;
Result<int> ParseFreeze(const std::string& text);

// Note [global batch]: data.batch_size is the batch of one optimiser step over all ranks
// together, as Keras's fit(batch_size=16) is: a study run on 4 ranks trains 4 images per rank,
// never 16 x 4 at the same learning rate. PerRankBatch splits it and refuses a batch that the
// world size does not divide.
struct DataSection {
  std::string path;         // HDF5 file (effnet-prepare); --data overrides
  int batch_size = 16;      // global (Note [global batch])
  int eval_batch_size = 0;  // per rank; 0: 2 * the per-rank train batch
  int eval_image_size = 0;  // 0: job.progressive.max_image_size
  int prefetch_depth = 2;   // batches read ahead by the reader thread
};

struct OptimizerSection {
  std::string name = "adam";       // adam | adamw | sgd | rmsproptf
  double lr = 1e-3;                // peak learning rate (after warmup); see lr_base_batch
  int lr_base_batch = 0;           // > 0: lr is for this global batch, scaled linearly (PeakLr)
  double weight_decay = 0.0;       // L2 (adam, sgd, rmsproptf) or decoupled (adamw)
  bool decay_bn_and_bias = false;  // false: no weight decay on 1-d params (BN gamma/beta, biases)
  double momentum = 0.9;           // sgd, rmsproptf
  bool nesterov = true;            // sgd
  double beta1 = 0.9, beta2 = 0.999;  // adam, adamw
  double eps = 1e-7;                  // adam/adamw (Keras default 1e-7); rmsproptf (official 1e-3)
  std::string eps_form = "torch";     // adam/adamw: torch | keras (Note [Keras epsilon])
  double rmsprop_decay = 0.9;         // rmsproptf rho
  double label_smoothing = 0.0;       // cross-entropy label smoothing
  double clip_grad_norm = 0.0;        // 0: off
};

struct ScheduleSection {
  std::string name = "constant";  // constant | cosine | exponential
  double warmup_epochs = 0.0;     // linear warmup from warmup_lr_init to optimizer.lr
  double warmup_lr_init = 0.0;
  double decay_rate = 0.97;  // exponential: lr * decay_rate^floor(epoch / decay_epochs)
  double decay_epochs = 2.4;
  double decay_reference_epochs = 0;  // > 0: decay_epochs is for a run this long (DecayEpochs)
  double min_lr = 0.0;                // cosine floor (and lower bound of exponential)
};

struct EmaSection {
  bool enabled = false;
  double decay = 0.9999;
  bool tf_warmup = true;          // decay_t = min(decay, (1 + t) / (10 + t))
  bool evaluate_with_ema = true;  // validation/test use the EMA weights
};

struct CheckpointSection {
  std::string resume = "auto";  // auto (latest in the run dir / coordinator) | never | <file>
  int keep_last = 2;            // epoch checkpoints kept besides the best one
  bool save_best = true;
};

// Where and how the process computes (not what it learns).
struct RuntimeSection {
  std::string device = "auto";  // auto | cpu | cuda | cuda:N
  std::string bf16 = "auto";    // auto | on | off: bf16 autocast (Trainer::Setup, ResolveBf16)
  int threads = 0;  // intra-op CPU threads (0: Note [threads per rank], apps/app_common.cpp)
  std::string channels_last = "auto";    // auto | on | off: NHWC (auto: where bf16 is on)
  std::string fused_kernels = "auto";    // auto | off: Note [fused BN+SiLU] (worker/nn/bn_silu.h)
  std::string cuda_graphs = "auto";      // auto | on | off: Note [CUDA graph step] (graph_step.h)
  std::string cudnn_benchmark = "auto";  // auto | on | off: cuDNN autotuning (auto: on on CUDA)
};

struct OutputSection {
  int log_every_steps = 10;  // step records in metrics.jsonl / log lines
  bool tensorboard = true;
  bool progress = true;       // progress bar on a terminal
  int stop_after_epoch = -1;  // >= 0: exit after this epoch's checkpoint (tests, preemption)
};

struct TrainConfig {
  job::JobConfig job;
  model::ModelConfig model;  // model.dropout is set per progressive stage, not from the file
  TransferSection transfer;  // model.pretrained, model.freeze, model.unfreeze_epoch
  DataSection data;
  OptimizerSection optimizer;
  ScheduleSection schedule;
  data::AugmentConfig augment;
  EmaSection ema;
  CheckpointSection checkpoint;
  dist::DistConfig dist;
  client::ClientTimeouts client;
  RuntimeSection runtime;
  OutputSection output;
};

// data.batch_size / world_size (Note [global batch]); an error naming data.batch_size and the
// world size when it does not divide.
Result<int> PerRankBatch(const DataSection& d, int world_size);
// The peak learning rate of a run: optimizer.lr, or with optimizer.lr_base_batch = B > 0 the
// linear scaling rule lr x data.batch_size / B (the paper's 0.016 x batch / 256).
double PeakLr(const TrainConfig& c);
// Epochs per exponential decay step: schedule.decay_epochs, or with decay_reference_epochs = R > 0
// compressed to the run's length, decay_epochs x job.epochs / R, so that a paper recipe written
// for 350 epochs (0.97 every 2.4) ends near the same 1 % of its peak over 40 epochs.
double DecayEpochs(const TrainConfig& c);

// Parses a full config document (YAML text). Unknown keys and bad values are errors that name the
// field and the allowed values ("optimizer.name: expected adam|adamw|sgd|rmsproptf, got 'x'").
Result<TrainConfig> ParseTrainConfig(const std::string& yaml_text,
                                     const std::vector<std::string>& overrides = {});
// Reads a YAML file and parses it (errors are prefixed with the path).
Result<TrainConfig> LoadTrainConfig(const std::string& path,
                                    const std::vector<std::string>& overrides = {});
// Resolved YAML of the whole config (written to <run>/config.yaml; parses back to the same).
std::string TrainConfigToYaml(const TrainConfig& c);
// The `job:` section alone (the coordinator's state file keeps it).
std::string JobConfigToYaml(const job::JobConfig& job);
// Note [what a run is]: the fields that decide what a run learns and reports: every field except
// runtime.*, output.*, client.*, checkpoint.*, dist.comm.*, data.path and data.prefetch_depth
// (where and how fast it computes, what it logs, where the store lies). "key: old -> new" for each
// such field that differs, in table order; empty when a resume or rerun continues the same run.
std::vector<std::string> RunDifferences(const TrainConfig& before, const TrainConfig& now);
// The whole of docs/config.md: presets and, per section, every field's key, type, default,
// allowed values and meaning.
std::string ConfigDocMarkdown();

// Presets embedded at build time from worker/train/presets/*.yaml.
std::vector<std::string> PresetNames();
Result<std::string> PresetText(const std::string& name);

}  // namespace effnet::train
