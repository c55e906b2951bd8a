// The trainer's view of the job's control plane: who trains on which samples in which stage, and
// who decides early stopping and which checkpoint is the best. Two implementations:
//  - LocalJobControl (worker/train): every rank computes the same seeded plan itself and decides
//    from reduced metrics (no coordinator).
//  - CoordinatorJobControl (worker/client): asks the gRPC coordinator.
// No Torch, no gRPC in this header.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace effnet::train {

// Hyper-parameters of one progressive-learning stage (paper Algorithm 1).
struct StageParams {
  int stage = 0;
  int image_size = 224;
  double randaug_magnitude = 0.0;  // 0 = RandAugment off
  double mixup_alpha = 0.0;        // 0 = off
  double cutmix_alpha = 0.0;       // 0 = off
  double dropout = 0.2;
};

struct EpochPlan {
  int epoch = 0;  // 0-based
  StageParams stage;
  std::vector<int64_t> sample_indices;  // this rank's shard of the train split, in training order
  bool stop = false;                    // true: the job is over (finished or early-stopped)
};

// Global (already reduced over ranks) numbers of one finished epoch.
struct EpochMetrics {
  int epoch = 0;
  int rank = 0;
  double train_loss = 0, train_accuracy = 0;
  double val_loss = 0, val_accuracy = 0;
  double images_per_second = 0;  // this rank's throughput
  double step_time_ms = 0;       // this rank's mean step time
  int image_size = 0;
};

struct EpochDecision {
  bool is_best = false;  // save this epoch's weights as the best checkpoint
  bool stop = false;     // early stopping triggered (or last epoch)
  int best_epoch = -1;
  std::string reason;  // "patience 2 exhausted: val_loss did not improve since epoch 3"
};

class JobControl {
 public:
  virtual ~JobControl() = default;
  // The plan of `epoch` for this rank. Deterministic from the seed.
  virtual Result<EpochPlan> PlanEpoch(int epoch) = 0;
  // Reports this epoch's metrics and returns the decision (the same on every rank).
  virtual Result<EpochDecision> EndEpoch(const EpochMetrics& metrics) = 0;
  // A checkpoint file for `epoch` is complete on disk (written atomically).
  virtual Status CommitCheckpoint(int epoch, const std::string& path, bool is_best) = 0;
  // Last committed checkpoint to resume from ("" when none).
  virtual Result<std::string> ResumeCheckpoint() = 0;
  // Decision state (early stopping) to keep inside checkpoints, and to restore from one when a
  // run resumes. Implementations that keep this state elsewhere (the coordinator's state file)
  // keep the defaults: nothing to save, nothing to restore.
  virtual std::string SaveDecisionState() const { return ""; }
  virtual Status RestoreDecisionState(const std::string& /*state*/) { return Status::Ok(); }
};

}  // namespace effnet::train
