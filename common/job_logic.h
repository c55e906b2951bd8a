// The job's decision logic, shared by the coordinator (which does not link LibTorch) and by
// workers that run without one (LocalJobControl): progressive-learning schedule, per-epoch shard
// plans, early stopping / best epoch. Plain C++, deterministic from its inputs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace effnet::job {

// --- Progressive learning (paper Algorithm 1 and the official code) ---

enum class ScheduleFormula {
  // Paper: stage i of M uses v_i = v_min + (v_max - v_min) * i / (M - 1): first stage = min values.
  kPaper,
  // Official automl code: ratio = (i + 1) / M; size = int(min + (max - min) * ratio), so it never
  // trains at the min size; regularisers use linspace(min, max, M) like the paper.
  kOfficial,
};

struct ProgressiveConfig {
  int num_stages = 1;  // 1 = no progressive learning: the max values throughout
  ScheduleFormula formula = ScheduleFormula::kPaper;
  int min_image_size = 128, max_image_size = 224;
  double min_randaug = 0.0, max_randaug = 0.0;
  double min_mixup = 0.0, max_mixup = 0.0;
  double min_cutmix = 0.0, max_cutmix = 0.0;
  double min_dropout = 0.2, max_dropout = 0.2;
  int size_multiple = 8;  // image sizes are rounded down to a multiple of this (>= 1)
};

struct Stage {
  int index = 0;
  int image_size = 224;
  double randaug_magnitude = 0, mixup_alpha = 0, cutmix_alpha = 0, dropout = 0;
};

Status Validate(const ProgressiveConfig& c);
// Stage of `epoch` (0-based) in a run of `total_epochs`: epochs are split into num_stages equal
// consecutive parts (the official code's int(ratio * total) boundaries).
Stage StageForEpoch(const ProgressiveConfig& c, int epoch, int total_epochs);
Stage StageAt(const ProgressiveConfig& c, int stage_index);

// --- Shard plans ---

// Note [shard plan]: each epoch the train indices are permuted with a generator seeded by
// (seed, epoch) and dealt round-robin: rank r gets perm[r], perm[r+W], ... so every sample is in
// exactly one shard and shard sizes differ by at most one. Ranks with a shorter shard run the same
// number of steps (see Trainer: zero-weight padding) so collectives stay matched.
std::vector<std::vector<int64_t>> PlanShards(const std::vector<int64_t>& train_indices,
                                             uint64_t seed, int epoch, int world_size);
// Shard size of `rank` without materialising the plan.
int64_t ShardSize(int64_t num_samples, int world_size, int rank);

// --- Early stopping and best epoch (the study's Keras callbacks) ---

struct EarlyStoppingConfig {
  int patience = 2;        // epochs without val_loss improvement before stopping; <= 0: never
  double min_delta = 0.0;  // improvement must exceed this
  std::string best_metric = "val_accuracy";  // val_accuracy (max) | val_loss (min)
};

struct EpochOutcome {
  bool is_best = false;
  bool stop = false;
  int best_epoch = -1;
  std::string reason;
};

class EarlyStopping {
 public:
  explicit EarlyStopping(EarlyStoppingConfig c = {}) : config_(std::move(c)) {}
  // Feed epochs in order; returns the decision for this epoch.
  EpochOutcome Update(int epoch, double val_loss, double val_accuracy, bool last_epoch);

  // State for checkpoints / the coordinator's state file.
  struct State {
    double best_val_loss = 1e300;
    int best_loss_epoch = -1;
    double best_score = -1e300;  // best value of best_metric, sign-adjusted so larger is better
    int best_epoch = -1;
    int epochs_without_improvement = 0;
  };
  const State& state() const { return state_; }
  void Restore(const State& s) { state_ = s; }

 private:
  EarlyStoppingConfig config_;
  State state_;
};

}  // namespace effnet::job
