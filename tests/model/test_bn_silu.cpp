// worker/nn: Note [fused BN+SiLU] (bn_silu.h), the fused kernel against BatchNorm2d then SiLU;
// Note [SE mean backward] (spatial_mean.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/formats/test_util.h"
#include "worker/model/efficientnet.h"
#include "worker/nn/bn_silu.h"
#include "worker/nn/spatial_mean.h"

namespace effnet::nn {
namespace {

double MaxRelDiff(const at::Tensor& a, const at::Tensor& b) {
  const auto fa = a.to(at::kDouble), fb = b.to(at::kDouble);
  return ((fa - fb).abs().max() / fb.abs().max().clamp_min(1e-30)).item<double>();
}

// Two BNs with the same random affine parameters and running statistics.
struct Twins {
  BatchNorm2d fused{nullptr}, plain{nullptr};
  explicit Twins(int64_t c, std::optional<double> momentum = 0.1) {
    auto opts = torch::nn::BatchNorm2dOptions(c).eps(1e-3).momentum(momentum);
    fused = BatchNorm2d(opts);
    plain = BatchNorm2d(opts);
    torch::NoGradGuard g;
    fused->weight.uniform_(0.5, 1.5);
    fused->bias.uniform_(-0.5, 0.5);
    fused->running_mean.uniform_(-1.0, 1.0);
    fused->running_var.uniform_(0.5, 2.0);
    plain->weight.copy_(fused->weight);
    plain->bias.copy_(fused->bias);
    plain->running_mean.copy_(fused->running_mean);
    plain->running_var.copy_(fused->running_var);
  }
};

// Conv-like activations: an offset per channel well above their spread, so a naive
// E[x^2] - E[x]^2 would lose digits. An odd channel count exercises the vector tails.
// 4 x 37 x 48 x 40 = 284k elements: above the fused kernel's minimum of 2^18.
at::Tensor Activations(at::ScalarType dtype, int64_t c = 37) {
  const int64_t w = c == 37 ? 40 : 40 * 37 / c + 1;
  auto x = torch::randn({4, c, 48, w}) * 2.0 + torch::linspace(-20.0, 30.0, c).view({1, c, 1, 1});
  return x.to(dtype).contiguous(at::MemoryFormat::ChannelsLast);
}

struct Step {
  at::Tensor y, dx, dw, db;
};

Step RunBn(BatchNorm2dImpl& bn, const at::Tensor& x_in, const at::Tensor& dy, bool fused) {
  auto x = x_in.detach().requires_grad_();
  for (auto* p : {&bn.weight, &bn.bias}) p->mutable_grad() = at::Tensor();
  at::Tensor y = fused ? FusedBatchNormSilu(bn, x) : at::silu(bn.forward(x));
  EXPECT_TRUE(y.defined());
  y.backward(dy);
  return {y.detach(), x.grad(), bn.weight.grad(), bn.bias.grad()};
}

TEST(FusedBnSilu, TrainingMatchesBatchNormThenSiluInFloat) {
  torch::manual_seed(1);
  Twins t(37);
  auto x = Activations(at::kFloat);
  auto dy = torch::randn_like(x);
  for (int step = 0; step < 2; ++step) {
    const Step f = RunBn(*t.fused, x, dy, true);
    const Step p = RunBn(*t.plain, x, dy, false);
    EXPECT_TRUE(f.y.is_contiguous(at::MemoryFormat::ChannelsLast));
    EXPECT_LT(MaxRelDiff(f.y, p.y), 1e-5);
    EXPECT_LT(MaxRelDiff(f.dx, p.dx), 1e-4);
    EXPECT_LT(MaxRelDiff(f.dw, p.dw), 1e-4);
    EXPECT_LT(MaxRelDiff(f.db, p.db), 1e-4);
  }
  EXPECT_LT(MaxRelDiff(t.fused->running_mean, t.plain->running_mean), 1e-6);
  EXPECT_LT(MaxRelDiff(t.fused->running_var, t.plain->running_var), 1e-5);
  EXPECT_EQ(t.fused->num_batches_tracked.item<int64_t>(), 2);
}

// BN outputs far beyond where the sigmoid saturates (|z| > 100): no NaN, as BN then SiLU.
TEST(FusedBnSilu, SaturatedSigmoidInFloatAndBf16) {
  torch::manual_seed(7);
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    Twins t(37);
    {
      torch::NoGradGuard g;
      t.fused->weight.uniform_(60.0, 80.0);
      t.plain->weight.copy_(t.fused->weight);
    }
    auto x = Activations(dtype);
    auto dy = torch::randn(x.sizes()).to(dtype).contiguous(at::MemoryFormat::ChannelsLast);
    const Step f = RunBn(*t.fused, x, dy, true);
    const Step p = RunBn(*t.plain, x, dy, false);
    EXPECT_GT(f.y.to(at::kFloat).abs().max().item<double>(), 100.0);
    for (const auto* v : {&f.y, &f.dx, &f.dw, &f.db}) EXPECT_TRUE(v->isfinite().all().item<bool>());
    EXPECT_LT(MaxRelDiff(f.y, p.y), dtype == at::kFloat ? 1e-5 : 1e-2);
    EXPECT_LT(MaxRelDiff(f.dx, p.dx), dtype == at::kFloat ? 5e-4 : 3e-2);
  }
}

TEST(FusedBnSilu, CumulativeMomentumAsTorch) {
  torch::manual_seed(2);
  Twins t(16, std::nullopt);
  for (int step = 0; step < 3; ++step) {
    auto x = Activations(at::kFloat, 16);
    auto dy = torch::randn_like(x);
    RunBn(*t.fused, x, dy, true);
    RunBn(*t.plain, x, dy, false);
  }
  EXPECT_LT(MaxRelDiff(t.fused->running_mean, t.plain->running_mean), 1e-6);
  EXPECT_LT(MaxRelDiff(t.fused->running_var, t.plain->running_var), 1e-5);
}

// In bf16 the fused kernel rounds once (its output); BN then SiLU rounds the BN output too. Both
// are compared with the float computation on the same bf16 input: the fused one must be at least
// as close.
TEST(FusedBnSilu, TrainingInBf16IsAsCloseToFloatAsTheUnfusedPath) {
  torch::manual_seed(3);
  Twins t(37);
  auto x = Activations(at::kBFloat16);
  auto dy = torch::randn(x.sizes()).to(at::kBFloat16).contiguous(at::MemoryFormat::ChannelsLast);
  const Step f = RunBn(*t.fused, x, dy, true);
  const Step p = RunBn(*t.plain, x, dy, false);
  const Step r = RunBn(*t.plain, x.to(at::kFloat), dy.to(at::kFloat), false);
  EXPECT_EQ(f.y.scalar_type(), at::kBFloat16);
  EXPECT_EQ(f.dx.scalar_type(), at::kBFloat16);
  EXPECT_LT(MaxRelDiff(f.y, r.y), 1e-2);
  EXPECT_LT(MaxRelDiff(f.dx, r.dx), 2e-2);
  EXPECT_LE(MaxRelDiff(f.y, r.y), MaxRelDiff(p.y, r.y) * 1.05);
  EXPECT_LE(MaxRelDiff(f.dx, r.dx), MaxRelDiff(p.dx, r.dx) * 1.05);
  EXPECT_LT(MaxRelDiff(f.dw, r.dw), 1e-3);
  EXPECT_LT(MaxRelDiff(f.db, r.db), 1e-3);
}

TEST(FusedBnSilu, EvaluationUsesRunningStatistics) {
  torch::manual_seed(4);
  Twins t(37);
  t.fused->eval();
  t.plain->eval();
  auto x = Activations(at::kFloat);
  torch::NoGradGuard g;
  auto y = FusedBatchNormSilu(*t.fused, x);
  ASSERT_TRUE(y.defined());
  EXPECT_LT(MaxRelDiff(y, at::silu(t.plain->forward(x))), 1e-5);
  EXPECT_EQ(t.fused->num_batches_tracked.item<int64_t>(), 0);
}

TEST(FusedBnSilu, DeclinesWhereItDoesNotApply) {
  torch::manual_seed(5);
  Twins t(8);
  auto x = torch::randn({8, 8, 64, 64});
  EXPECT_FALSE(FusedBatchNormSilu(*t.fused, x).defined()) << "NCHW";
  EXPECT_FALSE(
      FusedBatchNormSilu(*t.fused,
                         torch::randn({2, 8, 16, 16}).contiguous(at::MemoryFormat::ChannelsLast))
          .defined())
      << "below kFusedMinElements";
  auto xl = x.contiguous(at::MemoryFormat::ChannelsLast);
  EXPECT_FALSE(FusedBatchNormSilu(*t.fused, xl.to(at::kDouble)).defined()) << "double";
  EXPECT_FALSE(FusedBatchNormSilu(*t.fused, torch::randn({1, 8, 1, 1})).defined())
      << "one value per channel: torch's error";
  t.fused->eval();
  EXPECT_FALSE(FusedBatchNormSilu(*t.fused, xl.detach().requires_grad_()).defined())
      << "evaluation with a gradient to take";
  t.fused->train();
  t.fused->set_forward(
      [](torch::nn::BatchNorm2dImpl& bn, const at::Tensor& v) { return v; });  // sync BN
  EXPECT_FALSE(FusedBatchNormSilu(*t.fused, xl).defined()) << "replaced forward";
  EXPECT_EQ(t.fused->num_batches_tracked.item<int64_t>(), 0);
}

// Note [SE mean backward]: the same gradient as x.mean's, bit for bit, where x also feeds a
// multiply (as in squeeze-excite), in float and bf16, NCHW and channels_last.
TEST(SpatialMean, SameGradientAsMean) {
  torch::manual_seed(8);
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    for (auto fmt : {at::MemoryFormat::Contiguous, at::MemoryFormat::ChannelsLast}) {
      auto x0 = torch::randn({3, 24, 7, 5}).to(dtype).contiguous(fmt);
      auto dy = torch::randn_like(x0);
      auto grad = [&](bool ours) {
        auto x = x0.detach().requires_grad_();
        auto m = ours ? SpatialMean(x) : x.mean({2, 3}, /*keepdim=*/true);
        EXPECT_TRUE(m.equal(x0.mean({2, 3}, true)));
        (x * at::sigmoid(m * 3.0)).backward(dy);
        return x.grad();
      };
      const auto ours = grad(true), want = grad(false);
      EXPECT_TRUE(ours.equal(want)) << "max abs diff " << (ours - want).abs().max().item<double>();
    }
  }
  EXPECT_FALSE(SpatialMean(torch::randn({1, 2, 3, 3})).requires_grad());
}

