// Keras importer (worker/formats/keras.h) against real Keras files: make_keras_fixtures.py writes
// keras.applications EfficientNetV2B0/B1/B2 (random weights, 7 classes) in each Keras 3 format and
// Keras's probabilities; here each file is imported into our EfficientNetV2 (eval mode, input
// normalised as ReadKerasPreprocessing says) and the probabilities must match within 1e-4.
// The fixture directory comes from EFFNET_KERAS_FIXTURES (set by ctest); without it: skipped.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "worker/data/augment.h"
#include "worker/formats/keras.h"
#include "worker/formats/pretrained.h"
#include "worker/formats/safetensors.h"
#include "worker/formats/state_dict.h"
#include "worker/model/efficientnet.h"

namespace effnet::formats {
namespace {

// Keras 3 save_weights, Keras 3 save, Keras 3 legacy save, tf.keras 2.x save and save_weights
// layouts (see the script).
const char* kFormats[] = {".weights.h5", ".keras", ".h5", ".tf2.h5", ".tf2_weights.h5"};

std::string FixtureDir() {
  const char* d = std::getenv("EFFNET_KERAS_FIXTURES");
  return d ? d : "";
}

model::ModelConfig Config(const std::string& variant) {
  model::ModelConfig c;
  c.variant = variant;
  c.num_classes = 7;
  return c;
}

// Max |our probabilities - Keras's| for one file of case `name`.
double MaxProbDiff(const std::string& name, const std::string& variant, const std::string& ext) {
  const std::string dir = FixtureDir();
  const std::string path = dir + "/" + name + ext;
  auto dict = ReadKerasWeights(path, Config(variant));
  EXPECT_TRUE(dict.ok()) << dict.status().ToString();
  if (!dict.ok()) return 1.0;
  auto pre = ReadKerasPreprocessing(path, variant);
  EXPECT_TRUE(pre.ok()) << pre.status().ToString();
  if (!pre.ok()) return 1.0;
  EXPECT_EQ(pre->normalize, "imagenet") << path;

  model::EfficientNetV2 net(Config(variant));
  Status st = LoadStateDict(*net, *dict);  // strict: every key and shape
  EXPECT_TRUE(st.ok()) << st.ToString();
  net->eval();
  auto expected = ReadSafetensors(dir + "/" + name + ".expected.safetensors");
  EXPECT_TRUE(expected.ok()) << expected.status().ToString();
  if (!expected.ok()) return 1.0;
  const at::Tensor x = expected->find("x")->permute({0, 3, 1, 2}).contiguous();  // NHWC -> NCHW
  torch::NoGradGuard no_grad;
  const at::Tensor probs = net->forward(data::Normalize(x, pre->normalize)).softmax(1);
  const at::Tensor& want = *expected->find("probs");
  EXPECT_EQ(probs.sizes(), want.sizes());
  return (probs - want).abs().max().item<double>();
}

class KerasParity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (FixtureDir().empty()) GTEST_SKIP() << "EFFNET_KERAS_FIXTURES not set";
    at::set_num_threads(1);
  }
};

TEST_P(KerasParity, ProbabilitiesMatchKerasInEveryFormat) {
  const std::string v = GetParam();
  for (const char* ext : kFormats) {
    const double diff = MaxProbDiff(v, v, ext);
    std::printf("keras parity %s %-12s max |dp| = %.2e\n", v.c_str(), ext, diff);
    EXPECT_LE(diff, 1e-4) << v << ext;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, KerasParity, ::testing::Values("b0", "b1", "b2"));

class KerasFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    if (FixtureDir().empty()) GTEST_SKIP() << "EFFNET_KERAS_FIXTURES not set";
    at::set_num_threads(1);
  }
};

// The study's model: a nested EfficientNetV2B0 (include_top=False) + GAP + Dropout + Dense(7).
// model.pretrained's path: format detected from content (.keras is a zip, .weights.h5 HDF5), the
// Keras head kept when its class count fits, and a normalisation that would not reproduce Keras's
// outputs refused with the value to use.
TEST_F(KerasFiles, LoadPretrainedDetectsKerasAndChecksNormalisation) {
  for (const char* ext : {".keras", ".weights.h5"}) {
    const std::string path = FixtureDir() + "/b0" + ext;
    auto fmt = DetectPretrainedFormat(path);
    ASSERT_TRUE(fmt.ok()) << fmt.status().ToString();
    EXPECT_EQ(*fmt, PretrainedFormat::kKeras) << path;
    model::EfficientNetV2 net(Config("b0"));
    TransferOptions options;
    options.normalize = "imagenet";
    Status st = LoadPretrained(*net, path, options);
    ASSERT_TRUE(st.ok()) << st.ToString();
    auto dict = ReadKerasWeights(path, Config("b0"));
    ASSERT_TRUE(dict.ok());
    EXPECT_TRUE(
        GetStateDict(*net).find("classifier.weight")->equal(*dict->find("classifier.weight")));
    options.normalize = "inception";
    st = LoadPretrained(*net, path, options);
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("set augment.normalize=imagenet"), std::string::npos)
        << st.message();
  }
}

TEST_F(KerasFiles, StudyModelWithNestedBackboneAndOwnDenseHead) {
  for (const char* ext : kFormats) {
    const double diff = MaxProbDiff("b0_study", "b0", ext);
    std::printf("keras parity b0_study %-12s max |dp| = %.2e\n", ext, diff);
    EXPECT_LE(diff, 1e-4) << ext;
  }
}

