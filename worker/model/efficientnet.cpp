#include "worker/model/efficientnet.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <cmath>

#include "worker/nn/batchnorm.h"
#include "worker/nn/bn_silu.h"
#include "worker/nn/spatial_mean.h"

namespace effnet::model {
namespace {

// ---------------------------------------------------------------------------------------------
// Layers

// Conv without bias by default. Note [tf_same padding]: with kTfSame, stride-1 convs pad
// statically and symmetrically ((k-1)/2); strided convs pad at run time like TF 'SAME':
// total = max((ceil(x/s)-1)*s + k - x, 0), top/left = total/2, bottom/right = the rest, so an
// even input to a 3x3/2 conv gets 0 before and 1 after. kSymmetric uses PyTorch's static
// ((s-1)+(k-1))/2 on every conv.
class ConvImpl : public torch::nn::Module {
 public:
  ConvImpl(int in, int out, int kernel, int stride, int groups, bool bias, Padding padding)
      : kernel_(kernel), stride_(stride), groups_(groups) {
    weight = register_parameter("weight", torch::empty({out, in / groups, kernel, kernel}));
    if (bias) this->bias = register_parameter("bias", torch::zeros({out}));
    dynamic_ = padding == Padding::kTfSame && stride > 1;
    static_pad_ =
        padding == Padding::kTfSame ? (kernel - 1) / 2 : ((stride - 1) + (kernel - 1)) / 2;
    stride2_[0] = stride2_[1] = stride;
    pad2_[0] = pad2_[1] = static_pad_;
    reset_parameters();
  }

  // Note [conv init] (worker/model/architecture.h); reference 1.6.
  void reset_parameters(ConvInit init = ConvInit::kReference) {
    torch::NoGradGuard no_grad;
    const double fan_out = static_cast<double>(kernel_) * kernel_ * weight.size(0) / groups_;
    const double sd = std::sqrt(2.0 / fan_out);
    if (init == ConvInit::kReference) {
      weight.normal_(0.0, sd);
    } else {
      // Inverse CDF: uniform between Phi(-2) and Phi(2), then sqrt(2) erfinv(2u - 1) is a
      // standard normal cut at +-2; 0.8796 is its standard deviation.
      constexpr double kPhiMinus2 = 0.022750131948179195, kCutSd = 0.87962566103423978;
      weight.uniform_(kPhiMinus2, 1.0 - kPhiMinus2).mul_(2.0).sub_(1.0).erfinv_();
      weight.mul_(std::sqrt(2.0) * sd / kCutSd);
    }
    if (bias.defined()) bias.zero_();
  }

  torch::Tensor forward(const torch::Tensor& x) {
    if (!dynamic_) {
      return at::conv2d(x, weight, bias, at::IntArrayRef(stride2_), at::IntArrayRef(pad2_),
                        at::IntArrayRef(kOnes), groups_);
    }
    const int64_t h = x.size(2), w = x.size(3);
    const int64_t ph = std::max<int64_t>((OutSize(h, stride_) - 1) * stride_ + kernel_ - h, 0);
    const int64_t pw = std::max<int64_t>((OutSize(w, stride_) - 1) * stride_ + kernel_ - w, 0);
    torch::Tensor xp = x;
    if (ph > 0 || pw > 0) {
      xp = at::constant_pad_nd(x, {pw / 2, pw - pw / 2, ph / 2, ph - ph / 2}, 0.0);
    }
    return at::conv2d(xp, weight, bias, at::IntArrayRef(stride2_), at::IntArrayRef(kZeros),
                      at::IntArrayRef(kOnes), groups_);
  }

  torch::Tensor weight;
  torch::Tensor bias;

