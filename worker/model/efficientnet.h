// EfficientNetV2 (B0-B3, S, M, L) built by one builder from block tables
// (shared/reference/efficientnetv2.md). Knows nothing of distribution or data loading.
//
// Note [timm names]: module names reproduce timm's tf_efficientnetv2_* state_dict keys exactly
// (conv_stem, bn1, blocks.<stage>.<i>.{conv,conv_exp,conv_pw,conv_dw,se.conv_reduce,se.conv_expand,
// conv_pwl,bn1..bn3}, conv_head, bn2, classifier), so importing timm weights is a name match
// (worker/formats/state_dict.h, worker/formats/pretrained.h).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace effnet::model {

enum class Padding { kTfSame, kSymmetric };

// Defaults reproduce timm's tf_efficientnetv2_* (with the reference dropout of the variant when
// dropout < 0).
struct ModelConfig {
  std::string variant = "b0";  // b0|b1|b2|b3|s|m|l
  int num_classes = 1000;
  double dropout = -1.0;     // < 0: the variant's reference rate (table 1.2)
  double drop_path = 0.2;    // linear over blocks: rate * idx / num_blocks
  double bn_momentum = 0.1;  // PyTorch convention
  double bn_eps = 1e-3;
  Padding padding = Padding::kTfSame;
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

class EfficientNetV2Impl : public torch::nn::Module {
 public:
  explicit EfficientNetV2Impl(const ModelConfig& config);
  // x: [N,3,H,W] float (any memory format); returns logits [N,num_classes].
  torch::Tensor forward(torch::Tensor x);
  // Features before pooling: [N,head_channels,H/32,W/32].
  torch::Tensor forward_features(torch::Tensor x);
  // Progressive learning changes the classifier dropout per stage.
  void set_dropout(double rate);
  double dropout() const;
  const ModelConfig& config() const { return config_; }
  const Architecture& architecture() const { return arch_; }
  // Replace the classifier with a freshly initialised one for `num_classes` (transfer learning).
  void reset_classifier(int num_classes);
  // Freeze stem + the first `k` stages (requires_grad=false, BN kept in eval mode).
  // k < 0 unfreezes everything; k == 0 freezes the stem only; k == number of stages + 1 also
  // freezes conv_head/bn2 (only the classifier trains). Throws StatusError on k > stages + 1.
  void freeze_stages(int k);
  int frozen_stages() const { return frozen_stages_; }
  // Note [frozen BN stays in eval]: train(true) puts every module in training mode, then puts the
  // BNs of frozen parts back in eval mode so their running statistics never move.
  void train(bool on = true) override;
  // Converts every 4-D weight to `format` in place (channels_last for GPU training). Parameters
  // keep their identity (set_data), so optimisers and gradient hooks made before stay valid.
  void set_memory_format(c10::MemoryFormat format);
  // Re-run the reference initialisation (goog init) on every parameter; BN stats reset.
  void reset_parameters();

 private:
  ModelConfig config_;
  Architecture arch_;
  int frozen_stages_ = -1;
  struct Parts;  // defined in efficientnet.cpp
  std::shared_ptr<Parts> parts_;
};
TORCH_MODULE(EfficientNetV2);

// Parameter count (trainable + frozen, excluding buffers).
int64_t CountParameters(torch::nn::Module& module);

}  // namespace effnet::model
