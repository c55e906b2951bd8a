#include "common/job/early_stopping.h"

namespace effnet::job {

EpochDecision EarlyStopping::Update(int epoch, double val_loss, double val_accuracy,
                                    bool last_epoch) {
  EpochDecision out;
  // Best checkpoint by the configured metric.
  const double score = config_.best_metric == "val_loss" ? -val_loss : val_accuracy;
  if (score > state_.best_score) {
    state_.best_score = score;
    state_.best_epoch = epoch;
    out.is_best = true;
  }
  // Early stopping watches val_loss (Keras EarlyStopping(monitor="val_loss")).
  if (val_loss < state_.best_val_loss - config_.min_delta) {
    state_.best_val_loss = val_loss;
    state_.best_loss_epoch = epoch;
    state_.epochs_without_improvement = 0;
  } else {
    state_.epochs_without_improvement++;
  }
  out.best_epoch = state_.best_epoch;
  if (config_.patience > 0 && state_.epochs_without_improvement >= config_.patience) {
    out.stop = true;
    // Text for people counts epochs from 1, as the progress lines and the reports do.
    out.reason = "early stop: val_loss did not improve for " +
                 std::to_string(state_.epochs_without_improvement) + " epochs (lowest at epoch " +
                 std::to_string(state_.best_loss_epoch + 1) + ")";
  } else if (last_epoch) {
    out.stop = true;
    out.reason = "last epoch reached";
  }
  return out;
}

}  // namespace effnet::job
