// Optimisers: RMSpropTF (TF1 RMSProp semantics, a torch::optim::Optimizer with serialisable
// state), and the factory that builds Adam / AdamW / SGD-Nesterov / RMSpropTF with param groups
// (no weight decay on BN and bias unless asked).
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/serialize.h>
#include <torch/serialize/archive.h>

#include <memory>

#include "common/status.h"
#include "worker/train/config.h"

namespace torch::optim {

// Note [RMSpropTF]: TF1's RMSProp differs from torch.optim.RMSprop in three ways, all kept here
// (as in timm's RMSpropTF with lr_in_momentum=True):
//   1. epsilon is added INSIDE the square root: denom = sqrt(ms + eps);
//   2. the mean-square accumulator starts at ONES, not zeros;
//   3. the learning rate is applied inside the momentum buffer: buf = m*buf + lr*g/denom;
//      p -= buf (so a change of lr does not rescale the velocity already accumulated).
// Weight decay is coupled L2 (g += wd*p) unless decoupled_decay (p *= 1 - lr*wd).
struct RMSpropTFOptions : public OptimizerCloneableOptions<RMSpropTFOptions> {
  RMSpropTFOptions(double lr = 1e-2);  // NOLINT(google-explicit-constructor)
  TORCH_ARG(double, lr) = 1e-2;
  TORCH_ARG(double, alpha) = 0.9;  // decay (rho)
  TORCH_ARG(double, eps) = 1e-10;
  TORCH_ARG(double, weight_decay) = 0;
  TORCH_ARG(double, momentum) = 0;
  TORCH_ARG(bool, centered) = false;
  TORCH_ARG(bool, decoupled_decay) = false;
  TORCH_ARG(bool, lr_in_momentum) = true;

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }
};

struct RMSpropTFParamState : public OptimizerCloneableParamState<RMSpropTFParamState> {
  TORCH_ARG(int64_t, step) = 0;
  TORCH_ARG(torch::Tensor, square_avg);
  TORCH_ARG(torch::Tensor, momentum_buffer);
  TORCH_ARG(torch::Tensor, grad_avg);

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
};

class RMSpropTF : public Optimizer {
 public:
  explicit RMSpropTF(const std::vector<OptimizerParamGroup>& param_groups,
                     RMSpropTFOptions defaults = {});
  explicit RMSpropTF(std::vector<Tensor> params, RMSpropTFOptions defaults = {})
      : RMSpropTF({OptimizerParamGroup(std::move(params))}, std::move(defaults)) {}
  torch::Tensor step(LossClosure closure = nullptr) override;
  void save(serialize::OutputArchive& archive) const override;
  void load(serialize::InputArchive& archive) override;

 private:
  template <typename Self, typename Archive>
  static void serialize(Self& self, Archive& archive) {
    _TORCH_OPTIM_SERIALIZE_WITH_TEMPLATE_ARG(RMSpropTF);
  }
};

// Note [fused Adam]: Adam and AdamW with the same options, state (AdamParamState /
// AdamWParamState) and serialisation as torch::optim's, so checkpoints are interchangeable, whose
// step() updates each param group with one at::_fused_adam_ / _fused_adamw_ call (the kernel
// behind torch.optim.Adam(fused=True), on CPU and CUDA) instead of about ten kernels per tensor.
// On the study's B0 (243 tensors) a CPU step took 6.4 ms instead of 21 (1 thread). The same
// formulas; results agree with the per-tensor loop to float rounding (tests/train/test_optim_ema).
// The kernel pairs elements by memory order, so a gradient or state whose strides differ from its
// parameter's is laid out like the parameter first. The reducer's bucket slots had NCHW strides
// beside channels_last weights, and 2-rank training silently diverged (test_e2e_plain: 0.79);
// they now take the parameter's strides (worker/dist/reducer.cpp), and this stays as the guard.
// amsgrad, sparse gradients and mixed dtypes fall back to the per-tensor step.
//
// Note [Keras epsilon]: torch adds eps to the bias-corrected sqrt(v_hat); TF/Keras add it to
// sqrt(v) and bias-correct the step size instead (Kingma & Ba's "epsilon hat", keras/src/
// optimizers/adam.py). The two agree when torch's eps is Keras's eps / sqrt(1 - beta2^t), so
// UseKerasEpsilon(true) passes that eps per step count. In the first steps Keras's 1e-7 is
// then 3e-6 (t = 1) and still 1.7e-7 at t = 420: a parameter whose gradients are tiny takes
// a smaller step than torch's form gives it. Parameters unfrozen later have fewer steps, so the
// kernel is called once per distinct step count of a group.
template <typename Base, typename Options, typename State, bool kDecoupled>
class FusedAdamT : public Base {
 public:
  using Base::Base;
  torch::Tensor step(Optimizer::LossClosure closure = nullptr) override;
  void UseKerasEpsilon(bool on) { keras_epsilon_ = on; }

 private:
  bool keras_epsilon_ = false;
};
using FusedAdam = FusedAdamT<Adam, AdamOptions, AdamParamState, false>;
using FusedAdamW = FusedAdamT<AdamW, AdamWOptions, AdamWParamState, true>;

}  // namespace torch::optim

namespace effnet::train {

// Builds the configured optimiser over `model`'s trainable parameters. Two param groups: group 0
// with weight decay (params of dim > 1), group 1 without (dim <= 1: BN gamma/beta and biases),
// unless decay_bn_and_bias (then one group). `include_frozen`: also the parameters with
// requires_grad=false (they have no gradient, so steps skip them until they are unfrozen).
Result<std::unique_ptr<torch::optim::Optimizer>> MakeOptimizer(torch::nn::Module& model,
                                                               const OptimizerSection& c,
                                                               bool include_frozen = false);
// Sets the learning rate of every param group.
void SetLearningRate(torch::optim::Optimizer& opt, double lr);

}  // namespace effnet::train
