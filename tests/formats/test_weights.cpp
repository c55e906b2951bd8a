// worker/formats weights files: torch zip and safetensors round trips, corrupt files, name-matched
// import errors (key and both shapes, file and format), and the pretrained importer.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <map>

#include "tests/formats/test_util.h"
#include "worker/formats/pretrained.h"
#include "worker/formats/safetensors.h"
#include "worker/formats/state_dict.h"
#include "worker/formats/torch_zip.h"
#include "worker/model/efficientnet.h"

namespace effnet::formats {
namespace {

using formats_test::SameStateDict;
using formats_test::TempDir;
using formats_test::Tiny;
using model::EfficientNetV2;
using model::ModelConfig;

TEST(Weights, TorchZipRoundTrip) {
  const TempDir dir;
  torch::manual_seed(1);
  EfficientNetV2 a(Tiny());
  a->train();
  a->forward(torch::randn({2, 3, 32, 32}));  // non-trivial running stats
  const std::string path = dir / "ckpt.pt";
  ASSERT_TRUE(ExportWeights(*a, path).ok());
  torch::manual_seed(2);
  EfficientNetV2 b(Tiny());
  EXPECT_FALSE(SameStateDict(GetStateDict(*a), GetStateDict(*b)));
  Status st = ImportWeights(*b, path);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(SameStateDict(GetStateDict(*a), GetStateDict(*b)));
  auto read = ReadStateDict(path);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->keys(), GetStateDict(*a).keys());  // order kept
  a->eval();
  b->eval();
  auto x = torch::randn({2, 3, 48, 48});
  EXPECT_TRUE(a->forward(x).equal(b->forward(x)));
}

TEST(Weights, SafetensorsRoundTripAllDtypes) {
  const TempDir dir;
  StateDict d;
  d.insert("f32", torch::randn({3, 4}));
  d.insert("f16", torch::randn({5}).to(at::kHalf));
  d.insert("bf16", torch::randn({2, 2}).to(at::kBFloat16));
  d.insert("f64", torch::randn({1}).to(at::kDouble));
  d.insert("i64_scalar", torch::tensor(int64_t{42}));
  d.insert("i32", torch::arange(6, at::kInt).reshape({2, 3}));
  d.insert("u8", torch::arange(7, at::kByte));
  d.insert("bool", torch::tensor({true, false, true}));
  d.insert("non_contiguous", torch::arange(12, at::kFloat).reshape({3, 4}).t());
  d.insert("empty", torch::zeros({0, 3}));
  const std::string path = dir / "t.safetensors";
  ASSERT_TRUE(WriteStateDict(path, d).ok());
  auto r = ReadStateDict(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), d.size());
  for (const auto& item : d) {
    const at::Tensor* t = r->find(item.key());
    ASSERT_NE(t, nullptr) << item.key();
    EXPECT_EQ(t->scalar_type(), item.value().scalar_type()) << item.key();
    EXPECT_TRUE(t->equal(item.value())) << item.key();
  }
  // The model through safetensors.
  torch::manual_seed(1);
  EfficientNetV2 a(Tiny());
  const std::string mp = dir / "m.safetensors";
  ASSERT_TRUE(ExportWeights(*a, mp).ok());
  torch::manual_seed(2);
  EfficientNetV2 b(Tiny());
  ASSERT_TRUE(ImportWeights(*b, mp).ok());
  EXPECT_TRUE(SameStateDict(GetStateDict(*a), GetStateDict(*b)));
}

