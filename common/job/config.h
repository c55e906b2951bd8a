// The job-level part of a training config (the `job:` section of the YAML), parsed without
// LibTorch so that the coordinator and the workers read the same file the same way.
//
//   job:
//     epochs: 10            # total epochs (>= 1)
//     seed: 42              # seeds shard plans, augmentation and init
//     progressive:          # paper Algorithm 1; num_stages 1 = off (max values throughout)
//       num_stages: 1
//       formula: paper      # paper | official
//       min_image_size: 128
//       max_image_size: 224
//       min_randaug: 0      # RandAugment magnitude (0 = off)
//       max_randaug: 0
//       min_mixup: 0        # mixup alpha (0 = off)
//       max_mixup: 0
//       min_cutmix: 0
//       max_cutmix: 0
//       min_dropout: 0.2    # classifier dropout
//       max_dropout: 0.2
//       size_multiple: 8
//     early_stopping:
//       patience: 2         # epochs without val_loss improvement; 0 = never stop early
//       min_delta: 0.0
//       best_metric: val_accuracy   # val_accuracy | val_loss
#pragma once

#include <cstdint>
#include <string>

#include "common/job/early_stopping.h"
#include "common/job/progressive.h"
#include "common/status.h"

namespace YAML {
class Node;
}

namespace effnet::job {

struct JobConfig {
  int epochs = 10;
  uint64_t seed = 42;
  ProgressiveConfig progressive;
  EarlyStoppingConfig early_stopping;
};

// Parses the `job:` node (missing fields keep their defaults). Unknown keys and bad values are
// errors naming the field ("job.progressive.formula: expected paper|official, got 'x'").
Result<JobConfig> ParseJobConfig(const YAML::Node& job_node);
// Reads `path` and parses its `job:` section.
Result<JobConfig> LoadJobConfig(const std::string& path);
// YAML text of `c` (the resolved config written into run directories and state files).
std::string JobConfigToYaml(const JobConfig& c);

}  // namespace effnet::job
