// Parity with timm tf_efficientnetv2_{b0,b1,b2,b3,s}: weights written by Python torch.save (and
// safetensors for b0) are imported by name and the logits must agree in eval and train mode.
// Reference files come from make_timm_reference.py (ctest fixture), found via
// EFFNET_TIMM_REF_DIR. Also exports b0 for the Python read-back check (check_export.py).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <torch/torch.h>

#include <cstdlib>
#include <string>

#include "worker/formats/safetensors.h"
#include "worker/formats/state_dict.h"
#include "worker/model/efficientnet.h"

namespace effnet::model {
namespace {

using formats::ExportWeights;
using formats::GetStateDict;
using formats::ImportWeights;
using formats::ReadSafetensors;
using formats::ReadStateDict;

// Plain strings and POSIX calls, no std::filesystem (see test_model.cpp Note [no std::filesystem]).
std::string RefDir() {
  const char* d = std::getenv("EFFNET_TIMM_REF_DIR");
  return d ? std::string(d) + "/" : std::string();
}

// Note [relative error]: max |ours - timm| / max |timm| over the whole tensor; per-element ratios
// are meaningless for logits near zero.
double RelErr(const at::Tensor& ours, const at::Tensor& ref) {
  const double denom = std::max(ref.abs().max().item<double>(), 1e-12);
  return (ours - ref).abs().max().item<double>() / denom;
}

ModelConfig ParityConfig(const std::string& v) {
  ModelConfig c;
  c.variant = v;
  c.num_classes = 1000;
  c.dropout = 0.0;
  c.drop_path = 0.0;
  return c;
}

class TimmParity : public ::testing::TestWithParam<std::string> {};

TEST_P(TimmParity, EvalAndTrainLogits) {
  const std::string v = GetParam();
  const std::string dir = RefDir();
  ASSERT_FALSE(dir.empty()) << "EFFNET_TIMM_REF_DIR not set (run through ctest)";
  const std::string weights = dir + v + ".pt";
  auto ref = ReadSafetensors(dir + v + "_ref.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status().ToString();
  EfficientNetV2 m(ParityConfig(v));
  torch::NoGradGuard g;
  for (const std::string tag : {"even", "odd"}) {
    const at::Tensor x = (*ref)["x_" + tag];
    Status st = ImportWeights(*m, weights);
    ASSERT_TRUE(st.ok()) << st.ToString();
    m->eval();
    const double e_eval = RelErr(m->forward(x), (*ref)["eval_" + tag]);
    EXPECT_LE(e_eval, 1e-4) << v << " eval " << tag << " x " << x.sizes();
    m->train();
    const double e_train = RelErr(m->forward(x), (*ref)["train_" + tag]);
    EXPECT_LE(e_train, 1e-4) << v << " train " << tag;
    // BN running statistics after the one train-mode step (momentum 0.1).
    double e_stats = 0.0;
    int n = 0;
    for (const auto& item : GetStateDict(*m)) {
      const at::Tensor* r = ref->find("stats_" + tag + "." + item.key());
      if (!r) continue;
      e_stats = std::max(e_stats, RelErr(item.value(), *r));
      ++n;
    }
    int bns = 0;
    for (const auto& mod : m->modules()) bns += mod->as<torch::nn::BatchNorm2dImpl>() != nullptr;
    EXPECT_EQ(n, 2 * bns);
    EXPECT_LE(e_stats, 1e-4) << v << " running stats " << tag;
    std::printf("%s %s (%lld px): rel err eval %.2e, train %.2e, BN stats %.2e\n", v.c_str(),
                tag.c_str(), static_cast<long long>(x.size(2)), e_eval, e_train, e_stats);
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, TimmParity, ::testing::Values("b0", "b1", "b2", "b3", "s"),
                         [](const auto& info) { return info.param; });

TEST(TimmImport, SafetensorsAndTorchZipAgree) {
  const std::string dir = RefDir();
  ASSERT_FALSE(dir.empty());
  auto pt = ReadStateDict(dir + "b0.pt");
  auto st = ReadStateDict(dir + "b0.safetensors");
  ASSERT_TRUE(pt.ok()) << pt.status().ToString();
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(pt->size(), 420u);
  ASSERT_EQ(pt->size(), st->size());
  for (const auto& item : *pt) {
    const at::Tensor* o = st->find(item.key());
    ASSERT_NE(o, nullptr) << item.key();
    EXPECT_TRUE(item.value().equal(*o)) << item.key();
  }
  // The timm file holds exactly our keys and shapes.
  EfficientNetV2 m(ParityConfig("b0"));
  EXPECT_EQ(GetStateDict(*m).keys(), pt->keys());
}

// Negative control: the same weights with symmetric padding must NOT match on the even size
// (tf_same pads 0/1 there) but must on the odd size (1/1 either way) - the comparison has teeth.
TEST(TimmImport, SymmetricPaddingDiffersOnEvenInputs) {
  const std::string dir = RefDir();
  ASSERT_FALSE(dir.empty());
  auto ref = ReadSafetensors(dir + "b0_ref.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status().ToString();
  ModelConfig c = ParityConfig("b0");
  c.padding = Padding::kSymmetric;
  EfficientNetV2 m(c);
  ASSERT_TRUE(ImportWeights(*m, dir + "b0.pt").ok());
  m->eval();
  torch::NoGradGuard g;
  EXPECT_GT(RelErr(m->forward((*ref)["x_even"]), (*ref)["eval_even"]), 1e-2);
  EXPECT_LE(RelErr(m->forward((*ref)["x_odd"]), (*ref)["eval_odd"]), 1e-4);
}

// Writes b0 (timm weights loaded) in both formats for check_export.py.
TEST(TimmImport, ExportForPython) {
  const char* out = std::getenv("EFFNET_MODEL_EXPORT_DIR");
  ASSERT_NE(out, nullptr);
  ::mkdir(out, 0755);  // the parent (the reference dir) exists
  EfficientNetV2 m(ParityConfig("b0"));
  ASSERT_TRUE(ImportWeights(*m, RefDir() + "b0.pt").ok());
  ASSERT_TRUE(ExportWeights(*m, std::string(out) + "/b0_export.pt").ok());
  ASSERT_TRUE(ExportWeights(*m, std::string(out) + "/b0_export.safetensors").ok());
}

}  // namespace
}  // namespace effnet::model
