// Unit tests of worker/model: architecture tables, parameter counts, MACs, padding, memory
// format, dropout, freezing. No Python needed. Weights files: tests/formats/test_weights.cpp.
#include <ftw.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>

#include "tests/formats/test_util.h"
#include "worker/formats/state_dict.h"
#include "worker/model/efficientnet.h"

namespace effnet::model {
namespace {

using formats::GetStateDict;
using formats::LoadStateDict;
using formats::StateDict;
using formats_test::TempDir;
using formats_test::Tiny;

// timm's default head (ImageNet, 1000 classes).
ModelConfig Timm(const std::string& variant = "b0") {
  ModelConfig c;
  c.variant = variant;
  c.num_classes = 1000;
  return c;
}

TEST(Architecture, ParameterCountsExact) {
  const std::map<std::string, int64_t> expected = {
      {"b0", 7139704}, {"b1", 8141052}, {"b2", 10096086}, {"b3", 14358406},
      {"s", 21458488}, {"m", 54139356}, {"l", 118515272},
  };
  for (const auto& [v, n] : expected) {
    ModelConfig c = Timm(v);
    EXPECT_EQ(CountParametersAnalytic(c), n) << v;
    torch::NoGradGuard g;
    EfficientNetV2 m(c);
    EXPECT_EQ(CountParameters(*m), n) << v;
  }
}

TEST(Architecture, ResolvedTablesMatchReference) {
  // Reference table 1.4: stem, (out x repeats) per stage, head, blocks.
  struct Row {
    std::string v;
    int stem;
    std::vector<std::pair<int, int>> stages;
    int head;
    int blocks;
  };
  const std::vector<Row> rows = {
      {"b0", 32, {{16, 1}, {32, 2}, {48, 2}, {96, 3}, {112, 5}, {192, 8}}, 1280, 21},
      {"b1", 32, {{16, 2}, {32, 3}, {48, 3}, {96, 4}, {112, 6}, {192, 9}}, 1280, 27},
      {"b2", 32, {{16, 2}, {32, 3}, {56, 3}, {104, 4}, {120, 6}, {208, 10}}, 1408, 28},
      {"b3", 40, {{16, 2}, {40, 3}, {56, 3}, {112, 5}, {136, 7}, {232, 12}}, 1536, 32},
      {"s", 24, {{24, 2}, {48, 4}, {64, 4}, {128, 6}, {160, 9}, {256, 15}}, 1280, 40},
      {"m", 24, {{24, 3}, {48, 5}, {80, 5}, {160, 7}, {176, 14}, {304, 18}, {512, 5}}, 1280, 57},
      {"l", 32, {{32, 4}, {64, 7}, {96, 7}, {192, 10}, {224, 19}, {384, 25}, {640, 7}}, 1280, 79},
  };
  const std::vector<std::string> types = {"cn", "er", "er", "ir", "ir", "ir", "ir"};
  const std::vector<int> strides = {1, 2, 2, 2, 1, 2, 1};
  for (const Row& r : rows) {
    ModelConfig c = Timm(r.v);
    const Architecture a = ResolveArchitecture(c);
    EXPECT_EQ(a.stem_channels, r.stem) << r.v;
    EXPECT_EQ(a.head_channels, r.head) << r.v;
    EXPECT_EQ(a.num_blocks(), r.blocks) << r.v;
    ASSERT_EQ(a.stages.size(), r.stages.size()) << r.v;
    for (size_t i = 0; i < r.stages.size(); ++i) {
      EXPECT_EQ(a.stages[i].out_channels, r.stages[i].first) << r.v << " stage " << i;
      EXPECT_EQ(a.stages[i].repeats, r.stages[i].second) << r.v << " stage " << i;
      EXPECT_EQ(a.stages[i].block_type, types[i]) << r.v << " stage " << i;
      EXPECT_EQ(a.stages[i].stride, strides[i]) << r.v << " stage " << i;
      EXPECT_EQ(a.stages[i].se, i >= 3) << r.v << " stage " << i;
    }
  }
}

TEST(Architecture, UnknownVariantIsAnError) {
  ModelConfig c = Timm("b9");
  EXPECT_FALSE(ValidateConfig(c).ok());
  EXPECT_THROW(ResolveArchitecture(c), StatusError);
  try {
    EfficientNetV2 m(c);
    FAIL() << "built an unknown variant";
  } catch (const StatusError& e) {
    EXPECT_NE(std::string(e.what()).find("b9"), std::string::npos);
  }
}

TEST(Architecture, MacsB0AndClasses) {
  ModelConfig c = Timm();
  const double g = CountMacs(c, 224) / 1e9;
  EXPECT_GT(g, 0.715);
  EXPECT_LT(g, 0.735);
  // S at 384 px: the official README's 8.4B "FLOPs" (multiply-adds).
  c.variant = "s";
  EXPECT_NEAR(CountMacs(c, 384) / 1e9, 8.37, 0.05);
  // Only the classifier depends on the class count.
  ModelConfig b2 = Timm("b2");
  ModelConfig b2_7 = b2;
  b2_7.num_classes = 7;
  EXPECT_EQ(CountMacs(b2, 260) - CountMacs(b2_7, 260), int64_t{1408} * (1000 - 7));
}

TEST(Architecture, StateDictKeysAreTimmNames) {
  ModelConfig c = Timm();  // full B0
  EfficientNetV2 m(c);
  const StateDict sd = GetStateDict(*m);
  EXPECT_EQ(sd.size(), 420u);  // reference section 6 (with num_batches_tracked)
  const std::map<std::string, std::vector<int64_t>> shapes = {
      {"conv_stem.weight", {32, 3, 3, 3}},
      {"bn1.running_var", {32}},
      {"blocks.0.0.conv.weight", {16, 32, 3, 3}},
      {"blocks.1.0.conv_exp.weight", {64, 16, 3, 3}},
      {"blocks.1.1.conv_pwl.weight", {32, 128, 1, 1}},
      {"blocks.3.0.conv_pw.weight", {192, 48, 1, 1}},
      {"blocks.3.0.conv_dw.weight", {192, 1, 3, 3}},
      {"blocks.3.0.se.conv_reduce.weight", {12, 192, 1, 1}},
      {"blocks.3.0.se.conv_reduce.bias", {12}},
      {"blocks.3.1.se.conv_expand.weight", {384, 24, 1, 1}},
      {"blocks.3.0.conv_pwl.weight", {96, 192, 1, 1}},
      {"blocks.5.7.bn3.weight", {192}},
      {"conv_head.weight", {1280, 192, 1, 1}},
      {"bn2.bias", {1280}},
      {"classifier.weight", {1000, 1280}},
      {"classifier.bias", {1000}},
  };
  for (const auto& [k, s] : shapes) {
    const at::Tensor* t = sd.find(k);
    ASSERT_NE(t, nullptr) << k;
    EXPECT_EQ(t->sizes().vec(), s) << k;
  }
  EXPECT_EQ(sd.keys().front(), "conv_stem.weight");
  EXPECT_EQ(sd.keys().back(), "classifier.bias");
  EXPECT_EQ(sd.find("blocks.0.0.bn1.num_batches_tracked")->scalar_type(), at::kLong);
}

TEST(Architecture, ReferenceInit) {
  ModelConfig c;
  c.num_classes = 100;
  c.head_init = effnet::model::HeadInit::kReference;  // official/timm (Note [head init])
  torch::manual_seed(3);
  EfficientNetV2 m(c);
  const StateDict sd = GetStateDict(*m);
  // conv_head: fan_out = 1*1*1280 -> std sqrt(2/1280).
  EXPECT_NEAR(sd["conv_head.weight"].std().item<double>(), std::sqrt(2.0 / 1280), 0.002);
  // depthwise 3x3 with groups = channels: fan_out = 9 -> std sqrt(2/9).
  EXPECT_NEAR(sd["blocks.5.0.conv_dw.weight"].std().item<double>(), std::sqrt(2.0 / 9), 0.02);
  const double bound = 1.0 / std::sqrt(100.0);
  EXPECT_LE(sd["classifier.weight"].abs().max().item<double>(), bound);
  EXPECT_GT(sd["classifier.weight"].abs().max().item<double>(), 0.9 * bound);
  EXPECT_EQ(sd["classifier.bias"].abs().sum().item<double>(), 0.0);
  EXPECT_TRUE(sd["bn2.weight"].eq(1).all().item<bool>());
  EXPECT_EQ(sd["blocks.3.0.se.conv_reduce.bias"].abs().sum().item<double>(), 0.0);
  // The default head is a Keras Dense layer's: Glorot, U(+-sqrt(6 / (1280 + 100))), also after
  // reset_classifier.
  c.head_init = effnet::model::HeadInit::kGlorot;
  EfficientNetV2 g(c);
  const double glorot = std::sqrt(6.0 / (1280 + 100));
  const auto w = GetStateDict(*g)["classifier.weight"];
  EXPECT_LE(w.abs().max().item<double>(), glorot);
  EXPECT_GT(w.abs().max().item<double>(), 0.9 * glorot);
  g->reset_classifier(7);
  const auto w7 = GetStateDict(*g)["classifier.weight"];
  EXPECT_LE(w7.abs().max().item<double>(), std::sqrt(6.0 / (1280 + 7)));
  EXPECT_GT(w7.abs().max().item<double>(), 0.9 * std::sqrt(6.0 / (1280 + 7)));
}

// Note [conv init]: keras draws the reference variance from a normal cut at 2 of its standard
// deviations; the reference's tails reach past that bound.
TEST(Architecture, KerasConvInitIsATruncatedNormalOfTheSameVariance) {
  ModelConfig c;
  c.num_classes = 7;
  for (const auto init : {effnet::model::ConvInit::kKeras, effnet::model::ConvInit::kReference}) {
    c.conv_init = init;
    torch::manual_seed(3);
    EfficientNetV2 m(c);
    const StateDict sd = GetStateDict(*m);
    const bool keras = init == effnet::model::ConvInit::kKeras;
    for (const auto& [key, fan_out] : std::vector<std::pair<std::string, double>>{
             {"conv_head.weight", 1280}, {"blocks.5.0.conv_dw.weight", 9}}) {
      const auto w = sd[key];
      const double sd_ref = std::sqrt(2.0 / fan_out), bound = 2.0 * sd_ref / 0.87962566103423978;
      EXPECT_NEAR(w.std().item<double>(), sd_ref, 0.03 * sd_ref) << key;
      EXPECT_NEAR(w.mean().item<double>(), 0.0, 0.03 * sd_ref) << key;
      const auto beyond = w.abs().gt(bound).sum().item<int64_t>();
      if (keras) {
        EXPECT_EQ(beyond, 0) << key;
        EXPECT_GT(w.abs().max().item<double>(), 0.98 * bound) << key;
      } else {
        EXPECT_GT(beyond, 0) << key;  // about 2.3 % of a normal lies beyond
      }
    }
    EXPECT_EQ(sd["blocks.3.0.se.conv_reduce.bias"].abs().sum().item<double>(), 0.0);
  }
}

TEST(Forward, TfSameShapesEvenAndOdd) {
  torch::manual_seed(0);
  EfficientNetV2 m(Tiny());
  m->eval();
  torch::NoGradGuard g;
  const int head = m->architecture().head_channels;
  for (auto [in, out] : std::vector<std::pair<int, int>>{{64, 2}, {65, 3}, {97, 4}, {32, 1}}) {
    auto f = m->forward_features(torch::randn({2, 3, in, in}));
    EXPECT_EQ(f.sizes().vec(), (std::vector<int64_t>{2, head, out, out})) << in;
  }
  auto rect = m->forward_features(torch::randn({1, 3, 64, 33}));
  EXPECT_EQ(rect.sizes().vec(), (std::vector<int64_t>{1, head, 2, 2}));
  EXPECT_EQ(m->forward(torch::randn({3, 3, 40, 40})).sizes().vec(), (std::vector<int64_t>{3, 10}));
}

TEST(Forward, TfSameEqualsSymmetricOnlyForOddSizes) {
  // Note: a 3x3/2 conv pads 1/1 on odd inputs (same as symmetric) but 0/1 on even ones.
  torch::manual_seed(0);
  ModelConfig a = Tiny();
  ModelConfig b = Tiny();
  b.padding = Padding::kSymmetric;
  EfficientNetV2 tf(a), sym(b);
  ASSERT_TRUE(LoadStateDict(*sym, GetStateDict(*tf)).ok());
  tf->eval();
  sym->eval();
  torch::NoGradGuard g;
  auto odd = torch::randn({2, 3, 65, 65});
  EXPECT_TRUE(torch::allclose(tf->forward(odd), sym->forward(odd), 1e-5, 1e-6));
  auto even = torch::randn({2, 3, 64, 64});
  EXPECT_FALSE(torch::allclose(tf->forward(even), sym->forward(even), 1e-3, 1e-4));
}

TEST(Forward, ChannelsLastMatchesContiguous) {
  torch::manual_seed(0);
  EfficientNetV2 m(Tiny());
  m->eval();
  torch::NoGradGuard g;
  auto x = torch::randn({2, 3, 64, 64});
  auto xl = x.contiguous(at::MemoryFormat::ChannelsLast);
  m->set_memory_format(at::MemoryFormat::ChannelsLast);
  EXPECT_TRUE(GetStateDict(*m)["conv_head.weight"].is_contiguous(at::MemoryFormat::ChannelsLast));
  auto f = m->forward_features(xl);
  EXPECT_TRUE(f.is_contiguous(at::MemoryFormat::ChannelsLast));
  EXPECT_TRUE(torch::allclose(m->forward(xl), m->forward(x), 1e-4, 1e-5));
}

// CUDA logits equal the CPU's for the full B0 (eval, fp32, TF32 off): run by `ctest -L gpu`
// on a GPU machine (bench/gpu/run.sh); skipped elsewhere.
TEST(Cuda, LogitsMatchTheCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(0);
  effnet::model::ModelConfig c;
  c.variant = "b0";
  c.num_classes = 7;
  EfficientNetV2 m(c);
  m->eval();
  torch::NoGradGuard g;
  const bool tf32 = at::globalContext().allowTF32CuDNN();
  at::globalContext().setAllowTF32CuDNN(false);
  auto x = torch::randn({4, 3, 128, 128});
  const auto cpu = m->forward(x);
  m->to(torch::kCUDA);
  const auto cuda = m->forward(x.to(torch::kCUDA)).cpu();
  at::globalContext().setAllowTF32CuDNN(tf32);
  EXPECT_TRUE(torch::allclose(cuda, cpu, 1e-3, 1e-4))
      << "max abs diff " << (cuda - cpu).abs().max().item<double>();
}

TEST(Forward, BackwardReachesEveryParameter) {
  torch::manual_seed(0);
  EfficientNetV2 m(Tiny());
  m->train();
  auto loss = m->forward(torch::randn({4, 3, 64, 64})).pow(2).mean();
  loss.backward();
  for (const auto& p : m->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
  }
}

TEST(Forward, SetDropoutChangesTrainingOutputOnly) {
  torch::manual_seed(0);
  EfficientNetV2 m(Tiny());
  EXPECT_EQ(m->dropout(), 0.0);
  auto x = torch::randn({4, 3, 64, 64});
  m->train();
  torch::NoGradGuard g;
  // Train mode without dropout/drop-path is deterministic (BN uses batch statistics).
  EXPECT_TRUE(m->forward(x).equal(m->forward(x)));
  m->set_dropout(0.5);
  EXPECT_EQ(m->dropout(), 0.5);
  EXPECT_FALSE(m->forward(x).equal(m->forward(x)));
  m->eval();
  EXPECT_TRUE(m->forward(x).equal(m->forward(x)));
  EXPECT_THROW(m->set_dropout(1.0), StatusError);
  ModelConfig ref = Timm("b3");
  EXPECT_EQ(EfficientNetV2(ref)->dropout(), 0.3);
}

TEST(Forward, DropPathOnlyInTraining) {
  torch::manual_seed(0);
  ModelConfig c = Tiny();
  c.extra_depth = 1.0;  // residual blocks exist
  c.drop_path = 0.5;
  EfficientNetV2 m(c);
  auto x = torch::randn({4, 3, 64, 64});
  torch::NoGradGuard g;
  m->train();
  EXPECT_FALSE(m->forward(x).equal(m->forward(x)));
  m->eval();
  EXPECT_TRUE(m->forward(x).equal(m->forward(x)));
}

TEST(Transfer, FreezeStages) {
  torch::manual_seed(0);
  EfficientNetV2 m(Tiny());
  m->freeze_stages(2);
  m->train();
  for (const auto& p : m->named_parameters()) {
    const std::string& k = p.key();
    const bool frozen = k.rfind("conv_stem", 0) == 0 || k.rfind("bn1.", 0) == 0 ||
                        k.rfind("blocks.0.", 0) == 0 || k.rfind("blocks.1.", 0) == 0;
    EXPECT_EQ(p.value().requires_grad(), !frozen) << k;
  }
  for (const auto& item : m->named_modules()) {
    if (!item.value()->as<torch::nn::BatchNorm2dImpl>()) continue;
    const std::string& k = item.key();
    const bool frozen = k == "bn1" || k.rfind("blocks.0.", 0) == 0 || k.rfind("blocks.1.", 0) == 0;
    EXPECT_EQ(item.value()->is_training(), !frozen) << k;
  }
  // A training step leaves the frozen BN statistics alone and moves the others.
  const StateDict before = GetStateDict(*m);
  std::map<std::string, at::Tensor> copy;
  for (const auto& it : before) copy[it.key()] = it.value().clone();
  m->forward(torch::randn({4, 3, 64, 64})).sum().backward();
  const StateDict after = GetStateDict(*m);
  EXPECT_TRUE(after["blocks.1.0.bn1.running_mean"].equal(copy["blocks.1.0.bn1.running_mean"]));
  EXPECT_FALSE(after["blocks.2.0.bn1.running_mean"].equal(copy["blocks.2.0.bn1.running_mean"]));
  for (const auto& p : m->named_parameters()) {
    EXPECT_EQ(p.value().grad().defined(), p.value().requires_grad()) << p.key();
  }
  m->freeze_stages(-1);
  for (const auto& p : m->parameters()) EXPECT_TRUE(p.requires_grad());
  EXPECT_TRUE(m->named_modules()["bn1"]->is_training());
  // k = stages + 1 freezes everything but the classifier; beyond is an error.
  m->freeze_stages(7);
  for (const auto& p : m->named_parameters()) {
    EXPECT_EQ(p.value().requires_grad(), p.key().rfind("classifier.", 0) == 0) << p.key();
  }
  EXPECT_THROW(m->freeze_stages(8), StatusError);
}

TEST(Cli, EffnetModelJson) {
  const char* bin = std::getenv("EFFNET_BIN_DIR");
  ASSERT_NE(bin, nullptr) << "run through ctest (EFFNET_BIN_DIR)";
  const TempDir dir;
  const std::string out = dir / "cli.json";
  const std::string cmd =
      std::string(bin) + "/effnet-model --variant b2 --classes 7 --json > " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream f(out);
  std::string s((std::istreambuf_iterator<char>(f)), {});
  // 10,096,086 - (1408*1000 + 1000) + (1408*7 + 7)
  EXPECT_NE(s.find("\"parameters\": 8696949"), std::string::npos) << s;
  EXPECT_NE(s.find("\"image\": 260"), std::string::npos) << s;
  EXPECT_NE(s.find("\"num_blocks\": 28"), std::string::npos) << s;
  const std::string bad = std::string(bin) + "/effnet-model --variant q7 > /dev/null 2>&1";
  EXPECT_NE(std::system(bad.c_str()), 0);
}

}  // namespace
}  // namespace effnet::model
