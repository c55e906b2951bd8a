// Early stopping and the best epoch, as the study's Keras callbacks decide them.
#pragma once

#include <string>

#include "common/job/types.h"

namespace effnet::job {

struct EarlyStoppingConfig {
  int patience = 2;        // epochs without val_loss improvement before stopping; <= 0: never
  double min_delta = 0.0;  // improvement must exceed this
  std::string best_metric = "val_accuracy";  // val_accuracy (max) | val_loss (min)
};

class EarlyStopping {
 public:
  explicit EarlyStopping(EarlyStoppingConfig c = {}) : config_(std::move(c)) {}
  // Feed epochs in order; returns the decision for this epoch.
  EpochDecision Update(int epoch, double val_loss, double val_accuracy, bool last_epoch);

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
