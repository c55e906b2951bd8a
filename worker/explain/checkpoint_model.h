// A trained EfficientNetV2 from a checkpoint directory, with what explaining it needs: the class
// names, the evaluation size and the normalisation it was trained with.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "worker/data/augment_config.h"
#include "worker/model/efficientnet.h"

namespace effnet::explain {

struct CheckpointModel {
  model::EfficientNetV2 model{nullptr};  // on the CPU, eval mode
  std::vector<std::string> class_names;
  int eval_image_size = 0;
  data::AugmentConfig augment;  // normalisation and eval crop of the training run
  bool ema = false;             // the EMA weights were loaded
};

// Verifies and loads `dir` (worker/formats/checkpoint.h); the EMA weights when the checkpoint has
// them and its config evaluates with EMA, as effnet-evaluate does.
Result<CheckpointModel> LoadCheckpointModel(const std::string& dir);

}  // namespace effnet::explain
