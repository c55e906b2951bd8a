// Keras weights importer: EfficientNetV2 weights as keras.applications builds them
// (EfficientNetV2B0..B3, S, M, L), read with the HDF5 C API from
// - Keras 3 `.weights.h5` (model.save_weights): layers stored by class name and position
//   (`layers/conv2d_3/vars/0`), mapped to our modules by keras.applications' construction order;
// - Keras 3 `.keras` (a zip holding that same `model.weights.h5`, read in memory);
// - legacy Keras 2 / TF 2.x / Keras 3 `.h5` (model.save(...h5) or save_weights(...h5)): layers
//   stored by name (`model_weights/stem_conv/stem_conv/kernel:0`).
// The result is a timm-keyed state dict for our EfficientNetV2 (worker/formats/README.md has the
// mapping). Nothing here loads it into a model or decides the classifier: see pretrained.h.
#pragma once

#include <string>

#include "common/status.h"
#include "worker/formats/state_dict.h"
#include "worker/model/architecture.h"

namespace effnet::formats {

// The weights of `path` (any of the three Keras formats, detected from the content) as timm keys
// and layouts for `expect` (variant, extra_width/extra_depth; num_classes is not checked): the
// backbone always, the classifier when the file has exactly one Dense layer on the head's
// features (any class count). BN running_var is Keras's moving_variance (both use eps 1e-3).
// Errors name the file, its format, each Keras layer/weight with the expected and found shape,
// and the variant the file matches when it is not `expect.variant`.
Result<StateDict> ReadKerasWeights(const std::string& path, const model::ModelConfig& expect);

// The built-in preprocessing of a Keras EfficientNetV2 as our augment.normalize
// (worker/data/augment_config.h), which then reproduces Keras's outputs on 0..255 pixels.
struct KerasPreprocessing {
  std::string normalize;  // "imagenet" | "inception" | "none"
  std::string source;     // where it was read: "model config" or "keras.applications default"
};

// keras.applications with include_preprocessing=True (its default): B0..B3 apply Rescaling(1/255)
// and Normalization(ImageNet mean, std^2) = "imagenet"; S/M/L apply Rescaling(1/128, offset=-1) =
// (x-128)/128 = "inception". Throws StatusError on an unknown variant.
KerasPreprocessing KerasDefaultPreprocessing(const std::string& variant);

// From the Rescaling/Normalization layers of the model config stored in `path` (.keras, legacy
// model.save .h5): "none" when it has neither. Files without a config (.weights.h5, save_weights)
// give KerasDefaultPreprocessing(variant). A combination with no augment.normalize equivalent is
// an InvalidArgument error naming the layers.
Result<KerasPreprocessing> ReadKerasPreprocessing(const std::string& path,
                                                  const std::string& variant);

}  // namespace effnet::formats
