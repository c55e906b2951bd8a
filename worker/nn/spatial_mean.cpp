#include "worker/nn/spatial_mean.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <vector>

namespace effnet::nn {
namespace {

struct SpatialMeanFn : public torch::autograd::Function<SpatialMeanFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x) {
    ctx->saved_data["sizes"] = x.sizes().vec();
    return x.mean({2, 3}, /*keepdim=*/true);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const std::vector<int64_t> sizes = ctx->saved_data["sizes"].toIntVector();
    return {(grads[0] / static_cast<double>(sizes[2] * sizes[3])).expand(sizes)};
  }
};

}  // namespace

at::Tensor SpatialMean(const at::Tensor& x) {
  if (!x.requires_grad()) return x.mean({2, 3}, /*keepdim=*/true);
  return SpatialMeanFn::apply(x);
}

}  // namespace effnet::nn