TEST(Weights, CorruptFilesAreErrorsNamingTheProblem) {
  const TempDir dir;
  StateDict d;
  d.insert("w", torch::randn({64}));
  const std::string good = dir / "g.safetensors";
  ASSERT_TRUE(WriteStateDict(good, d).ok());
  std::string bytes;
  {
    std::ifstream f(good, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  auto write = [&](const std::string& name, const std::string& content) {
    const std::string p = dir / name;
    std::ofstream(p, std::ios::binary) << content;
    return p;
  };
  auto truncated = ReadStateDict(write("trunc.safetensors", bytes.substr(0, bytes.size() - 4)));
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.status().message().find("key 'w'"), std::string::npos)
      << truncated.status().message();
  std::string huge = bytes;
  huge[5] = 0x7f;  // header length far beyond the file
  auto h = ReadStateDict(write("huge.safetensors", huge));
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.status().message().find("header length"), std::string::npos);
  auto missing = ReadStateDict(dir / "nope.pt");
  EXPECT_FALSE(missing.ok());
  // A zip that is cut short.
  const std::string pt = dir / "x.pt";
  ASSERT_TRUE(WriteStateDict(pt, d).ok());
  std::string zbytes;
  {
    std::ifstream f(pt, std::ios::binary);
    zbytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  auto z = ReadStateDict(write("cut.pt", zbytes.substr(0, zbytes.size() / 2)));
  EXPECT_FALSE(z.ok());
}

TEST(Weights, ImportErrorsNameKeyAndShapes) {
  torch::manual_seed(0);
  EfficientNetV2 m(Tiny());
  const StateDict ref = GetStateDict(*m);
  auto copy = [&](const std::string& drop) {
    StateDict d;
    for (const auto& it : ref) {
      if (it.key() != drop) d.insert(it.key(), it.value().clone());
    }
    return d;
  };
  // Missing.
  StateDict d = copy("blocks.1.0.conv_exp.weight");
  Status st = LoadStateDict(*m, d);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(
      st.message().find("missing key 'blocks.1.0.conv_exp.weight' (model shape [32, 8, 3, 3])"),
      std::string::npos)
      << st.message();
  // Unexpected.
  d = copy("");
  d.insert("blocks.9.0.conv.weight", torch::zeros({4, 4, 1, 1}));
  st = LoadStateDict(*m, d);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("unexpected key 'blocks.9.0.conv.weight' (file shape [4, 4, 1, 1])"),
            std::string::npos)
      << st.message();
  // Mis-shaped: nothing is copied.
  d = copy("conv_head.weight");
  d.insert("conv_head.weight", torch::ones({7, 3}));
  d["bn2.weight"].fill_(5.0);
  st = LoadStateDict(*m, d);
  ASSERT_FALSE(st.ok());
  const std::string model_shape = ShapeString(ref["conv_head.weight"].sizes());
  EXPECT_NE(st.message().find("shape mismatch for 'conv_head.weight': model " + model_shape +
                              " vs file [7, 3]"),
            std::string::npos)
      << st.message();
  EXPECT_TRUE(GetStateDict(*m)["bn2.weight"].eq(1).all().item<bool>());
  // num_batches_tracked may be missing.
  StateDict nbt;
  for (const auto& it : ref) {
    if (it.key().find("num_batches_tracked") == std::string::npos) nbt.insert(it.key(), it.value());
  }
  EXPECT_TRUE(LoadStateDict(*m, nbt).ok());
  LoadOptions strict;
  strict.allow_missing_num_batches_tracked = false;
  EXPECT_FALSE(LoadStateDict(*m, nbt, strict).ok());
}

TEST(Transfer, LoadPretrainedReplacesClassifier) {
  const TempDir dir;
  torch::manual_seed(0);
  EfficientNetV2 src(Tiny(1000));
  const std::string path = dir / "src.safetensors";
  ASSERT_TRUE(ExportWeights(*src, path).ok());
  EfficientNetV2 dst(Tiny(7));
  TransferOptions opt;
  opt.freeze_stages = 1;
  Status st = LoadPretrained(*dst, path, opt);
  ASSERT_TRUE(st.ok()) << st.ToString();
  const StateDict s = GetStateDict(*src), t = GetStateDict(*dst);
  EXPECT_TRUE(t["conv_head.weight"].equal(s["conv_head.weight"]));
  EXPECT_TRUE(t["blocks.5.0.bn3.running_var"].equal(s["blocks.5.0.bn3.running_var"]));
  EXPECT_EQ(t["classifier.weight"].size(0), 7);
  EXPECT_EQ(dst->config().num_classes, 7);
  EXPECT_EQ(dst->frozen_stages(), 1);
  EXPECT_FALSE(dst->named_parameters()["blocks.0.0.conv.weight"].requires_grad());
  EXPECT_TRUE(dst->named_parameters()["blocks.1.0.conv_exp.weight"].requires_grad());
  // Same class count: the classifier is loaded unless reset is asked for.
  EfficientNetV2 same(Tiny(1000));
  ASSERT_TRUE(LoadPretrained(*same, path).ok());
  EXPECT_TRUE(GetStateDict(*same)["classifier.weight"].equal(s["classifier.weight"]));
  TransferOptions reset;
  reset.reset_classifier = true;
  ASSERT_TRUE(LoadPretrained(*same, path, reset).ok());
  EXPECT_FALSE(GetStateDict(*same)["classifier.weight"].equal(s["classifier.weight"]));
  // A backbone of another width is an error naming a key.
  ModelConfig wide = Tiny(7);
  wide.extra_width = 0.5;
  EfficientNetV2 other(wide);
  st = LoadPretrained(*other, path);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("shape mismatch for 'conv_stem.weight'"), std::string::npos)
      << st.message();
}