 private:
  static constexpr int64_t kOnes[2] = {1, 1};
  static constexpr int64_t kZeros[2] = {0, 0};
  int kernel_, stride_, groups_;
  bool dynamic_ = false;
  int static_pad_ = 0;
  int64_t stride2_[2];
  int64_t pad2_[2];
};
TORCH_MODULE(Conv);

// See Note [replaceable BN forward] (worker/nn/batchnorm.h): lets sync BN replace the statistics.
nn::BatchNorm2d MakeBn(int channels, const ModelConfig& c) {
  return nn::BatchNorm2d(
      torch::nn::BatchNorm2dOptions(channels).eps(c.bn_eps).momentum(c.bn_momentum));
}

// Note [SiLU in place]: SiLU's backward needs its input, so under autograd an in-place silu_
// first clones the input to save it (a whole extra read and write of the activation, as timm's
// SiLU(inplace=True) pays). Where a gradient will be taken the SiLU makes a new tensor instead;
// without one (evaluation, frozen layers) it works in place.
torch::Tensor Silu(torch::Tensor x) {
  if (x.requires_grad()) return at::silu(x);
  return at::silu_(x);
}

// One pass where Note [fused BN+SiLU] (worker/nn/bn_silu.h) applies and `fused` allows it,
// else BN then SiLU.
torch::Tensor BnAct(nn::BatchNorm2d& bn, const torch::Tensor& x, bool fused) {
  if (fused) {
    if (auto y = nn::FusedBatchNormSilu(*bn, x); y.defined()) return y;
  }
  return Silu(bn->forward(x));
}

// Stochastic depth on the residual branch (per-sample keep mask scaled by 1/keep), added to the
// shortcut in one kernel.
torch::Tensor DropPathAdd(const torch::Tensor& branch, const torch::Tensor& shortcut, double rate,
                          bool training) {
  if (!training || rate <= 0.0) return branch + shortcut;
  const double keep = 1.0 - rate;
  auto mask = at::empty({branch.size(0), 1, 1, 1}, branch.options()).bernoulli_(keep).div_(keep);
  return at::addcmul(shortcut, branch, mask);
}

class BlockImpl : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  // Note [drop path only with skip]: blocks without a residual ignore their drop-path rate, as in
  // timm and the official code.
  torch::Tensor Finish(const torch::Tensor& shortcut, const torch::Tensor& branch) {
    if (!has_skip) return branch;
    return DropPathAdd(branch, shortcut, drop_path, is_training());
  }
  bool has_skip = false;
  double drop_path = 0.0;
  bool fused = true;  // set_fused_kernels
};

// timm 'cn' (ConvBnAct): conv kxk stride s, BN, SiLU.
class ConvBnActBlock : public BlockImpl {
 public:
  ConvBnActBlock(int in, int out, int k, int stride, const ModelConfig& c) {
    conv = register_module("conv", Conv(in, out, k, stride, 1, false, c.padding));
    bn1 = register_module("bn1", MakeBn(out, c));
    has_skip = stride == 1 && in == out;
  }
  torch::Tensor forward(torch::Tensor x) override { return Finish(x, BnAct(bn1, conv(x), fused)); }
  Conv conv{nullptr};
  nn::BatchNorm2d bn1{nullptr};
};

// timm 'er' (EdgeResidual, FusedMBConv e>1): conv kxk stride s to mid, BN, SiLU; 1x1 to out, BN.
class EdgeResidualBlock : public BlockImpl {
 public:
  EdgeResidualBlock(int in, int out, int k, int stride, int e, const ModelConfig& c) {
    const int mid = MakeDivisible(in * e);
    conv_exp = register_module("conv_exp", Conv(in, mid, k, stride, 1, false, c.padding));
    bn1 = register_module("bn1", MakeBn(mid, c));
    conv_pwl = register_module("conv_pwl", Conv(mid, out, 1, 1, 1, false, c.padding));
    bn2 = register_module("bn2", MakeBn(out, c));
    has_skip = stride == 1 && in == out;
  }
  torch::Tensor forward(torch::Tensor x) override {
    auto y = BnAct(bn1, conv_exp(x), fused);
    y = bn2(conv_pwl(y));
    return Finish(x, y);
  }
  Conv conv_exp{nullptr}, conv_pwl{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
};

class SqueezeExciteImpl : public torch::nn::Module {
 public:
  SqueezeExciteImpl(int mid, int rd, Padding padding) {
    conv_reduce = register_module("conv_reduce", Conv(mid, rd, 1, 1, 1, true, padding));
    conv_expand = register_module("conv_expand", Conv(rd, mid, 1, 1, 1, true, padding));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto s = nn::SpatialMean(x);  // Note [SE mean backward] (worker/nn/spatial_mean.h)
    s = Silu(conv_reduce(s));
    return x * at::sigmoid(conv_expand(s));
  }
  Conv conv_reduce{nullptr}, conv_expand{nullptr};
};
TORCH_MODULE(SqueezeExcite);

// timm 'ir' (InvertedResidual, MBConv): 1x1 to mid, BN, SiLU; depthwise kxk stride s, BN, SiLU;
// SE; 1x1 to out, BN.
class InvertedResidualBlock : public BlockImpl {
 public:
  InvertedResidualBlock(int in, int out, int k, int stride, int e, bool se_on,
                        const ModelConfig& c) {
    const int mid = MakeDivisible(in * e);
    conv_pw = register_module("conv_pw", Conv(in, mid, 1, 1, 1, false, c.padding));
    bn1 = register_module("bn1", MakeBn(mid, c));
    conv_dw = register_module("conv_dw", Conv(mid, mid, k, stride, mid, false, c.padding));
    bn2 = register_module("bn2", MakeBn(mid, c));
    if (se_on) se = register_module("se", SqueezeExcite(mid, SeReduced(in), c.padding));
    conv_pwl = register_module("conv_pwl", Conv(mid, out, 1, 1, 1, false, c.padding));
    bn3 = register_module("bn3", MakeBn(out, c));
    has_skip = stride == 1 && in == out;
  }
  torch::Tensor forward(torch::Tensor x) override {
    auto y = BnAct(bn1, conv_pw(x), fused);
    y = BnAct(bn2, conv_dw(y), fused);
    if (se) y = se(y);
    y = bn3(conv_pwl(y));
    return Finish(x, y);
  }
  Conv conv_pw{nullptr}, conv_dw{nullptr}, conv_pwl{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  SqueezeExcite se{nullptr};
};

// Note [head init] (worker/model/architecture.h). Reference 1.6: U(+-1/sqrt(fan_out)), fan_out =
// out features; Glorot: U(+-sqrt(6 / (fan_in + fan_out))).
void InitLinear(torch::nn::Linear& fc, HeadInit init) {
  torch::NoGradGuard no_grad;
  const double fan_out = static_cast<double>(fc->weight.size(0));
  const double fan_in = static_cast<double>(fc->weight.size(1));
  const double r =
      init == HeadInit::kGlorot ? std::sqrt(6.0 / (fan_in + fan_out)) : 1.0 / std::sqrt(fan_out);
  fc->weight.uniform_(-r, r);
  fc->bias.zero_();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Model

struct EfficientNetV2Impl::Parts {
  Conv conv_stem{nullptr};
  nn::BatchNorm2d bn1{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  std::vector<std::vector<std::shared_ptr<BlockImpl>>> stages;
  Conv conv_head{nullptr};
  nn::BatchNorm2d bn2{nullptr};
  torch::nn::Linear classifier{nullptr};
  double dropout = 0.0;
  bool fused = true;  // set_fused_kernels
};

EfficientNetV2Impl::EfficientNetV2Impl(const ModelConfig& config)
    : config_(config), arch_(ResolveArchitecture(config)), parts_(std::make_shared<Parts>()) {
  Parts& p = *parts_;
  p.dropout = config.dropout < 0.0 ? ReferenceDropout(config.variant) : config.dropout;
  // Registration order = timm's state_dict order (Note [timm names]).
  p.conv_stem =
      register_module("conv_stem", Conv(3, arch_.stem_channels, 3, 2, 1, false, config.padding));
  p.bn1 = register_module("bn1", MakeBn(arch_.stem_channels, config));
  p.blocks = register_module("blocks", torch::nn::ModuleList());
  const int total = arch_.num_blocks();
  int in = arch_.stem_channels;
  int idx = 0;
  for (const StageInfo& s : arch_.stages) {
    torch::nn::ModuleList stage;
    std::vector<std::shared_ptr<BlockImpl>> blocks;
    for (int i = 0; i < s.repeats; ++i, ++idx) {
      const int stride = i == 0 ? s.stride : 1;
      std::shared_ptr<BlockImpl> b;
      if (s.block_type == "cn") {
        b = std::make_shared<ConvBnActBlock>(in, s.out_channels, s.kernel, stride, config);
      } else if (s.block_type == "er") {
        b = std::make_shared<EdgeResidualBlock>(in, s.out_channels, s.kernel, stride, s.expansion,
                                                config);
      } else {
        b = std::make_shared<InvertedResidualBlock>(in, s.out_channels, s.kernel, stride,
                                                    s.expansion, s.se, config);
      }
      // Reference 1.6: rate * global_block_idx / num_blocks (first block 0).
      b->drop_path = config.drop_path * idx / total;
      stage->push_back(b);
      blocks.push_back(b);
      in = s.out_channels;
    }
    p.blocks->push_back(stage);
    p.stages.push_back(std::move(blocks));
  }
  p.conv_head =
      register_module("conv_head", Conv(in, arch_.head_channels, 1, 1, 1, false, config.padding));
  p.bn2 = register_module("bn2", MakeBn(arch_.head_channels, config));
  p.classifier =
      register_module("classifier", torch::nn::Linear(arch_.head_channels, config.num_classes));
  reset_parameters();
}

void EfficientNetV2Impl::reset_parameters() {
  torch::NoGradGuard no_grad;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* conv = m->as<ConvImpl>()) {
      conv->reset_parameters(config_.conv_init);
    } else if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      bn->reset_parameters();  // gamma 1, beta 0, running stats reset
    }
  }
  InitLinear(parts_->classifier, config_.head_init);
}

torch::Tensor EfficientNetV2Impl::forward_features(torch::Tensor x) {
  return forward_features(std::move(x), nullptr);
}

torch::Tensor EfficientNetV2Impl::forward_features(torch::Tensor x,
                                                   std::vector<torch::Tensor>* stage_outputs) {
  Parts& p = *parts_;
  x = BnAct(p.bn1, p.conv_stem(x), p.fused);
  for (auto& stage : p.stages) {
    for (auto& b : stage) x = b->forward(x);
    if (stage_outputs != nullptr) stage_outputs->push_back(x);
  }
  return BnAct(p.bn2, p.conv_head(x), p.fused);
}

torch::Tensor EfficientNetV2Impl::forward(torch::Tensor x) {
  x = forward_features(std::move(x)).mean({2, 3});
  if (parts_->dropout > 0.0) x = at::dropout(x, parts_->dropout, is_training());
  return parts_->classifier(x);
}

void EfficientNetV2Impl::set_dropout(double rate) {
  if (rate < 0.0 || rate >= 1.0) {
    throw StatusError(
        InvalidArgument("set_dropout: rate must be in [0, 1), got " + std::to_string(rate)));
  }
  parts_->dropout = rate;
}

double EfficientNetV2Impl::dropout() const { return parts_->dropout; }

void EfficientNetV2Impl::reset_classifier(int num_classes) {
  if (num_classes < 1) {
    throw StatusError(InvalidArgument("reset_classifier: num_classes must be >= 1, got " +
                                      std::to_string(num_classes)));
  }
  const auto& ref = parts_->conv_head->weight;
  torch::nn::Linear fc(arch_.head_channels, num_classes);
  InitLinear(fc, config_.head_init);
  fc->to(ref.device(), ref.scalar_type());
  fc->train(is_training());
  parts_->classifier = replace_module("classifier", fc);
  config_.num_classes = num_classes;
}

void EfficientNetV2Impl::freeze_stages(int k) {
  const int n = static_cast<int>(arch_.stages.size());
  if (k > n + 1) {
    throw StatusError(InvalidArgument("freeze_stages: k = " + std::to_string(k) +
                                      " but the model has " + std::to_string(n) +
                                      " stages (max k = stages + 1 = head)"));
  }
  Parts& p = *parts_;
  auto set = [](torch::nn::Module& m, bool frozen) {
    for (auto& t : m.parameters()) t.set_requires_grad(!frozen);
  };
  set(*p.conv_stem, k >= 0);
  set(*p.bn1, k >= 0);
  for (int s = 0; s < n; ++s) set(*p.blocks[s], s < k);
  set(*p.conv_head, k == n + 1);
  set(*p.bn2, k == n + 1);
  set(*p.classifier, false);
  frozen_stages_ = k < 0 ? -1 : k;
  train(is_training());
}

void EfficientNetV2Impl::train(bool on) {
  torch::nn::Module::train(on);
  if (!on || frozen_stages_ < 0) return;
  Parts& p = *parts_;
  const int n = static_cast<int>(arch_.stages.size());
  p.bn1->eval();
  for (int s = 0; s < std::min(frozen_stages_, n); ++s) p.blocks[s]->eval();
  if (frozen_stages_ == n + 1) p.bn2->eval();
}

void EfficientNetV2Impl::set_memory_format(c10::MemoryFormat format) {
  torch::NoGradGuard no_grad;
  for (auto& p : parameters()) {
    if (p.dim() == 4) p.set_data(p.data().contiguous(format));
  }
}

void EfficientNetV2Impl::set_fused_kernels(bool on) {
  parts_->fused = on;
  for (auto& stage : parts_->stages) {
    for (auto& b : stage) b->fused = on;
  }
}

int64_t CountParameters(torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& t : module.parameters()) n += t.numel();
  return n;
}

}  // namespace effnet::model
