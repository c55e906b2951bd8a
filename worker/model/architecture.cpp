#include "worker/model/architecture.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace effnet::model {
namespace {

// One row of a block table before scaling (reference 1.1).
struct BaseStage {
  const char* type;
  int expansion;
  int stride;
  int channels;
  int repeats;
  bool se;
};

struct VariantSpec {
  double width;
  double depth;
  double dropout;
  int eval_size;
  int stem;
  int head;
  std::vector<BaseStage> stages;
};

const std::vector<BaseStage>& BaseTableB() {
  static const std::vector<BaseStage> t = {
      {"cn", 1, 1, 16, 1, false}, {"er", 4, 2, 32, 2, false}, {"er", 4, 2, 48, 2, false},
      {"ir", 4, 2, 96, 3, true},  {"ir", 6, 1, 112, 5, true}, {"ir", 6, 2, 192, 8, true},
  };
  return t;
}

// Reference tables 1.1 (block tables) and 1.2 (multipliers, dropout, eval size).
const std::vector<std::pair<std::string, VariantSpec>>& Specs() {
  static const std::vector<std::pair<std::string, VariantSpec>> specs = {
      {"b0", {1.0, 1.0, 0.2, 224, 32, 1280, BaseTableB()}},
      {"b1", {1.0, 1.1, 0.2, 240, 32, 1280, BaseTableB()}},
      {"b2", {1.1, 1.2, 0.3, 260, 32, 1280, BaseTableB()}},
      {"b3", {1.2, 1.4, 0.3, 300, 32, 1280, BaseTableB()}},
      {"s",
       {1.0,
        1.0,
        0.2,
        384,
        24,
        1280,
        {{"cn", 1, 1, 24, 2, false},
         {"er", 4, 2, 48, 4, false},
         {"er", 4, 2, 64, 4, false},
         {"ir", 4, 2, 128, 6, true},
         {"ir", 6, 1, 160, 9, true},
         {"ir", 6, 2, 256, 15, true}}}},
      {"m",
       {1.0,
        1.0,
        0.3,
        480,
        24,
        1280,
        {{"cn", 1, 1, 24, 3, false},
         {"er", 4, 2, 48, 5, false},
         {"er", 4, 2, 80, 5, false},
         {"ir", 4, 2, 160, 7, true},
         {"ir", 6, 1, 176, 14, true},
         {"ir", 6, 2, 304, 18, true},
         {"ir", 6, 1, 512, 5, true}}}},
      {"l",
       {1.0,
        1.0,
        0.4,
        480,
        32,
        1280,
        {{"cn", 1, 1, 32, 4, false},
         {"er", 4, 2, 64, 7, false},
         {"er", 4, 2, 96, 7, false},
         {"ir", 4, 2, 192, 10, true},
         {"ir", 6, 1, 224, 19, true},
         {"ir", 6, 2, 384, 25, true},
         {"ir", 6, 1, 640, 7, true}}}},
  };
  return specs;
}

std::string KnownVariantList() {
  std::string s;
  for (const auto& v : KnownVariants()) s += (s.empty() ? "" : " ") + v;
  return s;
}

const VariantSpec* FindSpec(const std::string& variant) {
  for (const auto& [name, spec] : Specs()) {
    if (name == variant) return &spec;
  }
  return nullptr;
}

const VariantSpec& SpecOf(const std::string& variant) {
  const VariantSpec* spec = FindSpec(variant);
  if (spec == nullptr) {
    throw StatusError(InvalidArgument("unknown EfficientNetV2 variant '" + variant +
                                      "' (known: " + KnownVariantList() + ")"));
  }
  return *spec;
}

// Reference 1.3: max(8, int(c*w + 4) // 8 * 8), no 90% correction.
int RoundChannels(int channels, double width) {
  const double v = channels * width;
  return std::max(8, static_cast<int>(v + 4.0) / 8 * 8);
}

int RoundRepeats(int repeats, double depth) { return static_cast<int>(std::ceil(repeats * depth)); }

}  // namespace

// Squeeze-excite reduced width: from the BLOCK INPUT channels (reference 1.5).
int SeReduced(int in_channels) { return std::max(1, static_cast<int>(in_channels * 0.25)); }

// timm make_divisible(v, 8) for expanded widths (a no-op for multiples of 8).
int MakeDivisible(int v) { return std::max(8, (v + 4) / 8 * 8); }

int OutSize(int x, int stride) { return (x + stride - 1) / stride; }

int Architecture::num_blocks() const {
  int n = 0;
  for (const auto& s : stages) n += s.repeats;
  return n;
}

const std::vector<std::string>& PaddingNames() {
  static const std::vector<std::string> names = {"tf_same", "symmetric"};
  return names;
}

const std::vector<std::string>& HeadInitNames() {
  static const std::vector<std::string> names = {"glorot", "reference"};
  return names;
}

const std::vector<std::string>& ConvInitNames() {
  static const std::vector<std::string> names = {"reference", "keras"};
  return names;
}

