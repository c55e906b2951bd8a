// EfficientNetV2 (B0-B3, S, M, L) built by one builder from block tables
// (docs/efficientnetv2-reference.md). Knows nothing of distribution or data loading.
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
#include "worker/model/architecture.h"

namespace effnet::model {

class EfficientNetV2Impl : public torch::nn::Module {
 public:
  explicit EfficientNetV2Impl(const ModelConfig& config);
  // x: [N,3,H,W] float (any memory format); returns logits [N,num_classes].
  torch::Tensor forward(torch::Tensor x);
  // Features before pooling: [N,head_channels,H/32,W/32].
  torch::Tensor forward_features(torch::Tensor x);
  // The same, also appending each stage's output ([N,C_s,H_s,W_s], stage order) to `stage_outputs`;
  // all from one pass, so gradients reach every returned tensor (feature pyramids, attribution).
  torch::Tensor forward_features(torch::Tensor x, std::vector<torch::Tensor>* stage_outputs);
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
  // BN + SiLU through the fused kernel where it applies (Note [fused BN+SiLU],
  // worker/nn/bn_silu.h; on by default), or always as two LibTorch ops.
  void set_fused_kernels(bool on);
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
