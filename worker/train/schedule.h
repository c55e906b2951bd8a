// Learning-rate schedules as pure functions of the global step (the schedule position that a
// checkpoint stores), so a resumed run continues on the same curve.
#pragma once

#include <cstdint>

#include "worker/train/config.h"

namespace effnet::train {

struct LrSchedule {
  ScheduleSection config;
  double peak_lr = 1e-3;
  int64_t steps_per_epoch = 1;
  int64_t total_steps = 1;

  // Learning rate for optimiser step `step` (0-based):
  //   warmup (step < warmup_steps): warmup_lr_init + (peak - warmup_lr_init) * step / warmup_steps
  //   constant:    peak
  //   cosine:      min_lr + (peak - min_lr) * (1 + cos(pi * t)) / 2, t = progress after warmup
  //   exponential: peak * decay_rate ^ floor(epoch / decay_epochs), epoch = step / steps_per_epoch
  //                counted from step 0 like the official code (staircase), floored at min_lr.
  double At(int64_t step) const;
  int64_t warmup_steps() const;
};

// The schedule of a run: peak PeakLr(c), decay every DecayEpochs(c) epochs (worker/train/config.h),
// job.epochs x steps_per_epoch steps in all.
LrSchedule MakeLrSchedule(const TrainConfig& c, int64_t steps_per_epoch);

}  // namespace effnet::train