const std::vector<std::string>& KnownVariants() {
  static const std::vector<std::string> v = [] {
    std::vector<std::string> names;
    for (const auto& [name, spec] : Specs()) names.push_back(name);
    return names;
  }();
  return v;
}

double ReferenceDropout(const std::string& variant) { return SpecOf(variant).dropout; }
int ReferenceEvalImageSize(const std::string& variant) { return SpecOf(variant).eval_size; }

Status ValidateConfig(const ModelConfig& c) {
  if (FindSpec(c.variant) == nullptr) {
    return InvalidArgument("model.variant: unknown EfficientNetV2 variant '" + c.variant +
                           "' (known: " + KnownVariantList() + ")");
  }
  if (c.num_classes < 1) {
    return InvalidArgument("model.num_classes: must be >= 1, got " + std::to_string(c.num_classes));
  }
  if (c.dropout >= 1.0) {
    return InvalidArgument("model.dropout: must be < 1, got " + std::to_string(c.dropout));
  }
  if (c.drop_path < 0.0 || c.drop_path >= 1.0) {
    return InvalidArgument("model.drop_path: must be in [0, 1), got " +
                           std::to_string(c.drop_path));
  }
  if (!(c.extra_width > 0.0) || !(c.extra_depth > 0.0)) {
    return InvalidArgument("model.extra_width/extra_depth: must be > 0");
  }
  if (!(c.bn_eps > 0.0) || c.bn_momentum < 0.0 || c.bn_momentum > 1.0) {
    return InvalidArgument("model.bn_eps must be > 0 and model.bn_momentum in [0, 1]");
  }
  return Status::Ok();
}

Architecture ResolveArchitecture(const ModelConfig& config) {
  ThrowIfError(ValidateConfig(config));
  const VariantSpec& spec = SpecOf(config.variant);
  const double w = spec.width * config.extra_width;
  const double d = spec.depth * config.extra_depth;
  Architecture arch;
  arch.stem_channels = RoundChannels(spec.stem, w);
  arch.head_channels = RoundChannels(spec.head, w);
  for (const BaseStage& b : spec.stages) {
    StageInfo s;
    s.block_type = b.type;
    s.out_channels = RoundChannels(b.channels, w);
    s.repeats = RoundRepeats(b.repeats, d);
    s.stride = b.stride;
    s.expansion = b.expansion;
    s.kernel = 3;
    s.se = b.se;
    arch.stages.push_back(s);
  }
  return arch;
}

int64_t CountMacs(const ModelConfig& config, int image_size) {
  const Architecture a = ResolveArchitecture(config);
  int64_t macs = 0;
  int64_t hw = OutSize(image_size, 2);
  macs += hw * hw * 3 * 9 * a.stem_channels;
  int64_t in = a.stem_channels;
  for (const StageInfo& s : a.stages) {
    const int64_t kk = int64_t{s.kernel} * s.kernel;
    for (int i = 0; i < s.repeats; ++i) {
      const int stride = i == 0 ? s.stride : 1;
      const int64_t ho = OutSize(static_cast<int>(hw), stride);
      const int64_t out = s.out_channels;
      const int64_t mid = MakeDivisible(static_cast<int>(in * s.expansion));
      if (s.block_type == "cn") {
        macs += ho * ho * in * out * kk;
      } else if (s.block_type == "er") {
        macs += ho * ho * (in * mid * kk + mid * out);
      } else {
        macs += hw * hw * in * mid;                // conv_pw at the input size
        macs += ho * ho * (mid * kk + mid * out);  // depthwise + conv_pwl
        if (s.se) macs += 2 * mid * SeReduced(static_cast<int>(in));
      }
      hw = ho;
      in = out;
    }
  }
  macs += hw * hw * in * a.head_channels;
  macs += int64_t{a.head_channels} * config.num_classes;
  return macs;
}

int64_t CountParametersAnalytic(const ModelConfig& config) {
  const Architecture a = ResolveArchitecture(config);
  int64_t p = 27 * int64_t{a.stem_channels} + 2 * a.stem_channels;
  int64_t in = a.stem_channels;
  for (const StageInfo& s : a.stages) {
    const int64_t kk = int64_t{s.kernel} * s.kernel;
    for (int i = 0; i < s.repeats; ++i) {
      const int64_t out = s.out_channels;
      const int64_t mid = MakeDivisible(static_cast<int>(in * s.expansion));
      if (s.block_type == "cn") {
        p += in * out * kk + 2 * out;
      } else if (s.block_type == "er") {
        p += in * mid * kk + 2 * mid + mid * out + 2 * out;
      } else {
        p += in * mid + 2 * mid + mid * kk + 2 * mid + mid * out + 2 * out;
        if (s.se) {
          const int64_t rd = SeReduced(static_cast<int>(in));
          p += mid * rd + rd + rd * mid + mid;
        }
      }
      in = out;
    }
  }
  p += in * a.head_channels + 2 * a.head_channels;
  p += int64_t{a.head_channels} * config.num_classes + config.num_classes;
  return p;
}

}  // namespace effnet::model
