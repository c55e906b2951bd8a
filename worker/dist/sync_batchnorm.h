// Cross-rank (synchronised) BatchNorm over a Communicator, implemented with autograd.
//
// Note [sync BN math]: in training mode the forward all-reduces per-channel [sum, sum of squares,
// count] so every rank normalises with the statistics of the global batch (running stats use
// the unbiased global variance); the backward all-reduces per-channel [sum dy, sum dy*xhat] and
// forms the input gradient of the global batch. Weight and bias gradients stay local sums: the
// Reducer averages them like any gradient, which equals one process on the global batch.
// Every call is a collective: all ranks must run the same BN layers in the same order.
//
// Note [converting BatchNorm2d]: LibTorch modules call their typed children directly, so a BN
// can only be swapped where the model reaches it through a Sequential (an AnyModule slot) or
// where it is an effnet::nn::BatchNorm2d (worker/nn/batchnorm.h, whose forward is replaceable:
// EfficientNetV2 uses it). ConvertSyncBatchNorm converts those and reports any other
// BatchNorm2d as an error naming it.
// The SyncBatchNorm2d shares the original weight, bias and buffers (same tensors, same names),
// so optimisers and checkpoints are unaffected.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/pimpl.h>

#include <memory>

#include "common/status.h"
#include "worker/dist/communicator.h"

namespace effnet::dist {

// Functional sync BN (training mode, NCHW or NHWC memory format, any float dtype; statistics in
// fp32). `running_*` are updated in place when defined.
at::Tensor SyncBatchNormTrain(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                              const at::Tensor& running_mean, const at::Tensor& running_var,
                              double momentum, double eps, std::shared_ptr<Communicator> comm);

class SyncBatchNorm2dImpl : public torch::nn::Module {
 public:
  // Takes over `bn`'s tensors (see Note [converting BatchNorm2d]).
  SyncBatchNorm2dImpl(const torch::nn::BatchNorm2dImpl& bn, std::shared_ptr<Communicator> comm);
  at::Tensor forward(const at::Tensor& x);

  at::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  torch::nn::BatchNormOptions options_;
  std::shared_ptr<Communicator> comm_;
};
TORCH_MODULE(SyncBatchNorm2d);

// Converts every BatchNorm2d reachable through a Sequential and every effnet::nn::BatchNorm2d;
// returns how many were converted.
// FailedPrecondition (naming them) if some BatchNorm2d is held any other way.
Result<int> ConvertSyncBatchNorm(torch::nn::Module& module, std::shared_ptr<Communicator> comm);

}  // namespace effnet::dist
