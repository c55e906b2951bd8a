#include "worker/train/optim.h"

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <map>

namespace torch::optim {

RMSpropTFOptions::RMSpropTFOptions(double lr) : lr_(lr) {}

void RMSpropTFOptions::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(lr);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(alpha);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(eps);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(weight_decay);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(momentum);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(centered);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(decoupled_decay);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(lr_in_momentum);
}

void RMSpropTFOptions::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, lr);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, alpha);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, eps);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, weight_decay);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, momentum);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, centered);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, decoupled_decay);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, lr_in_momentum);
}

void RMSpropTFParamState::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(step);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(square_avg);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(momentum_buffer);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(grad_avg);
}

void RMSpropTFParamState::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(int64_t, step);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(Tensor, square_avg);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(Tensor, momentum_buffer);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(Tensor, grad_avg);
}

RMSpropTF::RMSpropTF(const std::vector<OptimizerParamGroup>& param_groups,
                     RMSpropTFOptions defaults)
    : Optimizer(param_groups, std::make_unique<RMSpropTFOptions>(defaults)) {
  TORCH_CHECK(defaults.lr() >= 0, "RMSpropTF: invalid learning rate: ", defaults.lr());
  TORCH_CHECK(defaults.eps() >= 0, "RMSpropTF: invalid epsilon: ", defaults.eps());
  TORCH_CHECK(defaults.momentum() >= 0, "RMSpropTF: invalid momentum: ", defaults.momentum());
  TORCH_CHECK(defaults.weight_decay() >= 0,
              "RMSpropTF: invalid weight_decay: ", defaults.weight_decay());
  TORCH_CHECK(defaults.alpha() >= 0, "RMSpropTF: invalid alpha: ", defaults.alpha());
}

torch::Tensor RMSpropTF::step(LossClosure closure) {
  NoGradGuard no_grad;
  Tensor loss = {};
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups_) {
    auto& o = static_cast<RMSpropTFOptions&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto grad = p.grad();
      TORCH_CHECK(!grad.is_sparse(), "RMSpropTF does not support sparse gradients");
      auto it = state_.find(p.unsafeGetTensorImpl());
      if (it == state_.end()) {
        auto st = std::make_unique<RMSpropTFParamState>();
        st->square_avg(torch::ones_like(p, MemoryFormat::Preserve));  // Note [RMSpropTF] 2.
        if (o.momentum() > 0) st->momentum_buffer(torch::zeros_like(p, MemoryFormat::Preserve));
        if (o.centered()) st->grad_avg(torch::zeros_like(p, MemoryFormat::Preserve));
        state_[p.unsafeGetTensorImpl()] = std::move(st);
        it = state_.find(p.unsafeGetTensorImpl());
      }
      auto& st = static_cast<RMSpropTFParamState&>(*it->second);
      st.step(st.step() + 1);
      const double lr = o.lr(), one_minus_alpha = 1.0 - o.alpha();
      if (o.weight_decay() != 0) {
        if (o.decoupled_decay()) {
          p.mul_(1.0 - lr * o.weight_decay());
        } else {
          grad = grad.add(p, o.weight_decay());
        }
      }
      auto square_avg = st.square_avg();
      square_avg.add_(grad.pow(2) - square_avg, one_minus_alpha);
      Tensor avg;
      if (o.centered()) {
        auto grad_avg = st.grad_avg();
        grad_avg.add_(grad - grad_avg, one_minus_alpha);
        avg = square_avg.addcmul(grad_avg, grad_avg, -1).add(o.eps()).sqrt_();  // 1.
      } else {
        avg = square_avg.add(o.eps()).sqrt_();  // Note [RMSpropTF] 1.
      }
      if (o.momentum() > 0) {
        auto buf = st.momentum_buffer();
        if (o.lr_in_momentum()) {  // Note [RMSpropTF] 3.
          buf.mul_(o.momentum()).addcdiv_(grad, avg, lr);
          p.add_(-buf);
        } else {
          buf.mul_(o.momentum()).addcdiv_(grad, avg);
          p.add_(buf, -lr);
        }
      } else {
        p.addcdiv_(grad, avg, -lr);
      }
    }
  }
  return loss;
}

void RMSpropTF::save(serialize::OutputArchive& archive) const { serialize(*this, archive); }

void RMSpropTF::load(serialize::InputArchive& archive) { serialize(*this, archive); }

