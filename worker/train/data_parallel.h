// The trainer's view of data parallelism. The trainer calls these hooks; worker/dist implements
// them (communicator + reducer), and a world of one uses SingleProcess. The model knows none of it.
// Every method returns its error, naming the rank and the operation; only main()s turn errors
// into exit codes.
//
// Note [same decisions on every rank]: every number that drives a decision (early stop, best
// checkpoint, NaN stop) is first reduced with AllReduceSum so all ranks decide identically and no
// rank waits alone in a collective the others skipped.
#pragma once

#include <torch/nn/module.h>

#include <memory>
#include <vector>

#include "common/status.h"

namespace effnet::train {

class DataParallel {
 public:
  virtual ~DataParallel() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Once, after the model is built and before the first step: checks that all ranks hold the same
  // parameter shapes, broadcasts parameters and buffers from rank 0, and installs gradient hooks.
  virtual Status Attach(torch::nn::Module& model) = 0;
  // Before each backward (resets bucket state for the step).
  virtual Status BeforeBackward() = 0;
  // After backward, before the optimiser step: waits until every bucket's all-reduce has finished
  // and gradients hold the average over ranks. Also returns what failed during backward (gradient
  // hooks cannot return an error; they record it).
  virtual Status AfterBackward() = 0;
  // Element-wise sum over ranks of a few host numbers (metrics, decisions). Blocking, with
  // deadline.
  virtual Result<std::vector<double>> AllReduceSum(const std::vector<double>& values) = 0;
  // Returns once every rank has called it (with deadline).
  virtual Status Barrier() = 0;
  // Whether backward runs this layer's code (gradient hooks that launch collectives): such a
  // backward cannot be captured as a CUDA graph (Note [CUDA graph step], graph_step.h).
  virtual bool HooksBackward() const = 0;
};

// World of one: hooks do nothing.
class SingleProcess final : public DataParallel {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  Status Attach(torch::nn::Module&) override { return Status::Ok(); }
  Status BeforeBackward() override { return Status::Ok(); }
  Status AfterBackward() override { return Status::Ok(); }
  Result<std::vector<double>> AllReduceSum(const std::vector<double>& v) override { return v; }
  Status Barrier() override { return Status::Ok(); }
  bool HooksBackward() const override { return false; }
};

}  // namespace effnet::train