// The whole model: a channels_last training step, fused against BN then SiLU.
TEST(FusedBnSilu, ModelTrainingStepMatchesTheUnfusedPath) {
  torch::manual_seed(6);
  const model::ModelConfig c = formats_test::Tiny(5);
  model::EfficientNetV2 fused(c), plain(c);
  {
    torch::NoGradGuard g;
    auto src = fused->named_parameters();
    for (auto& p : plain->named_parameters()) p.value().copy_(src[p.key()]);
  }
  fused->set_memory_format(at::MemoryFormat::ChannelsLast);
  plain->set_memory_format(at::MemoryFormat::ChannelsLast);
  plain->set_fused_kernels(false);  // runtime.fused_kernels = off
  // 224 px, batch 16: every BN + SiLU of the reduced model but the last stage's is fused.
  auto x = torch::randn({16, 3, 224, 224}).contiguous(at::MemoryFormat::ChannelsLast);
  auto step = [&](model::EfficientNetV2& m, const at::Tensor& in) {
    m->train();
    auto loss = m->forward(in).pow(2).mean();
    loss.backward();
    return loss.item<double>();
  };
  const double lf = step(fused, x);
  const double lp = step(plain, x);
  EXPECT_NEAR(lf, lp, 1e-5 * std::abs(lp));
  // Gradients of the BN biases that only feed further BNs are 0 up to rounding, and so are the
  // means of those BNs' inputs: those compare against the largest gradient and the spread.
  auto pg = plain->named_parameters();
  double largest = 0.0;
  for (const auto& p : pg) largest = std::max(largest, p.value().grad().abs().max().item<double>());
  for (const auto& p : fused->named_parameters()) {
    const auto& want = pg[p.key()].grad();
    EXPECT_TRUE(torch::allclose(p.value().grad(), want, 1e-3, 1e-5 * largest))
        << p.key() << " max abs diff " << (p.value().grad() - want).abs().max().item<double>()
        << ", largest gradient " << largest;
  }
  auto pb = plain->named_buffers();
  for (const auto& b : fused->named_buffers()) {
    if (!b.value().is_floating_point()) continue;
    const auto& want = pb[b.key()];
    const double spread =
        b.key().find("running_mean") == std::string::npos
            ? 0.0
            : std::sqrt(pb[b.key().substr(0, b.key().size() - 4) + "var"].max().item<double>());
    EXPECT_TRUE(torch::allclose(b.value(), want, 1e-4, 1e-5 * spread))
        << b.key() << " max abs diff " << (b.value() - want).abs().max().item<double>();
  }
}

}  // namespace
}  // namespace effnet::nn
