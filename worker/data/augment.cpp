#include "worker/data/augment.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace effnet::data {
namespace {

// grid_sampler enums (ATen): interpolation 0 bilinear, 1 nearest, 2 bicubic; padding 0 zeros,
// 1 border, 2 reflection.
constexpr int64_t kBilinear = 0, kNearest = 1;
constexpr int64_t kPadZeros = 0, kPadBorder = 1;

at::Tensor ThetaTensor(const std::vector<float>& theta, int64_t n, const at::Tensor& like) {
  return at::from_blob(const_cast<float*>(theta.data()), {n, 2, 3}, at::kFloat)
      .clone()
      .to(like.device());
}

// Samples x through per-image affine maps (output normalised coords -> input normalised coords)
// with nearest interpolation; pixels from outside the image get the fill value 128.
at::Tensor AffineFill128(const at::Tensor& x, const std::vector<float>& theta) {
  const int64_t n = x.size(0);
  auto grid = at::affine_grid_generator(ThetaTensor(theta, n, x), x.sizes(), false);
  // Note [fill 128]: zero padding of (x - 128) is a fill of 128 after adding 128 back.
  return at::grid_sampler(x - 128.0, grid, kNearest, kPadZeros, false) + 128.0;
}

at::Tensor Trunc255(const at::Tensor& x) { return x.clamp(0.0, 255.0).trunc(); }

// TF blend(image1=degenerate, image2=image, factor): degenerate + factor*(image - degenerate),
// clipped and cast to uint8 (truncation).
at::Tensor Blend(const at::Tensor& degenerate, const at::Tensor& image, double factor) {
  return Trunc255(degenerate + factor * (image - degenerate));
}

// tf.image.rgb_to_grayscale on uint8 (ITU-R 601 weights, rounded back to uint8): [n,1,H,W].
at::Tensor Grayscale(const at::Tensor& x) {
  auto g = x.select(1, 0) * 0.2989 + x.select(1, 1) * 0.5870 + x.select(1, 2) * 0.1140;
  return g.round().clamp(0.0, 255.0).unsqueeze(1);
}

at::Tensor Equalize(const at::Tensor& x) {
  // Per image and channel: histogram of 256 bins, TF's lut (autoaugment.equalize.scale_channel).
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  auto v = x.to(at::kLong).reshape({n * c, hw});
  auto offsets = at::arange(n * c, v.options()).unsqueeze(1) * 256;
  auto hist = at::zeros({n * c * 256}, x.options().dtype(at::kLong));
  hist.index_add_(0, (v + offsets).reshape({-1}), at::ones({n * c * hw}, hist.options()));
  hist = hist.reshape({n * c, 256});
  // The last non-zero bin is the channel's maximum value.
  auto vmax = std::get<0>(v.max(1, true));
  auto last = hist.gather(1, vmax);
  auto step = at::div(hist.sum(1, true) - last, 255, "floor");
  auto safe_step = step.clamp_min(1);
  auto lut = at::div(hist.cumsum(1) + at::div(step, 2, "floor"), safe_step, "floor");
  lut = at::cat({at::zeros({n * c, 1}, lut.options()), lut.narrow(1, 0, 255)}, 1).clamp(0, 255);
  auto mapped = lut.gather(1, v);
  auto out = at::where(step == 0, v, mapped);
  return out.to(x.scalar_type()).reshape(x.sizes());
}

at::Tensor Sharpness(const at::Tensor& x, double factor) {
  const int64_t H = x.size(2), W = x.size(3);
  if (H < 3 || W < 3) return x;
  auto k = at::tensor({1.f, 1.f, 1.f, 1.f, 5.f, 1.f, 1.f, 1.f, 1.f}, x.options()) / 13.0;
  k = k.reshape({1, 1, 3, 3}).repeat({3, 1, 1, 1});
  auto blurred = at::conv2d(x, k, at::Tensor(), at::IntArrayRef{1, 1}, at::IntArrayRef{0, 0},
                            at::IntArrayRef{1, 1}, 3)
                     .round()
                     .clamp(0.0, 255.0);
  auto degenerate = x.clone();
  degenerate.narrow(2, 1, H - 2).narrow(3, 1, W - 2).copy_(blurred);
  return Blend(degenerate, x, factor);
}

}  // namespace

