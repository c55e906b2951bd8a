// Pretrained-weights importer (transfer learning as in the study): a timm tf_efficientnetv2_*
// state dict (a `.pth`/`.pt` torch zip or a `.safetensors` file, or the model.safetensors of one
// of our checkpoints) into an EfficientNetV2, with a new classifier when the class counts differ.
#pragma once

#include <string>

#include "common/status.h"
#include "worker/model/efficientnet.h"

namespace effnet::formats {

// What a pretrained file is, from its first bytes (never its name). Each format is one branch of
// DetectPretrainedFormat and of LoadPretrained.
enum class PretrainedFormat { kSafetensors, kTorchZip, kKeras };
const char* PretrainedFormatName(PretrainedFormat format);
// "PK\3\4": a zip, Keras (`.keras`: its first member is metadata.json, config.json or
// model.weights.h5) or else torch; the HDF5 signature: Keras (.weights.h5, legacy .h5); an 8-byte
// little-endian length followed by '{': safetensors. Anything else is an error naming the path and
// its first bytes.
Result<PretrainedFormat> DetectPretrainedFormat(const std::string& path);

struct TransferOptions {
  // Always re-initialise the classifier, even when the file's classifier has the right shape.
  bool reset_classifier = false;
  // EfficientNetV2Impl::freeze_stages(k) after loading; < 0 freezes nothing.
  int freeze_stages = -1;
  // The run's augment.normalize. A Keras file normalises inside its model (keras.h,
  // ReadKerasPreprocessing); when that differs from this, the import is refused naming the value
  // that reproduces Keras's outputs. "" = not checked.
  std::string normalize;
};

// Loads every backbone key of `path` into `model`. The file's classifier is loaded only when its
// shape matches the model's and reset_classifier is false; otherwise the model gets a fresh
// classifier drawn as model.head_init says (Note [head init], worker/model/architecture.h). A file
// of another architecture is refused naming the variant it looks like; a
// missing/unexpected/mis-shaped key is an error naming the file, its format, the key and both
// shapes ("importing x.pth (torch zip): 1 state_dict problem(s): shape mismatch for
// 'conv_stem.weight': model [8, 3, 3, 3] vs file [16, 3, 3, 3]").
Status LoadPretrained(model::EfficientNetV2Impl& model, const std::string& path,
                      const TransferOptions& options = {});

}  // namespace effnet::formats
