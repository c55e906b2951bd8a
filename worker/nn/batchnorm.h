// A BatchNorm2d whose forward can be replaced at run time while the module keeps its parameters,
// buffers and state_dict names. Neutral ground between the model (which builds these) and
// data parallelism (which swaps in cross-rank statistics): neither knows the other.
//
// Note [replaceable BN forward]: LibTorch modules call their typed children directly and
// BatchNorm2dImpl::forward is not virtual, so a BN held as a typed member cannot be swapped from
// outside. Models that want to allow sync BN hold effnet::nn::BatchNorm2d instead; it is still a
// torch::nn::BatchNorm2dImpl (as<torch::nn::BatchNorm2dImpl>() finds it), so weight import,
// init and parameter counting see an ordinary BN.
#pragma once

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/pimpl.h>

#include <functional>
#include <utility>

namespace effnet::nn {

class BatchNorm2dImpl : public torch::nn::BatchNorm2dImpl {
 public:
  using ForwardFn = std::function<at::Tensor(torch::nn::BatchNorm2dImpl&, const at::Tensor&)>;
  using torch::nn::BatchNorm2dImpl::BatchNorm2dImpl;

  at::Tensor forward(const at::Tensor& x) {
    return forward_fn_ ? forward_fn_(*this, x) : torch::nn::BatchNorm2dImpl::forward(x);
  }
  // Replaces the forward (an empty function restores the plain one).
  void set_forward(ForwardFn fn) { forward_fn_ = std::move(fn); }
  bool has_custom_forward() const { return static_cast<bool>(forward_fn_); }

 private:
  ForwardFn forward_fn_;
};
TORCH_MODULE(BatchNorm2d);

}  // namespace effnet::nn
