// Progressive learning (paper Algorithm 1 and the official code): which stage, image size and
// regularisation an epoch trains with. Deterministic from the config.
#pragma once

#include "common/job/types.h"
#include "common/status.h"

namespace effnet::job {

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

Status Validate(const ProgressiveConfig& c);
// Stage of `epoch` (0-based) in a run of `total_epochs`: epochs are split into num_stages equal
// consecutive parts (the official code's int(ratio * total) boundaries).
Stage StageForEpoch(const ProgressiveConfig& c, int epoch, int total_epochs);
Stage StageAt(const ProgressiveConfig& c, int stage_index);

}  // namespace effnet::job
