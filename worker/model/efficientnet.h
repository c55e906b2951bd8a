// EfficientNetV2 (B0-B3, S, M, L) built by one builder from block tables
// (shared/reference/efficientnetv2.md). Knows nothing of distribution or data loading.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

namespace effnet::model {

enum class Padding { kTfSame, kSymmetric };

// Defaults reproduce timm's tf_efficientnetv2_* (with the reference dropout of the variant when
// dropout < 0).
struct ModelConfig {
  std::string variant = "b0";  // b0|b1|b2|b3|s|m|l
  int num_classes = 1000;
  double dropout = -1.0;       // < 0: the variant's reference rate (table 1.2)
  double drop_path = 0.2;      // linear over blocks: rate * idx / num_blocks
  double bn_momentum = 0.1;    // PyTorch convention
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
};

// Resolved architecture of a config: stem/head channels and per-stage blocks after rounding.
struct Architecture {
  int stem_channels = 0;
  int head_channels = 0;
  std::vector<StageInfo> stages;
  int num_blocks() const;
};
Architecture ResolveArchitecture(const ModelConfig& config);

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
  void freeze_stages(int k);

 private:
  ModelConfig config_;
  Architecture arch_;
  struct Parts;  // defined in efficientnet.cpp
  std::shared_ptr<Parts> parts_;
};
TORCH_MODULE(EfficientNetV2);

// Parameter count (trainable + frozen, excluding buffers).
int64_t CountParameters(torch::nn::Module& module);

}  // namespace effnet::model
