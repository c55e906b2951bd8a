// The job's vocabulary: what the control plane (coordinator or LocalJobControl) and the trainer
// exchange once per epoch. One C++ type per concept; the proto messages in
// proto/coordinator.proto are their wire form, converted in one place (proto/convert.h).
// Plain C++: no Torch, no gRPC.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace effnet::job {

// Note [epoch numbering]: epochs (and progressive stages) are counted from 1 wherever a person
// reads them: logs and error messages (trainer, coordinator, client, effnet-run), status lines
// and results tables, results.md, report.html with its learning curves and throughput table,
// learning_curves.svg, TensorBoard's epoch/epoch series. Everything here, and everything that is
// data rather than text, is 0-based: the wire protocol and its JSON (JobState, `effnet-coordinator
// state --json`, the state file), the fields of metrics.jsonl, summary.json (best_epoch) and
// checkpoint meta.json, and the checkpoint folder names: epoch-0000/ holds the first epoch. The
// folder names stay 0-based because they are an on-disk key of existing runs (a committed path in
// LATEST and in the coordinator's state, the epoch in meta.json): renaming them would give one
// run folder two numberings after an upgrade. So do the config values model.unfreeze_epoch and
// output.stop_after_epoch (--stop-after-epoch), whose meaning existing configs rely on; messages
// that cite them say "0-based". Text shows `epoch + 1`.

// Hyper-parameters of one progressive-learning stage (paper Algorithm 1); made by StageAt /
// StageForEpoch (common/job/progressive.h), read by augmentation and the model's dropout.
struct Stage {
  int index = 0;  // 0-based stage number
  int image_size = 224;
  double randaug_magnitude = 0.0;  // 0 = RandAugment off
  double mixup_alpha = 0.0;        // 0 = off
  double cutmix_alpha = 0.0;       // 0 = off
  double dropout = 0.2;            // classifier dropout
};

// One rank's work for one epoch.
struct EpochPlan {
  int epoch = 0;            // 0-based
  bool stop = false;        // true: the job is over (finished or early-stopped); nothing below
  std::string stop_reason;  // why, when stop
  Stage stage;
  std::vector<int64_t> sample_indices;  // this rank's shard of the train split, in training order
  int64_t num_train_samples = 0;        // all ranks together
};

// One rank's numbers of one finished epoch. The trainer reports train/val numbers already
// reduced over ranks; images_per_second and step_time_ms are this rank's own.
struct RankMetrics {
  int rank = 0;
  int epoch = 0;
  int64_t train_samples = 0;  // weight of this rank's numbers; 0 everywhere = equal weights
  double train_loss = 0, train_accuracy = 0;
  double val_loss = 0, val_accuracy = 0;
  double images_per_second = 0;
  double step_time_ms = 0;
  int image_size = 0;
  std::string host;
};

// The job's decision after an epoch, the same on every rank.
struct EpochDecision {
  bool is_best = false;  // save this epoch's weights as the best checkpoint
  bool stop = false;     // early stopping triggered, or the last epoch
  int best_epoch = -1;
  // e.g. "early stop: val_loss did not improve for 2 epochs (lowest at epoch 3)", epochs counted
  // from 1 (Note [epoch numbering]).
  std::string reason;
};

}  // namespace effnet::job
