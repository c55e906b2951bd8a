// Pretrained-weights importer (transfer learning as in the study): a timm tf_efficientnetv2_*
// state dict (a `.pth`/`.pt` torch zip or a `.safetensors` file, or the model.safetensors of one
// of our checkpoints) into an EfficientNetV2, with a new classifier when the class counts differ.
#pragma once

#include <string>

#include "common/status.h"
#include "worker/model/efficientnet.h"

namespace effnet::formats {

struct TransferOptions {
  // Always re-initialise the classifier, even when the file's classifier has the right shape.
  bool reset_classifier = false;
  // EfficientNetV2Impl::freeze_stages(k) after loading; < 0 freezes nothing.
  int freeze_stages = -1;
};

// Loads every backbone key of `path` into `model`. The file's classifier is loaded only when its
// shape matches the model's and reset_classifier is false; otherwise the model gets a fresh
// classifier for its num_classes. A missing/unexpected/mis-shaped backbone key is an error naming
// the file, its format, the key and both shapes ("importing x.pth (torch zip): 1 state_dict
// problem(s): shape mismatch for 'conv_stem.weight': model [8, 3, 3, 3] vs file [16, 3, 3, 3]").
Status LoadPretrained(model::EfficientNetV2Impl& model, const std::string& path,
                      const TransferOptions& options = {});

}  // namespace effnet::formats
