// Small deterministic models and data for the dist tests.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "worker/dist/dist_data_parallel.h"

namespace effnet::dist::testing {

// conv + BN + conv + BN + pool + linear, all reachable through a Sequential (sync BN convertible).
inline torch::nn::Sequential SmallConvNet(uint64_t seed, int classes = 5) {
  torch::manual_seed(seed);
  namespace nn = torch::nn;
  return nn::Sequential(
      nn::Conv2d(nn::Conv2dOptions(3, 8, 3).padding(1).bias(false)), nn::BatchNorm2d(8), nn::ReLU(),
      nn::Conv2d(nn::Conv2dOptions(8, 16, 3).stride(2).padding(1).bias(false)), nn::BatchNorm2d(16),
      nn::ReLU(), nn::AdaptiveAvgPool2d(1), nn::Flatten(), nn::Linear(16, classes));
}

// Two branches registered and used so that the gradient-ready order differs by rank.
struct TwoBranchImpl : torch::nn::Module {
  explicit TwoBranchImpl(bool swap) : swap(swap) {
    torch::manual_seed(11);
    stem = register_module("stem", torch::nn::Linear(6, 8));
    a = register_module("a", torch::nn::Linear(8, 4));
    b = register_module("b", torch::nn::Linear(8, 4));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = torch::relu(stem->forward(x));
    if (swap) {
      auto yb = b->forward(h);
      return yb + a->forward(h);
    }
    auto ya = a->forward(h);
    return ya + b->forward(h);
  }
  bool swap;
  torch::nn::Linear stem{nullptr}, a{nullptr}, b{nullptr};
};
TORCH_MODULE(TwoBranch);

struct Batch {
  torch::Tensor x, y;
};

// The same global batch on every rank (seeded); a rank takes rows [rank*b, (rank+1)*b).
inline Batch GlobalBatch(int64_t step, int64_t n, int classes = 5, int hw = 8) {
  torch::manual_seed(1000 + step);
  Batch b;
  b.x = torch::randn({n, 3, hw, hw}) * 2.0 + 0.5;
  b.y = torch::randint(0, classes, {n}, torch::kLong);
  return b;
}

// GlobalBatch of steps 0..steps-1, made up front (GlobalBatch seeds the global generator, which
// threads of in-process ranks must not race on).
inline std::vector<Batch> GlobalBatches(int steps, int64_t n) {
  std::vector<Batch> batches;
  for (int s = 0; s < steps; ++s) batches.push_back(GlobalBatch(s, n));
  return batches;
}

// Rows [rank * b, (rank + 1) * b) of a global batch.
inline Batch Slice(const Batch& global, int rank, int64_t b) {
  return {global.x.narrow(0, rank * b, b), global.y.narrow(0, rank * b, b)};
}

// SGD (momentum, weight decay) on this rank's slice of each global batch; `dp` may be null (one
// process, the reference).
inline void SgdSteps(torch::nn::Sequential model, DistDataParallel* dp,
                     const std::vector<Batch>& batches, int rank, int world) {
  torch::optim::SGD opt(model->parameters(),
                        torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(1e-4));
  for (const Batch& global : batches) {
    const Batch local = Slice(global, rank, global.x.size(0) / world);
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model->forward(local.x), local.y);
    if (dp) ASSERT_TRUE(dp->BeforeBackward().ok());
    loss.backward();
    if (dp) {
      const Status s = dp->AfterBackward();
      ASSERT_TRUE(s.ok()) << s.ToString();
    }
    opt.step();
  }
}

inline double MaxAbsDiff(torch::nn::Module& a, torch::nn::Module& b) {
  double d = 0;
  auto pa = a.named_parameters(true), pb = b.named_parameters(true);
  for (const auto& item : pa) {
    d = std::max(d, (item.value() - pb[item.key()]).abs().max().item<double>());
  }
  auto ba = a.named_buffers(true), bb = b.named_buffers(true);
  for (const auto& item : ba) {
    d = std::max(d, (item.value().to(torch::kDouble) - bb[item.key()].to(torch::kDouble))
                        .abs()
                        .max()
                        .item<double>());
  }
  return d;
}

}  // namespace effnet::dist::testing
