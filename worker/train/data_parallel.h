// The trainer's view of data parallelism. The trainer calls these hooks; worker/dist implements
// them (communicator + reducer), and a world of one uses SingleProcess. The model knows none of it.
//
// Note [same decisions on every rank]: every number that drives a decision (early stop, best
// checkpoint, NaN stop) is first reduced with AllReduceSum so all ranks decide identically and no
// rank waits alone in a collective the others skipped.
#pragma once

#include <torch/nn/module.h>

#include <memory>
#include <vector>

namespace effnet::train {

class DataParallel {
 public:
  virtual ~DataParallel() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Once, after the model is built and before the first step: checks that all ranks hold the same
  // parameter shapes, broadcasts parameters and buffers from rank 0, and installs gradient hooks.
  virtual void Attach(torch::nn::Module& model) = 0;
  // Before each backward (resets bucket state for the step).
  virtual void BeforeBackward() = 0;
  // After backward, before the optimiser step: waits until every bucket's all-reduce has finished
  // and gradients hold the average over ranks.
  virtual void AfterBackward() = 0;
  // Element-wise sum over ranks of a few host numbers (metrics, decisions). Blocking, with
  // deadline.
  virtual std::vector<double> AllReduceSum(const std::vector<double>& values) = 0;
  // Broadcast host bytes from rank 0 (e.g. a resumed RNG/sampler state).
  virtual void Barrier() = 0;
};

// World of one: hooks do nothing.
class SingleProcess final : public DataParallel {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  void Attach(torch::nn::Module&) override {}
  void BeforeBackward() override {}
  void AfterBackward() override {}
  std::vector<double> AllReduceSum(const std::vector<double>& v) override { return v; }
  void Barrier() override {}
};

}  // namespace effnet::train
