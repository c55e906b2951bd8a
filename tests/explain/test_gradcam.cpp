// Grad-CAM and occlusion sensitivity on untrained reduced models and stand-in classifiers: shapes,
// ranges, the closed form at the head, stage maps, the model left as found, argument errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "worker/explain/gradcam.h"

namespace {

using effnet::explain::GradCam;
using effnet::explain::GradCamOptions;
using effnet::explain::kHeadLayer;
using effnet::explain::MassInBox;
using effnet::explain::OcclusionSensitivity;

effnet::model::EfficientNetV2 TinyModel(int classes = 4) {
  effnet::model::ModelConfig c;
  c.num_classes = classes;
  c.extra_width = 0.25;
  c.extra_depth = 0.25;
  torch::manual_seed(5);
  return effnet::model::EfficientNetV2(c);
}

TEST(GradCam, HeadMapIsTheClassActivationMapUpsampled) {
  // With global average pooling and a linear classifier, alpha_k = w_ck / (h w), so Grad-CAM at
  // the head is ReLU(sum_k w_ck A_k) up to a positive factor (Zhou et al.'s CAM).
  auto model = TinyModel();
  model->eval();
  auto x = torch::randn({3, 3, 64, 64});
  auto target = torch::tensor({0, 2, 3}, torch::kLong);
  auto r = GradCam(model, x, target);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->heatmap.sizes(), (at::IntArrayRef{3, 64, 64}));
  EXPECT_GE(r->heatmap.min().item<double>(), 0.0);
  EXPECT_NEAR(r->heatmap.max().item<double>(), 1.0, 1e-5);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(r->logits, model->forward(x), 1e-4, 1e-5));
  auto a = model->forward_features(x);
  auto w = model->named_parameters()["classifier.weight"].index_select(0, target);  // [3,C]
  auto cam = torch::relu((w.view({3, -1, 1, 1}) * a).sum(1, true));
  cam = torch::upsample_bilinear2d(cam, {64, 64}, false).squeeze(1);
  cam = cam / std::get<0>(cam.flatten(1).max(1)).view({-1, 1, 1});
  EXPECT_TRUE(torch::allclose(r->heatmap, cam, 1e-4, 1e-5));
}

TEST(GradCam, StageMapsPredictedClassAndModelLeftAsFound) {
  auto model = TinyModel();
  model->train();
  auto x = torch::randn({2, 3, 64, 64});
  const int stages = static_cast<int>(model->architecture().stages.size());
  for (int layer = 0; layer < stages; ++layer) {
    auto r = GradCam(model, x, {}, GradCamOptions{layer});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->heatmap.sizes(), (at::IntArrayRef{2, 64, 64})) << layer;
    EXPECT_LE(r->heatmap.max().item<double>(), 1.0 + 1e-6);
  }
  EXPECT_TRUE(model->is_training());
  for (const auto& p : model->parameters()) EXPECT_FALSE(p.grad().defined());
  auto bad = GradCam(model, x, {}, GradCamOptions{stages});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().ToString().find("stage 0.." + std::to_string(stages - 1)),
            std::string::npos)
      << bad.status().ToString();
  EXPECT_FALSE(GradCam(model, x, torch::tensor({1}, torch::kLong)).ok());  // 1 target, 2 images
  EXPECT_FALSE(GradCam(model, torch::randn({2, 1, 64, 64}), {}).ok());
}

TEST(Occlusion, FindsTheOnlyRegionTheClassifierLooksAt) {
  // Class 1's logit is the brightness of the box x 40..56, y 8..24; class 0's is constant.
  auto classify = [](const at::Tensor& px) {
    auto region = px.slice(2, 8, 24).slice(3, 40, 56).mean({1, 2, 3});
    return torch::stack({torch::full_like(region, 2.0), region / 32.0}, 1);
  };
  auto images = torch::full({2, 3, 64, 64}, 40.0);
  images.slice(2, 8, 24).slice(3, 40, 56).fill_(250.0);
  auto r = OcclusionSensitivity(classify, images, torch::tensor({1, 1}, torch::kLong), {8, 4});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->sizes(), (at::IntArrayRef{2, 64, 64}));
  EXPECT_NEAR(r->max().item<double>(), 1.0, 1e-5);
  // Every patch that drops the probability overlaps the box, so the map stays within 4 px of it.
  const auto share = MassInBox(*r, {{36, 4, 60, 28}, {36, 4, 60, 28}});
  EXPECT_NEAR(share[0], 1.0, 1e-6);
  EXPECT_NEAR(share[1], 1.0, 1e-6);
  EXPECT_NEAR(MassInBox(*r, {{40, 8, 56, 24}})[0], 1.0, 0.35);
  EXPECT_FALSE(OcclusionSensitivity(classify, images, {}, {0, 4}).ok());
}

TEST(MassInBox, SharesAndEmptyMaps) {
  auto maps = torch::zeros({2, 4, 4});
  maps[0].fill_(1.0);
  const auto s = MassInBox(maps, {{0, 0, 2, 2}, {0, 0, 4, 4}});
  EXPECT_DOUBLE_EQ(s[0], 0.25);
  EXPECT_DOUBLE_EQ(s[1], 0.0);
}

}  // namespace