TEST(Transfer, NewHeadIsGlorotUniformAndBackboneEqual) {
  const TempDir dir;
  torch::manual_seed(0);
  EfficientNetV2 src(Tiny(10));
  const std::string path = dir / "exported.safetensors";
  ASSERT_TRUE(ExportWeights(*src, path).ok());
  EfficientNetV2 dst(Tiny(3));
  Status st = LoadPretrained(*dst, path);
  ASSERT_TRUE(st.ok()) << st.ToString();
  const StateDict s = GetStateDict(*src), t = GetStateDict(*dst);
  for (const auto& item : s) {
    if (item.key().rfind("classifier.", 0) == 0) continue;
    EXPECT_TRUE(t[item.key()].equal(item.value())) << item.key();
  }
  const at::Tensor w = t["classifier.weight"];
  ASSERT_EQ(w.size(0), 3);
  // Keras Dense init, the default model.head_init (Note [head init]): U(-a, a), a = sqrt(6 / (fan_in + fan_out)).
  const double a = std::sqrt(6.0 / static_cast<double>(w.size(1) + w.size(0)));
  EXPECT_LE(w.abs().max().item<double>(), a);
  EXPECT_GT(w.abs().max().item<double>(), 0.8 * a);  // spans the range, not a narrower init
  EXPECT_NEAR(w.mean().item<double>(), 0.0, 0.25 * a);
  EXPECT_TRUE(t["classifier.bias"].eq(0).all().item<bool>());
}

TEST(Transfer, FormatFromContentAndVariantNamedOnMismatch) {
  const TempDir dir;
  // An HDF5 file is taken for Keras weights (worker/formats/keras.h), whatever its name.
  const std::string h5 = dir / "weights.safetensors";
  {
    std::ofstream f(h5, std::ios::binary);
    f << "\x89HDF\r\n\x1a\n" << std::string(64, '\0');
  }
  auto fmt = DetectPretrainedFormat(h5);
  ASSERT_TRUE(fmt.ok()) << fmt.status().ToString();
  EXPECT_EQ(*fmt, PretrainedFormat::kKeras);
  EfficientNetV2 b0(Tiny(7));
  Status st = LoadPretrained(*b0, h5);  // a truncated HDF5 file: refused naming it
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find(h5), std::string::npos) << st.message();
  // Neither format: refused with the first bytes.
  const std::string junk = dir / "junk.pth";
  {
    std::ofstream f(junk, std::ios::binary);
    f << "hello world, not weights";
  }
  st = DetectPretrainedFormat(junk).status();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("first bytes: 68 65"), std::string::npos) << st.message();
  // A full B1 file into a B0 model: the keys and shapes, and the variant the file looks like.
  ModelConfig c1;
  c1.variant = "b1";
  c1.num_classes = 7;
  EfficientNetV2 b1(c1);
  const std::string p1 = dir / "b1.pth";
  ASSERT_TRUE(ExportWeights(*b1, p1).ok());
  ModelConfig c0 = c1;
  c0.variant = "b0";
  EfficientNetV2 real_b0(c0);
  st = LoadPretrained(*real_b0, p1);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("importing " + p1 + " (torch zip)"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("looks like variant 'b1'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("the model is variant 'b0'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("unexpected key 'blocks."), std::string::npos) << st.message();
}

TEST(Weights, ImportErrorNamesFileAndFormat) {
  const TempDir dir;
  torch::manual_seed(0);
  EfficientNetV2 src(Tiny());
  const std::string pth = dir / "w.pth";
  ASSERT_TRUE(ExportWeights(*src, pth).ok());
  ModelConfig wide = Tiny();
  wide.extra_width = 0.5;
  EfficientNetV2 dst(wide);
  Status st = ImportWeights(*dst, pth);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("importing " + pth + " (torch zip)"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("shape mismatch for 'conv_stem.weight': model [16, 3, 3, 3] vs "
                              "file [8, 3, 3, 3]"),
            std::string::npos)
      << st.message();
  // Safetensors content under a misleading extension: detected by content, named as such.
  const std::string st_path = dir / "w.weights";
  ASSERT_TRUE(WriteSafetensors(st_path, GetStateDict(*src)).ok());
  st = LoadPretrained(*dst, st_path);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("(safetensors)"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace effnet::formats
