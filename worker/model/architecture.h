// The EfficientNetV2 family as data: the variant table (block tables 1.1, multipliers, dropout and
// eval size 1.2 of docs/efficientnetv2-reference.md), decoded once into an Architecture, and
// the model's config. No Torch here: the config parser and the coordinator include it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace effnet::model {

enum class Padding { kTfSame, kSymmetric };
// The spellings of Padding in configs and checkpoints, in enum order: "tf_same", "symmetric".
const std::vector<std::string>& PaddingNames();

// Note [head init]: how a new classifier is drawn (from scratch, or a new head on pretrained
// weights). kGlorot is a Keras Dense layer's init, U(+-sqrt(6 / (fan_in + fan_out))) (about
// +-0.068 for 1280 -> 7), as the study's Keras head was; kReference is the official/timm
// U(+-1/sqrt(num_classes)) (+-0.38 for 7 classes), whose large initial logits made the study's
// recipe start at a loss of 4 and its validation loss jump (docs/training.md, "Learning as Keras
// learns"). Biases start at 0 either way.
enum class HeadInit { kGlorot, kReference };
// The spellings of HeadInit in configs, in enum order: "glorot", "reference".
const std::vector<std::string>& HeadInitNames();

// Note [conv init]: how convolution kernels are drawn from scratch. kReference is the official
// EfficientNetV2's and timm's Normal(0, sqrt(2 / fan_out)), fan_out = k*k*out/groups. kKeras is
// keras.applications' VarianceScaling(2.0, "fan_out", "truncated_normal"): the same variance,
// from a normal cut at 2 of its standard deviations (sd = sqrt(2 / fan_out) / 0.8796, so no
// weight is beyond 2.27 sqrt(2 / fan_out)), as the study's Keras models started. Pretrained
// weights replace either; biases (squeeze-excite) start at 0.
enum class ConvInit { kReference, kKeras };
// The spellings of ConvInit in configs, in enum order: "reference", "keras".
const std::vector<std::string>& ConvInitNames();

// Defaults reproduce timm's tf_efficientnetv2_* (with the reference dropout of the variant when
// dropout < 0). Also the `model:` section of the training config (worker/train/config.cpp), which
// documents each field; training sets dropout per progressive stage.
struct ModelConfig {
  std::string variant = "b0";  // one of KnownVariants()
  int num_classes = 0;         // >= 1 to build; in a training config 0 = from the data file
  double dropout = -1.0;       // < 0: the variant's reference rate (table 1.2)
  double drop_path = 0.2;      // linear over blocks: rate * idx / num_blocks
  double bn_momentum = 0.1;    // PyTorch convention
  double bn_eps = 1e-3;
  Padding padding = Padding::kTfSame;
  HeadInit head_init = HeadInit::kGlorot;     // Note [head init]
  ConvInit conv_init = ConvInit::kReference;  // Note [conv init]
  // Extra multipliers on top of the variant's, for reduced models in tests (1.0 = exact).
  double extra_width = 1.0;
  double extra_depth = 1.0;
};

struct StageInfo {
  std::string block_type;  // "cn", "er", "ir"
  int out_channels = 0;
  int repeats = 0;
  int stride = 1;
  int expansion = 1;  // mid = in * expansion ("cn": 1, no mid)
  int kernel = 3;
  bool se = false;  // squeeze-excite with rd = block input channels * 0.25
};

// Resolved architecture of a config: stem/head channels and per-stage blocks after rounding.
struct Architecture {
  int stem_channels = 0;
  int head_channels = 0;
  std::vector<StageInfo> stages;
  int num_blocks() const;
};
// Throws StatusError(InvalidArgument) on an unknown variant or a non-positive multiplier/count.
Architecture ResolveArchitecture(const ModelConfig& config);
// Checks a config without building anything (variant, classes, rates, multipliers).
Status ValidateConfig(const ModelConfig& config);

// The variants this builder knows, in order: b0 b1 b2 b3 s m l.
const std::vector<std::string>& KnownVariants();
// Reference dropout (table 1.2) and official eval image size of a variant; throws on unknown.
double ReferenceDropout(const std::string& variant);
int ReferenceEvalImageSize(const std::string& variant);

// Multiply-adds of one forward pass at image_size x image_size, counted analytically from the
// architecture: every conv (incl. SE convs on the pooled 1x1 map) and the classifier Linear.
// Pooling, BN, activations and the SE multiply are not counted (the usual "MACs" convention).
int64_t CountMacs(const ModelConfig& config, int image_size);
// Parameter count derived from the architecture alone (no module built); equals
// CountParameters(EfficientNetV2(config)).
int64_t CountParametersAnalytic(const ModelConfig& config);

// Rounding rules shared by the analytic counts and the module builder (reference 1.3-1.5).
// timm make_divisible(v, 8) for expanded widths (a no-op for multiples of 8).
int MakeDivisible(int v);
// Squeeze-excite reduced width: from the BLOCK INPUT channels.
int SeReduced(int in_channels);
// Output size of a stride-s 'SAME' convolution.
int OutSize(int x, int stride);

}  // namespace effnet::model