const char* RandAugOpName(RandAugOp op) {
  static const char* kNames[kNumRandAugOps] = {
      "AutoContrast", "Equalize",   "Invert",     "Rotate",     "Posterize", "Solarize",
      "Color",        "Contrast",   "Brightness", "Sharpness",  "ShearX",    "ShearY",
      "TranslateX",   "TranslateY", "Cutout",     "SolarizeAdd"};
  const int i = static_cast<int>(op);
  return i >= 0 && i < kNumRandAugOps ? kNames[i] : "?";
}

at::Tensor RandomResizedCropFlip(const at::Tensor& nhwc_u8, int size, const AugmentConfig& c,
                                 HostRng& rng) {
  const int64_t n = nhwc_u8.size(0);
  const double H = static_cast<double>(nhwc_u8.size(1)), W = static_cast<double>(nhwc_u8.size(2));
  auto x = nhwc_u8.permute({0, 3, 1, 2}).to(at::kFloat);
  std::vector<float> theta(static_cast<size_t>(n) * 6);
  for (int64_t i = 0; i < n; ++i) {
    double x0 = 0, y0 = 0, w = W, h = H;
    if (c.random_resized_crop) {
      bool found = false;
      const double log_lo = std::log(c.aspect_min), log_hi = std::log(c.aspect_max);
      // torchvision/timm RandomResizedCrop: 10 attempts, then a centre crop clamped to the range.
      for (int attempt = 0; attempt < 10 && !found; ++attempt) {
        const double area = H * W * rng.Uniform(c.crop_area_min, c.crop_area_max);
        const double ratio = std::exp(rng.Uniform(log_lo, log_hi));
        const double cw = std::sqrt(area * ratio), ch = std::sqrt(area / ratio);
        if (cw <= W && ch <= H) {
          w = cw;
          h = ch;
          x0 = rng.Uniform(0.0, W - w);
          y0 = rng.Uniform(0.0, H - h);
          found = true;
        }
      }
      if (!found) {
        const double ratio = W / H;
        if (ratio < c.aspect_min) {
          w = W;
          h = W / c.aspect_min;
        } else if (ratio > c.aspect_max) {
          h = H;
          w = H * c.aspect_max;
        }
        x0 = (W - w) / 2;
        y0 = (H - h) / 2;
      }
    }
    // Note [one affine per image]: input = centre + S * R_k * F * output, in normalised
    // coordinates (align_corners=false): S scales to the crop box, F flips, R_k turns by k*90
    // degrees. Flips and rotations act on the crop's content, the box stays where it was drawn.
    const double cx = 2.0 * (x0 + w / 2) / W - 1.0, cy = 2.0 * (y0 + h / 2) / H - 1.0;
    const double sx = w / W, sy = h / H;
    const double fx = rng.Bernoulli(c.hflip_prob) ? -1.0 : 1.0;
    const double fy = rng.Bernoulli(c.vflip_prob) ? -1.0 : 1.0;
    const int k = c.rot90 ? static_cast<int>(rng.Int(4)) : 0;
    static const double kCos[4] = {1, 0, -1, 0}, kSin[4] = {0, 1, 0, -1};
    const double r00 = kCos[k], r01 = -kSin[k], r10 = kSin[k], r11 = kCos[k];
    float* t = &theta[static_cast<size_t>(i) * 6];
    t[0] = static_cast<float>(sx * r00 * fx);
    t[1] = static_cast<float>(sx * r01 * fy);
    t[2] = static_cast<float>(cx);
    t[3] = static_cast<float>(sy * r10 * fx);
    t[4] = static_cast<float>(sy * r11 * fy);
    t[5] = static_cast<float>(cy);
  }
  auto grid = at::affine_grid_generator(ThetaTensor(theta, n, x), {n, 3, size, size}, false);
  return at::grid_sampler(x, grid, kBilinear, kPadBorder, false);
}

