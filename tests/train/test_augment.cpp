// Augmentation: shapes, ranges, determinism, the geometry of crops/flips/rotations, RandAugment op
// semantics (fill 128, no-op magnitudes, per-sample choice), mixup/cutmix targets, eval crop.
#include <gtest/gtest.h>
#include <torch/types.h>

#include <set>

#include "common/job/types.h"  // job::Stage
#include "worker/data/augment.h"

namespace {

using namespace effnet::data;
namespace job = effnet::job;

torch::Tensor RandomImages(int64_t n, int64_t s, uint64_t seed) {
  auto g = at::detail::createCPUGenerator(seed);
  return torch::randint(0, 256, {n, s, s, 3}, g, torch::TensorOptions().dtype(torch::kByte));
}

AugmentConfig NoRandomGeometry() {
  AugmentConfig c;
  c.random_resized_crop = false;
  c.hflip_prob = 0;
  c.vflip_prob = 0;
  c.rot90 = false;
  return c;
}

TEST(RandomResizedCrop, ShapeRangeAndDeterminism) {
  auto x = RandomImages(8, 40, 1);
  AugmentConfig c;
  c.rot90 = true;
  c.vflip_prob = 0.5;
  HostRng a(5), b(5), other(6);
  auto ya = RandomResizedCropFlip(x, 24, c, a);
  auto yb = RandomResizedCropFlip(x, 24, c, b);
  auto yo = RandomResizedCropFlip(x, 24, c, other);
  EXPECT_EQ(ya.sizes(), (std::vector<int64_t>{8, 3, 24, 24}));
  EXPECT_EQ(ya.scalar_type(), torch::kFloat);
  EXPECT_GE(ya.min().item<float>(), 0.f);
  EXPECT_LE(ya.max().item<float>(), 255.f);
  EXPECT_TRUE(torch::equal(ya, yb));
  EXPECT_FALSE(torch::equal(ya, yo));
}

TEST(RandomResizedCrop, IdentityFlipsAndRotationsAreExact) {
  auto x = RandomImages(6, 16, 2);
  auto nchw = x.permute({0, 3, 1, 2}).to(torch::kFloat);
  HostRng rng(1);
  auto c = NoRandomGeometry();
  EXPECT_TRUE(torch::allclose(RandomResizedCropFlip(x, 16, c, rng), nchw, 0, 1e-3));
  c.hflip_prob = 1.0;
  EXPECT_TRUE(torch::allclose(RandomResizedCropFlip(x, 16, c, rng), nchw.flip({3}), 0, 1e-3));
  c.hflip_prob = 0;
  c.vflip_prob = 1.0;
  EXPECT_TRUE(torch::allclose(RandomResizedCropFlip(x, 16, c, rng), nchw.flip({2}), 0, 1e-3));
  c.vflip_prob = 0;
  c.rot90 = true;
  auto y = RandomResizedCropFlip(torch::cat({x, x, x, x}), 16, c, rng);
  std::set<int> ks;
  for (int64_t i = 0; i < y.size(0); ++i) {
    int match = -1;
    for (int k = 0; k < 4; ++k) {
      if (torch::allclose(y[i], torch::rot90(nchw[i % 6], k, {1, 2}), 0, 1e-3)) match = k;
    }
    EXPECT_GE(match, 0) << "image " << i << " is not a 90-degree rotation of its input";
    ks.insert(match);
  }
  EXPECT_GE(ks.size(), 3u);  // 24 draws of k: several rotations occur
}

TEST(RandomResizedCrop, CropsZoomIn) {
  // A left-half-black, right-half-white image: crops of at most 30 % of the area rarely hold both
  // halves in the same proportion, and upscale (no values outside [0, 255]).
  auto x = torch::zeros({16, 32, 32, 3}, torch::kByte);
  x.narrow(2, 16, 16).fill_(255);
  AugmentConfig c = NoRandomGeometry();
  c.random_resized_crop = true;
  c.crop_area_min = 0.1;
  c.crop_area_max = 0.3;
  HostRng rng(3);
  auto y = RandomResizedCropFlip(x, 32, c, rng);
  auto means = y.mean({1, 2, 3});
  EXPECT_GT((means - 127.5).abs().max().item<float>(), 40.f);
}

TEST(RandAugment, OpsKeepShapeRangeAndIntegers) {
  auto x = RandomImages(4, 20, 4).permute({0, 3, 1, 2}).to(torch::kFloat);
  AugmentConfig c;
  c.randaug_translate_px = 10;
  c.randaug_cutout_px = 5;
  for (int op = 0; op < kNumRandAugOps; ++op) {
    for (double m : {2.0, 9.0, 15.0}) {
      HostRng rng(op);
      auto y = ApplyRandAugOp(x, static_cast<RandAugOp>(op), m, {1, -1, 1, -1}, c, rng);
      SCOPED_TRACE(RandAugOpName(static_cast<RandAugOp>(op)));
      EXPECT_EQ(y.sizes(), x.sizes());
      EXPECT_GE(y.min().item<float>(), 0.f);
      EXPECT_LE(y.max().item<float>(), 255.f);
      EXPECT_TRUE(torch::equal(y, y.round()));
    }
  }
}

TEST(RandAugment, OfficialSemantics) {
  auto x = RandomImages(2, 16, 5).permute({0, 3, 1, 2}).to(torch::kFloat);
  AugmentConfig c;
  HostRng rng(1);
  auto op = [&](RandAugOp o, double m, std::vector<double> signs = {1, 1}) {
    return ApplyRandAugOp(x, o, m, signs, c, rng);
  };
  EXPECT_TRUE(torch::equal(op(RandAugOp::kInvert, 5), 255 - x));
  EXPECT_TRUE(torch::equal(op(RandAugOp::kSolarize, 10), x));   // threshold 256: no-op
  EXPECT_TRUE(torch::equal(op(RandAugOp::kPosterize, 20), x));  // 8 bits: no-op
  auto post = op(RandAugOp::kPosterize, 5);                     // 2 bits
  EXPECT_TRUE(torch::equal(post, torch::floor(x / 64) * 64));
  // Brightness factor M/10*1.8+0.1 = 1.0 at M = 5: identity.
  EXPECT_TRUE(torch::equal(op(RandAugOp::kBrightness, 5), x));
  EXPECT_TRUE(torch::equal(op(RandAugOp::kBrightness, 0), torch::floor(x * 0.1)));
  // SolarizeAdd M=10: +110 below 128, clipped.
  auto sa = op(RandAugOp::kSolarizeAdd, 10);
  EXPECT_TRUE(torch::equal(sa, torch::where(x < 128, (x + 110).clamp(0, 255), x)));
  // TranslateX by 10*px/10 pixels: the uncovered columns hold the fill value 128.
  c.randaug_translate_px = 4;
  auto t = op(RandAugOp::kTranslateX, 10, {1, -1});
  EXPECT_TRUE(torch::equal(t[0].narrow(2, 0, 12), x[0].narrow(2, 4, 12)));
  EXPECT_TRUE((t[0].narrow(2, 12, 4) == 128).all().item<bool>());
  EXPECT_TRUE(torch::equal(t[1].narrow(2, 4, 12), x[1].narrow(2, 0, 12)));
  EXPECT_TRUE((t[1].narrow(2, 0, 4) == 128).all().item<bool>());
  // Cutout: a (2*pad)^2 square (clipped at the border) of 128.
  c.randaug_cutout_px = 3;
  auto cut = op(RandAugOp::kCutout, 10);
  for (int i = 0; i < 2; ++i) {
    const auto grey = (cut[i] == 128).all(0).sum().item<int64_t>();
    EXPECT_GT(grey, 0);
    EXPECT_LE(grey, 36);
  }
  // Equalize spreads a narrow histogram over the full range (TF's lut needs more than 255
  // pixels besides the top bin, so a 64x64 image).
  auto big = RandomImages(2, 64, 8).permute({0, 3, 1, 2}).to(torch::kFloat);
  auto narrow = 100 + torch::floor(big / 255 * 20);
  auto eq = ApplyRandAugOp(narrow, RandAugOp::kEqualize, 5, {}, c, rng);
  EXPECT_GT((eq.amax({2, 3}) - eq.amin({2, 3})).min().item<float>(), 200.f);
  // AutoContrast stretches each channel to [0, 255].
  auto ac = ApplyRandAugOp(narrow, RandAugOp::kAutoContrast, 5, {}, c, rng);
  EXPECT_EQ(ac.amin({2, 3}).max().item<float>(), 0.f);
  EXPECT_EQ(ac.amax({2, 3}).min().item<float>(), 255.f);
}

TEST(RandAugment, PerSampleOpChoiceAndDeterminism) {
  auto x = RandomImages(64, 12, 6).permute({0, 3, 1, 2}).to(torch::kFloat);
  AugmentConfig c;
  HostRng a(9), b(9);
  std::vector<std::vector<int>> ca, cb;
  auto ya = RandAugment(x, 2, 9.0, c, a, &ca);
  auto yb = RandAugment(x, 2, 9.0, c, b, &cb);
  EXPECT_TRUE(torch::equal(ya, yb));
  ASSERT_EQ(ca.size(), 2u);
  EXPECT_EQ(ca, cb);
  std::set<int> distinct(ca[0].begin(), ca[0].end());
  EXPECT_GE(distinct.size(), 10u);  // 64 images pick among 16 ops independently
  EXPECT_FALSE(torch::equal(ya, x));
}

TEST(MixupCutmix, TargetsAreConvexAndMatchPastedArea) {
  const int64_t n = 8, C = 4;
  auto labels = torch::arange(n) % C;
  auto base = torch::one_hot(labels, C).to(torch::kFloat);
  // Mixup only: lambda >= 0.5 for the own label.
  {
    auto images = torch::rand({n, 3, 8, 8}) * 255;
    auto t = base.clone();
    HostRng rng(2);
    MixupCutmix(images, t, 0.4, 0.0, rng);
    EXPECT_TRUE(torch::allclose(t.sum(1), torch::ones({n})));
    for (int64_t i = 0; i < n; ++i) {
      if (labels[i].item<int64_t>() != labels[n - 1 - i].item<int64_t>()) {
        EXPECT_GE(t[i][labels[i].item<int64_t>()].item<float>(), 0.5f - 1e-6f);
      }
    }
  }
  // Cutmix only, with image i filled with the value i: the pasted fraction equals 1 - weight.
  {
    auto images =
        torch::arange(n).to(torch::kFloat).view({n, 1, 1, 1}).expand({n, 3, 16, 16}).clone();
    auto t = base.clone();
    HostRng rng(3);
    MixupCutmix(images, t, 0.0, 1.0, rng);
    for (int64_t i = 0; i < n; ++i) {
      const double own =
          (images[i][0] == static_cast<float>(i)).to(torch::kFloat).mean().item<double>();
      EXPECT_NEAR(t[i][labels[i].item<int64_t>()].item<double>(), own, 1e-5) << i;
    }
  }
  // Both: first half mixup (no image keeps a pure value), second half cutmix.
  {
    auto images =
        torch::arange(n).to(torch::kFloat).view({n, 1, 1, 1}).expand({n, 3, 16, 16}).clone();
    auto t = base.clone();
    HostRng rng(4);
    MixupCutmix(images, t, 1.0, 1.0, rng);
    EXPECT_TRUE(torch::allclose(t.sum(1), torch::ones({n})));
    for (int64_t i = n / 2; i < n; ++i) {  // cutmix half: only values of the half's members
      auto v = images[i][0];
      EXPECT_TRUE(((v == static_cast<float>(i)) | (v == static_cast<float>(n - 1 - (i - n / 2))))
                      .all()
                      .item<bool>());
    }
  }
}

TEST(Eval, CenterCropResizeAndNormalize) {
  auto x = torch::full({2, 48, 48, 3}, 77, torch::kByte);
  auto y = EvalResize(x, 32, true);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 3, 32, 32}));
  EXPECT_TRUE((y == 77).all().item<bool>());
  // Centre crop keeps size/(size+32) of the side: a border ring outside it is cut away.
  auto ring = torch::zeros({1, 64, 64, 3}, torch::kByte);
  ring.narrow(1, 0, 8).fill_(255);
  auto cropped = EvalResize(ring, 32, true);  // side round(0.5 * 64) = 32 from the centre
  EXPECT_EQ(cropped.max().item<float>(), 0.f);
  auto full = EvalResize(ring, 32, false);
  EXPECT_GT(full.max().item<float>(), 200.f);
  auto mean = torch::tensor({0.485f, 0.456f, 0.406f}).view({1, 3, 1, 1}) * 255;
  auto n = Normalize(mean.expand({1, 3, 2, 2}), "imagenet");
  EXPECT_LT(n.abs().max().item<float>(), 1e-5f);
  EXPECT_THROW(Normalize(mean, "zca"), std::invalid_argument);
}

