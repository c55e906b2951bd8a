// Exponential moving average of the model's weights AND BatchNorm buffers (running mean/var),
// with the TF warmup of the decay: decay_t = min(decay, (1 + t) / (10 + t)), t = updates so far.
#pragma once

#include <torch/nn/module.h>

#include <string>
#include <utility>
#include <vector>

namespace effnet::train {

class ModelEma {
 public:
  ModelEma(torch::nn::Module& model, double decay, bool tf_warmup);
  // One update after an optimiser step: ema = d * ema + (1 - d) * model for floating tensors;
  // integer buffers (num_batches_tracked) are copied.
  void Update(torch::nn::Module& model);
  double DecayAt(int64_t t) const;
  int64_t num_updates() const { return num_updates_; }

  // Swaps the model's tensors with the EMA's (call twice to swap back): evaluation with EMA
  // weights without a second model instance.
  void Swap(torch::nn::Module& model);

  // The averaged tensors under the model's names (parameters, then buffers). The handles share
  // storage with the EMA: checkpoints (worker/formats/checkpoint.h) save them and load into them.
  const std::vector<std::pair<std::string, torch::Tensor>>& tensors() const { return shadow_; }
  // After loading tensors(): the update count of the saved EMA (it drives the TF warmup).
  void set_num_updates(int64_t n) { num_updates_ = n; }

 private:
  static std::vector<std::pair<std::string, torch::Tensor>> StateOf(torch::nn::Module& model);
  double decay_;
  bool tf_warmup_;
  int64_t num_updates_ = 0;
  std::vector<std::pair<std::string, torch::Tensor>> shadow_;
};

}  // namespace effnet::train
