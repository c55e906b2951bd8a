// BatchNorm followed by SiLU in one pass over the activation, on the CPU.
//
// Note [fused BN+SiLU]: outside the convolutions, a CPU training step of EfficientNetV2 spends
// its time in BN and SiLU, each a separate pass over the activation forward and backward, and
// ATen's channels-last BN is slow for the few channels of the early stages (C = 16, 32 at
// 112 x 112 px). Fused:
//   - forward: one pass for the statistics, one for normalise + SiLU; the BN output is never
//     written (nor kept for the backward: it is recomputed from x);
//   - backward: one pass computes g = dy * silu'(bn(x)), keeps it in dx's memory and sums g and
//     g * (x - mean) per channel; a second turns g into dx in place.
//   - Training: batch statistics (biased variance to normalise, unbiased into the running
//     variance), momentum and num_batches_tracked as torch::nn::BatchNorm2d. Statistics add in
//     float over 128 rows and then in double, around a per-channel shift (the first row), so
//     E[x^2] - E[x]^2 does not cancel. Evaluation (nothing requires a gradient): silu(x * a + b)
//     with the running statistics.
//   - Applies to an NHWC (channels_last) float or bf16 CPU tensor with an affine BN that tracks
//     running statistics and has no replaced forward (sync BN, Note [replaceable BN forward]),
//     on x86 CPUs with AVX-512 and AVX512-BF16 (where bf16 and channels_last are on by default),
//     for tensors of at least 2^18 elements (below, the fixed cost wins: kFusedMinElements).
//     Anywhere else the caller runs the two ops as before.
//   - bf16 results differ from BN then SiLU by bf16 rounding: the BN output is not rounded here,
//     and sigmoid is computed to about 1e-4 (Note [bf16 sigmoid], bn_silu.cpp). Float results
//     match to float rounding.
#pragma once

#include <ATen/core/Tensor.h>

#include "worker/nn/batchnorm.h"

namespace effnet::nn {

// silu(bn(x)) fused as above, or an undefined tensor where the fused kernel does not apply (the
// caller then runs bn and SiLU itself).
at::Tensor FusedBatchNormSilu(BatchNorm2dImpl& bn, const at::Tensor& x);

}  // namespace effnet::nn
