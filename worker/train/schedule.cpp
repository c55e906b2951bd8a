#include "worker/train/schedule.h"

#include <algorithm>
#include <cmath>

namespace effnet::train {

int64_t LrSchedule::warmup_steps() const {
  return static_cast<int64_t>(std::llround(config.warmup_epochs * steps_per_epoch));
}

double LrSchedule::At(int64_t step) const {
  const int64_t warm = warmup_steps();
  if (step < warm) {
    return config.warmup_lr_init +
           (peak_lr - config.warmup_lr_init) * static_cast<double>(step) / warm;
  }
  if (config.name == "cosine") {
    const int64_t span = std::max<int64_t>(1, total_steps - warm);
    const double t = std::clamp(static_cast<double>(step - warm) / span, 0.0, 1.0);
    return config.min_lr + (peak_lr - config.min_lr) * 0.5 * (1.0 + std::cos(M_PI * t));
  }
  if (config.name == "exponential") {
    const double epoch = static_cast<double>(step) / std::max<int64_t>(1, steps_per_epoch);
    const double lr =
        peak_lr * std::pow(config.decay_rate, std::floor(epoch / config.decay_epochs));
    return std::max(lr, config.min_lr);
  }
  return peak_lr;
}

LrSchedule MakeLrSchedule(const TrainConfig& c, int64_t steps_per_epoch) {
  LrSchedule s;
  s.config = c.schedule;
  s.config.decay_epochs = DecayEpochs(c);
  s.peak_lr = PeakLr(c);
  s.steps_per_epoch = std::max<int64_t>(1, steps_per_epoch);
  s.total_steps = s.steps_per_epoch * c.job.epochs;
  return s;
}

}  // namespace effnet::train