TEST_F(KerasFiles, HeadlessFileGivesTheBackboneOnly) {
  auto dict = ReadKerasWeights(FixtureDir() + "/b0_study_notop.weights.h5", Config("b0"));
  ASSERT_TRUE(dict.ok()) << dict.status().ToString();
  EXPECT_EQ(dict->find("classifier.weight"), nullptr);
  model::EfficientNetV2 net(Config("b0"));
  LoadOptions lo;
  lo.skip_prefixes = {"classifier."};
  Status st = LoadStateDict(*net, *dict, lo);
  EXPECT_TRUE(st.ok()) << st.ToString();
}

TEST_F(KerasFiles, ClassifierKeepsTheFilesClassCount) {
  model::ModelConfig c = Config("b0");
  c.num_classes = 3;  // not checked: the caller replaces the head
  auto dict = ReadKerasWeights(FixtureDir() + "/b0.keras", c);
  ASSERT_TRUE(dict.ok()) << dict.status().ToString();
  EXPECT_EQ(dict->find("classifier.weight")->sizes(), (at::IntArrayRef{7, 1280}));
}

TEST_F(KerasFiles, WrongVariantNamesLayerShapesAndTheFilesVariant) {
  for (const char* ext : kFormats) {
    const std::string path = FixtureDir() + "/b1" + ext;
    auto dict = ReadKerasWeights(path, Config("b2"));
    ASSERT_FALSE(dict.ok()) << ext;
    const std::string msg = dict.status().ToString();
    std::printf("%s\n", msg.c_str());
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("problem(s) for EfficientNetV2B2 (variant 'b2')"), std::string::npos) << msg;
    EXPECT_NE(msg.find("': expected ["), std::string::npos) << msg;
    EXPECT_NE(msg.find("], found ["), std::string::npos) << msg;
    EXPECT_NE(msg.find("looks like EfficientNetV2B1 (variant 'b1')"), std::string::npos) << msg;
  }
  // Same stem, other depth: B0 into B1 names a missing block.
  auto dict = ReadKerasWeights(FixtureDir() + "/b0.h5", Config("b1"));
  ASSERT_FALSE(dict.ok());
  const std::string msg = dict.status().ToString();
  std::printf("%s\n", msg.c_str());
  EXPECT_NE(msg.find("legacy Keras .h5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing layer 'block1b_project_conv'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("looks like EfficientNetV2B0 (variant 'b0')"), std::string::npos) << msg;
}

// B3/S/M/L: the layer table against files with Keras's weight names and shapes (no data).
TEST_F(KerasFiles, LargerVariantsMatchKerasShapesInBothLayouts) {
  for (const std::string v : {"b3", "s", "m", "l"}) {
    model::EfficientNetV2 net(Config(v));
    for (const char* ext : {".weights.h5", ".tf2.h5"}) {
      const std::string path = FixtureDir() + "/shapes_" + v + ext;
      auto dict = ReadKerasWeights(path, Config(v));
      ASSERT_TRUE(dict.ok()) << dict.status().ToString();
      Status st = LoadStateDict(*net, *dict);
      EXPECT_TRUE(st.ok()) << path << ": " << st.ToString();
    }
    auto pre = ReadKerasPreprocessing(FixtureDir() + "/shapes_" + v + ".tf2.h5", v);
    ASSERT_TRUE(pre.ok()) << pre.status().ToString();
    EXPECT_EQ(pre->normalize, v == "b3" ? "imagenet" : "inception") << v;
    EXPECT_EQ(pre->source, "model config");
  }
}

TEST_F(KerasFiles, PreprocessingFromConfigOrDefault) {
  auto from_config = ReadKerasPreprocessing(FixtureDir() + "/b0_study.keras", "b0");
  ASSERT_TRUE(from_config.ok()) << from_config.status().ToString();
  EXPECT_EQ(from_config->normalize, "imagenet");
  EXPECT_EQ(from_config->source, "model config");
  auto legacy = ReadKerasPreprocessing(FixtureDir() + "/b1.h5", "b1");
  ASSERT_TRUE(legacy.ok()) << legacy.status().ToString();
  EXPECT_EQ(legacy->source, "model config");
  auto weights_only = ReadKerasPreprocessing(FixtureDir() + "/b0.weights.h5", "b0");
  ASSERT_TRUE(weights_only.ok());
  EXPECT_EQ(weights_only->source, "keras.applications default");
}

}  // namespace

TEST(KerasFormat, DefaultPreprocessingPerVariant) {
  EXPECT_EQ(KerasDefaultPreprocessing("b3").normalize, "imagenet");
  EXPECT_EQ(KerasDefaultPreprocessing("s").normalize, "inception");
  EXPECT_EQ(KerasDefaultPreprocessing("l").normalize, "inception");
}

TEST(KerasFormat, MissingAndNonKerasFilesAreErrorsNamingTheFile) {
  auto missing = ReadKerasWeights("/nonexistent/x.weights.h5", Config("b0"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().ToString().find("/nonexistent/x.weights.h5"), std::string::npos);
  char tmpl[] = "/tmp/effnet_keras_XXXXXX";
  const int fd = ::mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, "PK\3\4junk", 8), 8);
  ::close(fd);
  auto junk = ReadKerasWeights(tmpl, Config("b0"));
  ::unlink(tmpl);
  ASSERT_FALSE(junk.ok());
  EXPECT_NE(junk.status().ToString().find(tmpl), std::string::npos) << junk.status().ToString();
}

}  // namespace effnet::formats
