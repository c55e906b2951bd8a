// The job-level part of a run's config (the `job:` section): what the control plane decides with.
// Parsed, printed and documented by the config table (worker/train/config.cpp), which the
// coordinator and the workers share, so both read the same file the same way.
#pragma once

#include <cstdint>

#include "common/job/early_stopping.h"
#include "common/job/progressive.h"

namespace effnet::job {

struct JobConfig {
  int epochs = 10;
  uint64_t seed = 42;  // seeds shard plans, augmentation, dropout and init
  ProgressiveConfig progressive;
  EarlyStoppingConfig early_stopping;
};

}  // namespace effnet::job
