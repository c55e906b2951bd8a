// The mean over height and width of an NCHW tensor (keepdim), with a backward that does not
// materialise its gradient.
//
// Note [SE mean backward]: a squeeze-excite input feeds both the spatial mean and the final
// multiply, so autograd adds two gradients for it. mean's own backward divides the expanded
// gradient into a new activation-sized tensor (in NCHW order even for a channels_last input)
// before that add. Here the gradient stays an expanded (stride 0) view of g / (h * w), the same
// numbers, and autograd adds it in place to the multiply's gradient. The B0 training step on the
// CPU (bf16, channels_last, bench_model_step) went from 250 to 227 ms. The forward is x.mean
// itself.
#pragma once

#include <ATen/core/Tensor.h>

namespace effnet::nn {

// x.mean({2, 3}, keepdim = true), with the backward above where x requires a gradient.
at::Tensor SpatialMean(const at::Tensor& x);

}  // namespace effnet::nn