at::Tensor ApplyRandAugOp(const at::Tensor& x, RandAugOp op, double magnitude,
                          const std::vector<double>& signs, const AugmentConfig& c, HostRng& rng) {
  const double level = magnitude / 10.0;  // MAX_LEVEL 10; larger magnitudes extrapolate
  const int64_t n = x.size(0), H = x.size(2), W = x.size(3);
  const double enhance = level * 1.8 + 0.1;
  auto sign = [&](int64_t i) { return i < static_cast<int64_t>(signs.size()) ? signs[i] : 1.0; };
  auto affine = [&](auto fill_row) {
    std::vector<float> theta(static_cast<size_t>(n) * 6);
    for (int64_t i = 0; i < n; ++i) fill_row(i, &theta[static_cast<size_t>(i) * 6]);
    return AffineFill128(x, theta);
  };
  switch (op) {
    case RandAugOp::kAutoContrast: {
      auto lo = x.amin({2, 3}, true), hi = x.amax({2, 3}, true);
      auto scale = 255.0 / (hi - lo).clamp_min(1e-6);
      return at::where(hi > lo, Trunc255((x - lo) * scale), x);
    }
    case RandAugOp::kEqualize:
      return Equalize(x);
    case RandAugOp::kInvert:
      return 255.0 - x;
    case RandAugOp::kRotate: {
      const double deg = level * 30.0;
      return affine([&](int64_t i, float* t) {
        const double a = sign(i) * deg * M_PI / 180.0;
        t[0] = static_cast<float>(std::cos(a));
        t[1] = static_cast<float>(-std::sin(a) * H / W);
        t[2] = 0;
        t[3] = static_cast<float>(std::sin(a) * W / H);
        t[4] = static_cast<float>(std::cos(a));
        t[5] = 0;
      });
    }
    case RandAugOp::kPosterize: {
      const int bits = std::clamp(static_cast<int>(level * 4.0), 0, 8);
      if (bits >= 8) return x;
      const double f = std::ldexp(1.0, 8 - bits);
      return at::floor(x / f) * f;
    }
    case RandAugOp::kSolarize: {
      const double threshold = std::floor(level * 256.0);
      return at::where(x < threshold, x, 255.0 - x);
    }
    case RandAugOp::kColor:
      return Blend(Grayscale(x).expand_as(x), x, enhance);
    case RandAugOp::kContrast: {
      auto mean = Grayscale(x).mean({1, 2, 3}, true);
      return Blend(mean.expand_as(x), x, enhance);
    }
    case RandAugOp::kBrightness:
      return Blend(at::zeros_like(x), x, enhance);
    case RandAugOp::kSharpness:
      return Sharpness(x, enhance);
    case RandAugOp::kShearX:
    case RandAugOp::kShearY: {
      // TF shear maps output (x, y) to input (x + s*y, y) in pixels from the top-left corner;
      // in centred normalised coordinates of a HxW image that is x' = x + s*(H/W)*(y + 1).
      const bool along_x = op == RandAugOp::kShearX;
      return affine([&](int64_t i, float* t) {
        const double s = sign(i) * level * 0.3;
        std::fill(t, t + 6, 0.f);
        t[0] = 1;
        t[4] = 1;
        if (along_x) {
          t[1] = static_cast<float>(s * H / W);
          t[2] = static_cast<float>(s * H / W);
        } else {
          t[3] = static_cast<float>(s * W / H);
          t[5] = static_cast<float>(s * W / H);
        }
      });
    }
    case RandAugOp::kTranslateX:
    case RandAugOp::kTranslateY: {
      const bool along_x = op == RandAugOp::kTranslateX;
      const double px = level * c.randaug_translate_px;
      return affine([&](int64_t i, float* t) {
        std::fill(t, t + 6, 0.f);
        t[0] = 1;
        t[4] = 1;
        if (along_x) {
          t[2] = static_cast<float>(2.0 * sign(i) * px / W);
        } else {
          t[5] = static_cast<float>(2.0 * sign(i) * px / H);
        }
      });
    }
    case RandAugOp::kCutout: {
      const int64_t pad = static_cast<int64_t>(level * c.randaug_cutout_px);
      std::vector<int64_t> box(static_cast<size_t>(n) * 4);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t cy = rng.Int(H), cx = rng.Int(W);
        box[i * 4 + 0] = std::max<int64_t>(0, cy - pad);
        box[i * 4 + 1] = std::min<int64_t>(H, cy + pad);
        box[i * 4 + 2] = std::max<int64_t>(0, cx - pad);
        box[i * 4 + 3] = std::min<int64_t>(W, cx + pad);
      }
      auto b = at::from_blob(box.data(), {n, 4}, at::kLong).clone().to(x.device());
      auto ys = at::arange(H, b.options()).view({1, H, 1});
      auto xs = at::arange(W, b.options()).view({1, 1, W});
      auto mask = (ys >= b.select(1, 0).view({n, 1, 1})) & (ys < b.select(1, 1).view({n, 1, 1})) &
                  (xs >= b.select(1, 2).view({n, 1, 1})) & (xs < b.select(1, 3).view({n, 1, 1}));
      return at::where(mask.unsqueeze(1), at::full({}, 128.0, x.options()), x);
    }
    case RandAugOp::kSolarizeAdd: {
      const double add = std::floor(level * 110.0);
      return at::where(x < 128.0, (x + add).clamp(0.0, 255.0), x);
    }
  }
  throw std::invalid_argument("RandAugment: unknown op " + std::to_string(static_cast<int>(op)));
}

