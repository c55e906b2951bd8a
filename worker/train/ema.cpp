#include "worker/train/ema.h"

#include <ATen/ATen.h>
#include <torch/types.h>

#include <algorithm>
#include <stdexcept>

namespace effnet::train {

std::vector<std::pair<std::string, torch::Tensor>> ModelEma::StateOf(torch::nn::Module& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& kv : model.named_parameters(true)) out.emplace_back(kv.key(), kv.value());
  for (auto& kv : model.named_buffers(true)) out.emplace_back(kv.key(), kv.value());
  return out;
}

ModelEma::ModelEma(torch::nn::Module& model, double decay, bool tf_warmup)
    : decay_(decay), tf_warmup_(tf_warmup) {
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : StateOf(model)) shadow_.emplace_back(name, t.detach().clone());
}

double ModelEma::DecayAt(int64_t t) const {
  if (!tf_warmup_) return decay_;
  return std::min(decay_, (1.0 + static_cast<double>(t)) / (10.0 + static_cast<double>(t)));
}

void ModelEma::Update(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  const double d = DecayAt(num_updates_);
  auto state = StateOf(model);
  if (state.size() != shadow_.size()) throw std::logic_error("ModelEma: model structure changed");
  for (size_t i = 0; i < state.size(); ++i) {
    auto& e = shadow_[i].second;
    const auto& m = state[i].second;
    if (e.is_floating_point()) {
      // d * ema + (1 - d) * m, as timm's ModelEmaV2.
      e.mul_(d).add_(m.detach().to(e.scalar_type()), 1.0 - d);
    } else {
      e.copy_(m);
    }
  }
  ++num_updates_;
}

void ModelEma::Swap(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  auto state = StateOf(model);
  for (size_t i = 0; i < state.size(); ++i) {
    auto tmp = state[i].second.detach().clone();
    state[i].second.detach().copy_(shadow_[i].second);
    shadow_[i].second.copy_(tmp);
  }
}

}  // namespace effnet::train