template <typename Base, typename Options, typename State, bool kDecoupled>
torch::Tensor FusedAdamT<Base, Options, State, kDecoupled>::step(Optimizer::LossClosure closure) {
  // The per-tensor step where the fused kernel does not apply (Note [fused Adam]).
  auto per_tensor = [&] {
    TORCH_CHECK(!keras_epsilon_,
                "Adam with Keras's epsilon runs only the fused step: amsgrad, sparse gradients and "
                "mixed dtypes need optimizer.eps_form: torch");
    return Base::step(std::move(closure));
  };
  for (const auto& group : this->param_groups()) {
    const auto& o = static_cast<const Options&>(group.options());
    if (o.amsgrad()) return per_tensor();
    for (const auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      if (p.grad().is_sparse() || p.scalar_type() != group.params()[0].scalar_type() ||
          p.grad().scalar_type() != p.scalar_type()) {
        return per_tensor();
      }
    }
  }
  NoGradGuard no_grad;
  Tensor loss = {};
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : this->param_groups()) {
    const auto& o = static_cast<const Options&>(group.options());
    struct Call {
      std::vector<Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
      Tensor step;  // the kernel only reads it, so one tensor serves every parameter
    };
    std::map<int64_t, Call> by_step;  // Note [Keras epsilon]
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto it = this->state_.find(p.unsafeGetTensorImpl());
      if (it == this->state_.end()) {
        auto fresh = std::make_unique<State>();
        fresh->step(0);
        fresh->exp_avg(torch::zeros_like(p, MemoryFormat::Preserve));
        fresh->exp_avg_sq(torch::zeros_like(p, MemoryFormat::Preserve));
        it = this->state_.emplace(p.unsafeGetTensorImpl(), std::move(fresh)).first;
      }
      auto& st = static_cast<State&>(*it->second);
      st.step(st.step() + 1);
      // The kernel walks every tensor of a parameter in memory order, so all must have its strides
      // (a gradient set by other code, or a state loaded from a checkpoint, may not).
      auto like_param = [&p](const Tensor& t) {
        return t.strides() == p.strides() ? t : at::empty_like(p).copy_(t);
      };
      if (st.exp_avg().strides() != p.strides()) st.exp_avg(like_param(st.exp_avg()));
      if (st.exp_avg_sq().strides() != p.strides()) st.exp_avg_sq(like_param(st.exp_avg_sq()));
      auto& call = by_step[st.step()];
      if (!call.step.defined()) {
        // The kernel reads the step (already incremented) from a float tensor.
        call.step = torch::full({}, static_cast<double>(st.step()),
                                TensorOptions().dtype(kFloat).device(p.device()));
      }
      call.params.push_back(p);
      call.grads.push_back(like_param(p.grad()));
      call.exp_avgs.push_back(st.exp_avg());
      call.exp_avg_sqs.push_back(st.exp_avg_sq());
      call.steps.push_back(call.step);
    }
    const auto [beta1, beta2] = o.betas();
    for (auto& [step, c] : by_step) {
      const double eps = keras_epsilon_
                             ? o.eps() / std::sqrt(1.0 - std::pow(beta2, static_cast<double>(step)))
                             : o.eps();
      if constexpr (kDecoupled) {
        at::_fused_adamw_(c.params, c.grads, c.exp_avgs, c.exp_avg_sqs, {}, c.steps, o.lr(), beta1,
                          beta2, o.weight_decay(), eps, /*amsgrad=*/false, /*maximize=*/false);
      } else {
        at::_fused_adam_(c.params, c.grads, c.exp_avgs, c.exp_avg_sqs, {}, c.steps, o.lr(), beta1,
                         beta2, o.weight_decay(), eps, /*amsgrad=*/false, /*maximize=*/false);
      }
    }
  }
  return loss;
}

template class FusedAdamT<Adam, AdamOptions, AdamParamState, false>;
template class FusedAdamT<AdamW, AdamWOptions, AdamWParamState, true>;

}  // namespace torch::optim

namespace effnet::train {

Result<std::unique_ptr<torch::optim::Optimizer>> MakeOptimizer(torch::nn::Module& model,
                                                               const OptimizerSection& c,
                                                               bool include_frozen) {
  std::vector<torch::Tensor> decay, no_decay;
  for (auto& p : model.parameters(/*recurse=*/true)) {
    if (!p.requires_grad() && !include_frozen) continue;
    (c.decay_bn_and_bias || p.dim() > 1 ? decay : no_decay).push_back(p);
  }
  if (decay.empty() && no_decay.empty()) {
    return InvalidArgument("optimizer: the model has no trainable parameters");
  }
  // Param groups keep their own options; the no-decay group is a copy with weight_decay 0.
  auto groups = [&](auto options) {
    std::vector<torch::optim::OptimizerParamGroup> g;
    auto with = options;
    with.weight_decay(c.weight_decay);
    auto without = options;
    without.weight_decay(0.0);
    if (!decay.empty()) g.emplace_back(decay, std::make_unique<decltype(options)>(with));
    if (!no_decay.empty()) g.emplace_back(no_decay, std::make_unique<decltype(options)>(without));
    return g;
  };
  std::unique_ptr<torch::optim::Optimizer> opt;
  if (c.name == "adam" || c.name == "adamw") {
    if (c.name == "adam") {
      auto o = torch::optim::AdamOptions(c.lr).betas({c.beta1, c.beta2}).eps(c.eps);
      auto adam = std::make_unique<torch::optim::FusedAdam>(groups(o), o);
      adam->UseKerasEpsilon(c.eps_form == "keras");
      opt = std::move(adam);
    } else {
      auto o = torch::optim::AdamWOptions(c.lr).betas({c.beta1, c.beta2}).eps(c.eps);
      auto adamw = std::make_unique<torch::optim::FusedAdamW>(groups(o), o);
      adamw->UseKerasEpsilon(c.eps_form == "keras");
      opt = std::move(adamw);
    }
  } else if (c.name == "sgd") {
    auto o =
        torch::optim::SGDOptions(c.lr).momentum(c.momentum).nesterov(c.nesterov && c.momentum > 0);
    opt = std::make_unique<torch::optim::SGD>(groups(o), o);
  } else if (c.name == "rmsproptf") {
    auto o = torch::optim::RMSpropTFOptions(c.lr)
                 .alpha(c.rmsprop_decay)
                 .eps(c.eps)
                 .momentum(c.momentum)
                 .lr_in_momentum(true);
    opt = std::make_unique<torch::optim::RMSpropTF>(groups(o), o);
  } else {
    return InvalidArgument("optimizer.name: expected adam|adamw|sgd|rmsproptf, got '" + c.name +
                           "'");
  }
  return opt;
}

void SetLearningRate(torch::optim::Optimizer& opt, double lr) {
  for (auto& g : opt.param_groups()) g.options().set_lr(lr);
}

}  // namespace effnet::train