at::Tensor RandAugment(const at::Tensor& input, int layers, double magnitude,
                       const AugmentConfig& c, HostRng& rng,
                       std::vector<std::vector<int>>* chosen) {
  auto x = input.round().clamp(0.0, 255.0);
  const int64_t n = x.size(0);
  for (int layer = 0; layer < layers; ++layer) {
    std::vector<int> ops(static_cast<size_t>(n));
    std::vector<double> signs(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      ops[i] = static_cast<int>(rng.Int(kNumRandAugOps));
      signs[i] = rng.Bernoulli(0.5) ? 1.0 : -1.0;
    }
    if (chosen) chosen->push_back(ops);
    for (int op = 0; op < kNumRandAugOps; ++op) {
      std::vector<int64_t> idx;
      std::vector<double> sub_signs;
      for (int64_t i = 0; i < n; ++i) {
        if (ops[i] == op) {
          idx.push_back(i);
          sub_signs.push_back(signs[i]);
        }
      }
      if (idx.empty()) continue;
      auto index = at::from_blob(idx.data(), {static_cast<int64_t>(idx.size())}, at::kLong)
                       .clone()
                       .to(x.device());
      auto out = ApplyRandAugOp(x.index_select(0, index), static_cast<RandAugOp>(op), magnitude,
                                sub_signs, c, rng);
      x.index_copy_(0, index, out);
    }
  }
  return x;
}

namespace {

void Mixup(at::Tensor images, at::Tensor targets, double alpha, HostRng& rng) {
  const int64_t n = images.size(0);
  if (n == 0) return;
  std::vector<float> lam(static_cast<size_t>(n));
  for (auto& l : lam) {
    const double b = rng.Beta(alpha, alpha);
    l = static_cast<float>(std::max(b, 1.0 - b));
  }
  auto l = at::from_blob(lam.data(), {n}, at::kFloat).clone().to(images.device());
  auto xr = images.flip({0}), tr = targets.flip({0});
  auto li = l.view({n, 1, 1, 1}), lt = l.view({n, 1});
  auto new_x = li * images + (1 - li) * xr;
  auto new_t = lt * targets + (1 - lt) * tr;
  images.copy_(new_x);
  targets.copy_(new_t);
}

void Cutmix(at::Tensor images, at::Tensor targets, double alpha, HostRng& rng) {
  const int64_t n = images.size(0), H = images.size(2), W = images.size(3);
  if (n == 0) return;
  std::vector<int64_t> box(static_cast<size_t>(n) * 4);
  std::vector<float> lam(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double l = rng.Beta(alpha, alpha);
    const double cut = std::sqrt(1.0 - l);
    const int64_t cw = static_cast<int64_t>(W * cut), ch = static_cast<int64_t>(H * cut);
    const int64_t cx = rng.Int(W), cy = rng.Int(H);
    const int64_t y0 = std::clamp<int64_t>(cy - ch / 2, 0, H),
                  y1 = std::clamp<int64_t>(cy + ch / 2, 0, H);
    const int64_t x0 = std::clamp<int64_t>(cx - cw / 2, 0, W),
                  x1 = std::clamp<int64_t>(cx + cw / 2, 0, W);
    box[i * 4 + 0] = y0;
    box[i * 4 + 1] = y1;
    box[i * 4 + 2] = x0;
    box[i * 4 + 3] = x1;
    // The label weight is the area actually kept after clipping the box.
    lam[i] = static_cast<float>(1.0 - static_cast<double>((y1 - y0) * (x1 - x0)) / (H * W));
  }
  auto b = at::from_blob(box.data(), {n, 4}, at::kLong).clone().to(images.device());
  auto ys = at::arange(H, b.options()).view({1, H, 1});
  auto xs = at::arange(W, b.options()).view({1, 1, W});
  auto mask = (ys >= b.select(1, 0).view({n, 1, 1})) & (ys < b.select(1, 1).view({n, 1, 1})) &
              (xs >= b.select(1, 2).view({n, 1, 1})) & (xs < b.select(1, 3).view({n, 1, 1}));
  auto l = at::from_blob(lam.data(), {n}, at::kFloat).clone().to(images.device()).view({n, 1});
  auto xr = images.flip({0}), tr = targets.flip({0});
  auto new_x = at::where(mask.unsqueeze(1), xr, images);
  auto new_t = l * targets + (1 - l) * tr;
  images.copy_(new_x);
  targets.copy_(new_t);
}

}  // namespace

