// Sync BatchNorm: see Note [sync BN math] and Note [converting BatchNorm2d] (sync_batchnorm.h).
#include "worker/dist/sync_batchnorm.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>  // for torch::autograd::Function
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/sequential.h>

#include <string>
#include <vector>

#include "worker/nn/batchnorm.h"

namespace effnet::dist {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor PerChannel(const at::Tensor& v, int64_t dim) {
  std::vector<int64_t> shape(dim, 1);
  shape[1] = v.numel();
  return v.view(shape);
}

std::vector<int64_t> ReduceDims(const at::Tensor& x) {
  std::vector<int64_t> dims{0};
  for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  return dims;
}

void AllReduceOrThrow(Communicator& comm, const at::Tensor& t, const char* what) {
  Status s = comm.AllReduce(t, ReduceOp::kSum);
  if (!s.ok()) throw StatusError(s.WithContext(std::string("sync batchnorm ") + what));
}

struct SyncBNFunction : public torch::autograd::Function<SyncBNFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias, const at::Tensor& running_mean,
                            const at::Tensor& running_var, double momentum, double eps,
                            Communicator* comm) {
    const int64_t c = x.size(1);
    const auto dims = ReduceDims(x);
    const at::Tensor xf = x.to(at::kFloat);
    // Local statistics accumulated in double, all-reduced as one packed tensor.
    at::Tensor packed = at::cat(
        {xf.sum(dims, false, at::kDouble), (xf * xf).sum(dims, false, at::kDouble),
         at::full({1}, static_cast<double>(x.numel() / c), xf.options().dtype(at::kDouble))});
    if (!x.is_cpu() && comm->backend() == "mpi") packed = packed.cpu();
    AllReduceOrThrow(*comm, packed, "forward statistics");
    packed = packed.to(x.device());
    const at::Tensor n = packed.narrow(0, 2 * c, 1);
    const at::Tensor mean = packed.narrow(0, 0, c) / n;
    const at::Tensor var = (packed.narrow(0, c, c) / n - mean * mean).clamp_min(0.0);
    const at::Tensor invstd = (var + eps).rsqrt();
    const double count = n.item<double>();
    if (running_mean.defined()) {
      running_mean.mul_(1.0 - momentum).add_(mean.to(running_mean.scalar_type()), momentum);
      running_var.mul_(1.0 - momentum)
          .add_((var * (count / std::max(count - 1.0, 1.0))).to(running_var.scalar_type()),
                momentum);
    }
    const at::Tensor mean_f = mean.to(at::kFloat), invstd_f = invstd.to(at::kFloat);
    const at::Tensor w = weight.defined() ? weight.to(at::kFloat) : at::ones_like(mean_f);
    at::Tensor y = (xf - PerChannel(mean_f, x.dim())) * PerChannel(invstd_f * w, x.dim());
    if (bias.defined()) y = y + PerChannel(bias.to(at::kFloat), x.dim());
    ctx->save_for_backward({x, weight, mean_f, invstd_f});
    ctx->saved_data["count"] = count;
    ctx->saved_data["comm"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(comm));
    return y.to(x.scalar_type()).contiguous(x.suggest_memory_format());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& weight = saved[1];
    const at::Tensor& mean = saved[2];
    const at::Tensor& invstd = saved[3];
    const double count = ctx->saved_data["count"].toDouble();
    auto* comm =
        reinterpret_cast<Communicator*>(static_cast<intptr_t>(ctx->saved_data["comm"].toInt()));
    const int64_t c = x.size(1);
    const auto dims = ReduceDims(x);
    const at::Tensor dy = grad_outputs[0].to(at::kFloat);
    const at::Tensor xhat =
        (x.to(at::kFloat) - PerChannel(mean, x.dim())) * PerChannel(invstd, x.dim());
    const at::Tensor sum_dy = dy.sum(dims, false, at::kDouble);
    const at::Tensor sum_dy_xhat = (dy * xhat).sum(dims, false, at::kDouble);
    at::Tensor packed = at::cat({sum_dy, sum_dy_xhat});
    if (!x.is_cpu() && comm->backend() == "mpi") packed = packed.cpu();
    AllReduceOrThrow(*comm, packed, "backward");
    packed = packed.to(x.device());
    const at::Tensor mean_dy = (packed.narrow(0, 0, c) / count).to(at::kFloat);
    const at::Tensor mean_dy_xhat = (packed.narrow(0, c, c) / count).to(at::kFloat);
    const at::Tensor w = weight.defined() ? weight.to(at::kFloat) : at::ones_like(mean);
    at::Tensor dx = (dy - PerChannel(mean_dy, x.dim()) - xhat * PerChannel(mean_dy_xhat, x.dim())) *
                    PerChannel(invstd * w, x.dim());
    at::Tensor grad_w, grad_b;
    if (weight.defined()) grad_w = sum_dy_xhat.to(weight.scalar_type());
    if (weight.defined()) grad_b = sum_dy.to(weight.scalar_type());
    return {dx.to(x.scalar_type()), grad_w,       grad_b,       at::Tensor(),
            at::Tensor(),           at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor SyncBatchNormTrain(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                              const at::Tensor& running_mean, const at::Tensor& running_var,
                              double momentum, double eps, std::shared_ptr<Communicator> comm) {
  return SyncBNFunction::apply(x, weight, bias, running_mean, running_var, momentum, eps,
                               comm.get());
}

SyncBatchNorm2dImpl::SyncBatchNorm2dImpl(const torch::nn::BatchNorm2dImpl& bn,
                                         std::shared_ptr<Communicator> comm)
    : options_(bn.options), comm_(std::move(comm)) {
  if (bn.weight.defined())
    weight = register_parameter("weight", bn.weight, bn.weight.requires_grad());
  if (bn.bias.defined()) bias = register_parameter("bias", bn.bias, bn.bias.requires_grad());
  if (bn.running_mean.defined()) {
    running_mean = register_buffer("running_mean", bn.running_mean);
    running_var = register_buffer("running_var", bn.running_var);
    num_batches_tracked = register_buffer("num_batches_tracked", bn.num_batches_tracked);
  }
  if (!bn.is_training()) eval();
}

namespace {

// Forward of a BN layer with cross-rank statistics in training mode (plain BN in eval mode).
// `num_batches_tracked` drives the cumulative-average momentum when options have none.
at::Tensor SyncBnLayerForward(const at::Tensor& x, bool training, const at::Tensor& weight,
                              const at::Tensor& bias, const at::Tensor& running_mean,
                              const at::Tensor& running_var, const at::Tensor& num_batches_tracked,
                              const torch::nn::BatchNormOptions& options,
                              const std::shared_ptr<Communicator>& comm) {
  TORCH_CHECK(x.dim() == 4, "SyncBatchNorm2d expects [N,C,H,W], got ", x.sizes());
  const double eps = options.eps();
  if (!training && running_mean.defined()) {
    return at::batch_norm(x, weight, bias, running_mean, running_var, false, 0.0, eps, true);
  }
  double momentum = options.momentum().value_or(0.0);
  if (running_mean.defined()) {
    at::NoGradGuard no_grad;
    num_batches_tracked.add_(1);
    if (!options.momentum().has_value()) {
      momentum = 1.0 / static_cast<double>(num_batches_tracked.item<int64_t>());
    }
  }
  return SyncBatchNormTrain(x, weight, bias, running_mean, running_var, momentum, eps, comm);
}

}  // namespace

at::Tensor SyncBatchNorm2dImpl::forward(const at::Tensor& x) {
  return SyncBnLayerForward(x, is_training(), weight, bias, running_mean, running_var,
                            num_batches_tracked, options_, comm_);
}

namespace {

void Walk(torch::nn::Module& m, const std::string& prefix,
          const std::shared_ptr<Communicator>& comm, int* converted,
          std::vector<std::string>* unconvertible) {
  if (auto* seq = dynamic_cast<torch::nn::SequentialImpl*>(&m)) {
    const auto children = m.named_children();
    for (auto it = seq->begin(); it != seq->end(); ++it) {
      const std::shared_ptr<torch::nn::Module> child = it->ptr();
      auto* bn = child->as<torch::nn::BatchNorm2dImpl>();
      if (bn == nullptr) continue;
      SyncBatchNorm2d sync(*bn, comm);
      for (const auto& item : children) {
        if (item.value().get() == child.get()) m.replace_module(item.key(), sync.ptr());
      }
      *it = torch::nn::AnyModule(sync);
      ++*converted;
    }
  }
  for (const auto& item : m.named_children()) {
    const std::shared_ptr<torch::nn::Module>& child = item.value();
    if (auto* replaceable = child->as<nn::BatchNorm2dImpl>()) {
      // Note [replaceable BN forward]: same tensors, same names; only the statistics change.
      replaceable->set_forward([comm](torch::nn::BatchNorm2dImpl& bn, const at::Tensor& x) {
        return SyncBnLayerForward(x, bn.is_training(), bn.weight, bn.bias, bn.running_mean,
                                  bn.running_var, bn.num_batches_tracked, bn.options, comm);
      });
      ++*converted;
      continue;
    }
    if (child->as<torch::nn::BatchNorm2dImpl>() != nullptr) {
      unconvertible->push_back(prefix + item.key());
      continue;
    }
    Walk(*child, prefix + item.key() + ".", comm, converted, unconvertible);
  }
}

}  // namespace

Result<int> ConvertSyncBatchNorm(torch::nn::Module& module, std::shared_ptr<Communicator> comm) {
  int converted = 0;
  std::vector<std::string> unconvertible;
  Walk(module, "", comm, &converted, &unconvertible);
  if (!unconvertible.empty()) {
    std::string names;
    for (size_t i = 0; i < unconvertible.size() && i < 5; ++i) {
      names += (i ? ", " : "") + unconvertible[i];
    }
    return FailedPrecondition(
        "sync batchnorm: " + std::to_string(unconvertible.size()) +
        " BatchNorm2d not reachable through a Sequential (first: " + names +
        "); see Note [converting BatchNorm2d] in worker/dist/sync_batchnorm.h");
  }
  return converted;
}

}  // namespace effnet::dist