TEST(AugmentTrain, FullPipeline) {
  auto x = RandomImages(6, 32, 7);
  auto labels = torch::tensor({0, 1, 2, 0, 1, 2}, torch::kLong);
  AugmentConfig c;
  effnet::job::Stage s;
  s.image_size = 24;
  s.randaug_magnitude = 6.0;
  s.mixup_alpha = 0.2;
  s.cutmix_alpha = 0.2;
  HostRng a(1), b(1);
  auto ta = AugmentTrain(x, labels, 3, s, 0.1, c, a);
  auto tb = AugmentTrain(x, labels, 3, s, 0.1, c, b);
  EXPECT_EQ(ta.images.sizes(), (std::vector<int64_t>{6, 3, 24, 24}));
  EXPECT_EQ(ta.targets.sizes(), (std::vector<int64_t>{6, 3}));
  EXPECT_TRUE(torch::equal(ta.images, tb.images));
  EXPECT_TRUE(torch::allclose(ta.targets.sum(1), torch::ones({6})));
  EXPECT_GE(ta.targets.min().item<float>(), 0.1f / 3 - 1e-6f);  // label smoothing floor
  // Normalised ImageNet range: (0 - 0.485) / 0.229 .. (1 - 0.406) / 0.225.
  EXPECT_GE(ta.images.min().item<float>(), -2.2f);
  EXPECT_LE(ta.images.max().item<float>(), 2.7f);
}

// Note [identity geometry]: without crops, flips or rotations (the study's recipe) a training
// image is exactly the evaluation image of the same photo, resize included; with a flip it is not.
TEST(AugmentTrain, NoGeometryTrainsOnTheEvaluationImage) {
  auto x = RandomImages(3, 40, 11);
  auto labels = torch::tensor({0, 1, 2}, torch::kLong);
  AugmentConfig c = NoRandomGeometry();
  c.eval_center_crop = false;  // the study's presets: the whole image, as in training
  effnet::job::Stage s;
  s.image_size = 28;
  HostRng rng(3);
  auto t = AugmentTrain(x, labels, 3, s, 0.0, c, rng);
  EXPECT_TRUE(torch::equal(t.images, AugmentEval(x, 28, c)));
  c.hflip_prob = 1;
  auto flipped = AugmentTrain(x, labels, 3, s, 0.0, c, rng);
  EXPECT_FALSE(torch::allclose(flipped.images, AugmentEval(x, 28, c), 1e-3, 1e-3));
}

}  // namespace