void MixupCutmix(at::Tensor& images, at::Tensor& targets, double mixup_alpha, double cutmix_alpha,
                 HostRng& rng) {
  const int64_t n = images.size(0);
  if (mixup_alpha > 0 && cutmix_alpha > 0) {
    const int64_t half = n / 2;
    Mixup(images.narrow(0, 0, half), targets.narrow(0, 0, half), mixup_alpha, rng);
    Cutmix(images.narrow(0, half, n - half), targets.narrow(0, half, n - half), cutmix_alpha, rng);
  } else if (mixup_alpha > 0) {
    Mixup(images, targets, mixup_alpha, rng);
  } else if (cutmix_alpha > 0) {
    Cutmix(images, targets, cutmix_alpha, rng);
  }
}

at::Tensor Normalize(const at::Tensor& x, const std::string& mode) {
  if (mode == "imagenet") {
    auto mean = at::tensor({0.485f, 0.456f, 0.406f}, x.options()).view({1, 3, 1, 1}) * 255.0;
    auto std = at::tensor({0.229f, 0.224f, 0.225f}, x.options()).view({1, 3, 1, 1}) * 255.0;
    return (x - mean) / std;
  }
  if (mode == "inception") return (x - 128.0) / 128.0;
  if (mode == "none") return x / 255.0;
  throw std::invalid_argument("augment.normalize: expected imagenet|inception|none, got '" + mode +
                              "'");
}

at::Tensor EvalResize(const at::Tensor& nhwc_u8, int size, bool center_crop) {
  auto x = nhwc_u8.permute({0, 3, 1, 2}).to(at::kFloat);
  const int64_t H = x.size(2), W = x.size(3);
  if (center_crop) {
    const double frac = static_cast<double>(size) / (size + 32);
    const int64_t side = std::max<int64_t>(
        1, static_cast<int64_t>(std::llround(frac * static_cast<double>(std::min(H, W)))));
    x = x.narrow(2, (H - side) / 2, side).narrow(3, (W - side) / 2, side);
  }
  if (x.size(2) == size && x.size(3) == size) return x.contiguous();
  return at::_upsample_bicubic2d_aa(x.contiguous(), {size, size}, false).round().clamp(0.0, 255.0);
}

TrainBatch AugmentTrain(const at::Tensor& nhwc_u8, const at::Tensor& labels, int num_classes,
                        const job::Stage& stage, double label_smoothing, const AugmentConfig& c,
                        HostRng& rng) {
  TrainBatch b;
  // Note [identity geometry]: with no crop, flip or rotation the training image is the evaluation
  // image (EvalResize's antialiased bicubic, not the sampler's bilinear), so a recipe without
  // online augmentation (the study's) trains on exactly what it is validated on.
  const bool identity =
      !c.random_resized_crop && c.hflip_prob <= 0 && c.vflip_prob <= 0 && !c.rot90;
  auto x = identity ? EvalResize(nhwc_u8, stage.image_size, /*center_crop=*/false)
                    : RandomResizedCropFlip(nhwc_u8, stage.image_size, c, rng);
  if (stage.randaug_magnitude > 0 && c.randaug_layers > 0) {
    x = RandAugment(x, c.randaug_layers, stage.randaug_magnitude, c, rng);
  }
  auto t = at::one_hot(labels.to(at::kLong), num_classes).to(at::kFloat);
  if (label_smoothing > 0) t = t * (1.0 - label_smoothing) + label_smoothing / num_classes;
  MixupCutmix(x, t, stage.mixup_alpha, stage.cutmix_alpha, rng);
  b.images = Normalize(x, c.normalize);
  b.targets = t;
  return b;
}

at::Tensor AugmentEval(const at::Tensor& nhwc_u8, int size, const AugmentConfig& c) {
  return Normalize(EvalResize(nhwc_u8, size, c.eval_center_crop), c.normalize);
}

}  // namespace effnet::data
