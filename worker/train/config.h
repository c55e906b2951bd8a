// The training config: one struct per component, every field with its default, parsed from YAML
// (+ `--set section.field=value` overrides). The `job:` section is common/job/config.h (shared
// with the coordinator); this header owns model, data, optimizer, schedule, augment, ema,
// checkpoint and output. docs/config.md lists the same fields (`effnet-train --config-doc`
// prints this table, so the doc can be regenerated and checked).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/job/config.h"
#include "common/status.h"
#include "worker/data/augment.h"

namespace effnet::train {

struct ModelSection {
  std::string variant = "b0";  // b0|b1|b2|b3|s|m|l
  int num_classes = 0;         // 0: take it from the data file; >0 must agree with the file
  double drop_path = 0.2;      // stochastic depth rate of the last block
  double bn_momentum = 0.1;    // PyTorch convention
  double bn_eps = 1e-3;
  std::string padding = "tf_same";  // tf_same | symmetric
  double extra_width = 1.0;         // reduced models for tests (1.0 = the variant)
  double extra_depth = 1.0;
  bool channels_last = false;  // NHWC memory format (faster on CUDA)
};

struct DataSection {
  std::string path;         // HDF5 file (effnet-prepare); --data overrides
  int batch_size = 16;      // per rank
  int eval_batch_size = 0;  // 0: 2 * batch_size
  int eval_image_size = 0;  // 0: job.progressive.max_image_size
  int prefetch_depth = 2;   // batches read ahead by the reader thread
};

struct OptimizerSection {
  std::string name = "adam";       // adam | adamw | sgd | rmsproptf
  double lr = 1e-3;                // peak learning rate (after warmup)
  double weight_decay = 0.0;       // L2 (adam, sgd, rmsproptf) or decoupled (adamw)
  bool decay_bn_and_bias = false;  // false: no weight decay on 1-d params (BN gamma/beta, biases)
  double momentum = 0.9;           // sgd, rmsproptf
  bool nesterov = true;            // sgd
  double beta1 = 0.9, beta2 = 0.999;  // adam, adamw
  double eps = 1e-7;                  // adam/adamw (Keras default 1e-7); rmsproptf (official 1e-3)
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
  double min_lr = 0.0;  // cosine floor (and lower bound of exponential)
};

struct EmaSection {
  bool enabled = false;
  double decay = 0.9999;
  bool tf_warmup = true;          // decay_t = min(decay, (1 + t) / (10 + t))
  bool evaluate_with_ema = true;  // validation/test use the EMA weights
};

struct CheckpointSection {
  std::string resume = "auto";  // auto (latest in the run dir / coordinator) | never | <file>
  int keep_last = 2;            // epoch checkpoints kept besides best.pt
  bool save_best = true;
};

struct OutputSection {
  std::string device = "auto";  // auto | cpu | cuda | cuda:N
  bool bf16 = true;             // bf16 autocast on CUDA (ignored on CPU)
  int threads = 0;              // intra-op CPU threads (0: LibTorch default)
  int log_every_steps = 10;     // step records in metrics.jsonl / log lines
  bool tensorboard = true;
  bool progress = true;       // progress bar on a terminal
  int stop_after_epoch = -1;  // >= 0: exit after this epoch's checkpoint (tests, preemption)
};

struct TrainConfig {
  job::JobConfig job;
  ModelSection model;
  DataSection data;
  OptimizerSection optimizer;
  ScheduleSection schedule;
  data::AugmentConfig augment;
  EmaSection ema;
  CheckpointSection checkpoint;
  OutputSection output;
};

// Parses a full config document (YAML text). Unknown keys and bad values are errors that name the
// field and the allowed values ("optimizer.name: expected adam|adamw|sgd|rmsproptf, got 'x'").
Result<TrainConfig> ParseTrainConfig(const std::string& yaml_text,
                                     const std::vector<std::string>& overrides = {});
// Reads a YAML file and parses it (errors are prefixed with the path).
Result<TrainConfig> LoadTrainConfig(const std::string& path,
                                    const std::vector<std::string>& overrides = {});
// Resolved YAML of the whole config (written to <run>/config.yaml; parses back to the same).
std::string TrainConfigToYaml(const TrainConfig& c);
// Markdown table of every field: key, type, default, allowed values, meaning.
std::string ConfigDocMarkdown();

// Presets embedded at build time from worker/train/presets/*.yaml.
std::vector<std::string> PresetNames();
Result<std::string> PresetText(const std::string& name);

}  // namespace effnet::train
