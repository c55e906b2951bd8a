#include "worker/explain/gradcam.h"

#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <string>

namespace effnet::explain {
namespace {

// Divides each [H,W] map by its maximum (maps that are all zero stay zero).
at::Tensor NormaliseMax(const at::Tensor& maps) {
  auto peak = std::get<0>(maps.flatten(1).max(1)).view({-1, 1, 1});
  return maps / peak.clamp_min(1e-12);
}

Status CheckImages(const at::Tensor& images, const at::Tensor& targets, const char* what) {
  if (!images.defined() || images.dim() != 4 || images.size(1) != 3) {
    return InvalidArgument(std::string(what) + ": images must be [N,3,H,W]");
  }
  if (targets.defined() && (targets.dim() != 1 || targets.size(0) != images.size(0))) {
    return InvalidArgument(std::string(what) + ": targets must be [N] for " +
                           std::to_string(images.size(0)) + " images");
  }
  return Status::Ok();
}

// Positions of a `patch`-wide window with step `stride` that together cover [0, size).
std::vector<int64_t> Starts(int64_t size, int64_t patch, int64_t stride) {
  std::vector<int64_t> s;
  if (patch >= size) return {0};
  for (int64_t p = 0; p + patch <= size; p += stride) s.push_back(p);
  if (s.back() + patch < size) s.push_back(size - patch);
  return s;
}

// Restores the model's training mode on scope exit.
class EvalModeGuard {
 public:
  explicit EvalModeGuard(model::EfficientNetV2& m) : m_(m), was_training_(m->is_training()) {
    m_->eval();
  }
  ~EvalModeGuard() {
    if (was_training_) m_->train(true);
  }

 private:
  model::EfficientNetV2& m_;
  bool was_training_;
};

}  // namespace

Result<GradCamResult> GradCam(model::EfficientNetV2& model, const at::Tensor& images,
                              const at::Tensor& targets, const GradCamOptions& options) {
  EFFNET_RETURN_IF_ERROR(CheckImages(images, targets, "GradCam"));
  const int stages = static_cast<int>(model->architecture().stages.size());
  if (options.layer != kHeadLayer && (options.layer < 0 || options.layer >= stages)) {
    return InvalidArgument("GradCam: layer " + std::to_string(options.layer) +
                           " is neither the head (-1) nor a stage 0.." +
                           std::to_string(stages - 1));
  }
  auto children = model->named_children();
  auto* fc_entry = children.find("classifier");
  auto* fc = fc_entry ? (*fc_entry)->as<torch::nn::LinearImpl>() : nullptr;
  if (fc == nullptr) return Internal("GradCam: the model has no linear 'classifier'");

  EvalModeGuard eval(model);
  c10::AutoGradMode grad_on(true);
  // The input requires grad so the graph exists even when every parameter is frozen.
  auto x = images.detach().to(at::kFloat).requires_grad_(true);
  std::vector<at::Tensor> stage_outputs;
  auto features =
      model->forward_features(x, options.layer == kHeadLayer ? nullptr : &stage_outputs);
  const at::Tensor& a = options.layer == kHeadLayer ? features : stage_outputs[options.layer];
  // The model's own head: global average pooling, (dropout is off in eval), classifier.
  auto logits = fc->forward(features.mean({2, 3}));
  auto target = targets.defined() ? targets.to(logits.device(), at::kLong) : logits.argmax(1);
  // One backward for the whole batch: in eval mode the images do not interact.
  auto score = logits.gather(1, target.view({-1, 1})).sum();
  auto grad = torch::autograd::grad({score}, {a})[0];
  auto alpha = grad.mean({2, 3}, /*keepdim=*/true);
  auto cam = at::relu((alpha * a.detach()).sum(1, /*keepdim=*/true));
  cam = at::upsample_bilinear2d(cam, {images.size(2), images.size(3)}, /*align_corners=*/false);
  GradCamResult r;
  r.heatmap = NormaliseMax(cam.squeeze(1).clamp_min(0.0));
  r.logits = logits.detach();
  return r;
}

Result<at::Tensor> OcclusionSensitivity(const PixelClassifier& classify, const at::Tensor& images,
                                        const at::Tensor& targets,
                                        const OcclusionOptions& options) {
  EFFNET_RETURN_IF_ERROR(CheckImages(images, targets, "OcclusionSensitivity"));
  if (options.patch < 1 || options.stride < 1 || options.batch < 1) {
    return InvalidArgument("OcclusionSensitivity: patch, stride and batch must be >= 1");
  }
  c10::NoGradGuard no_grad;
  const int64_t n = images.size(0), h = images.size(2), w = images.size(3);
  const auto ys = Starts(h, options.patch, options.stride);
  const auto xs = Starts(w, options.patch, options.stride);
  auto probs = at::softmax(classify(images.to(at::kFloat)), 1);
  auto target = targets.defined() ? targets.to(probs.device(), at::kLong) : probs.argmax(1);
  auto base = probs.gather(1, target.view({-1, 1})).view({-1});
  auto out = at::zeros({n, h, w}, images.options().dtype(at::kFloat));
  auto count = at::zeros({h, w}, out.options());
  for (int64_t y : ys) {
    for (int64_t x : xs) {
      count.narrow(0, y, std::min<int64_t>(options.patch, h - y))
          .narrow(1, x, std::min<int64_t>(options.patch, w - x))
          .add_(1.0);
    }
  }
  std::vector<std::pair<int64_t, int64_t>> pos;
  for (int64_t y : ys) {
    for (int64_t x : xs) pos.emplace_back(y, x);
  }
  for (int64_t i = 0; i < n; ++i) {
    auto img = images[i].to(at::kFloat);
    for (size_t p0 = 0; p0 < pos.size(); p0 += static_cast<size_t>(options.batch)) {
      const size_t p1 = std::min(pos.size(), p0 + static_cast<size_t>(options.batch));
      auto batch = img.unsqueeze(0).repeat({static_cast<int64_t>(p1 - p0), 1, 1, 1});
      for (size_t p = p0; p < p1; ++p) {
        batch[static_cast<int64_t>(p - p0)]
            .narrow(1, pos[p].first, std::min<int64_t>(options.patch, h - pos[p].first))
            .narrow(2, pos[p].second, std::min<int64_t>(options.patch, w - pos[p].second))
            .fill_(options.fill);
      }
      auto p_occ = at::softmax(classify(batch), 1).select(1, target[i].item<int64_t>());
      auto drop = (base[i] - p_occ).clamp_min(0.0);
      for (size_t p = p0; p < p1; ++p) {
        out[i]
            .narrow(0, pos[p].first, std::min<int64_t>(options.patch, h - pos[p].first))
            .narrow(1, pos[p].second, std::min<int64_t>(options.patch, w - pos[p].second))
            .add_(drop[static_cast<int64_t>(p - p0)]);
      }
    }
  }
  return NormaliseMax(out / count);
}

std::vector<double> MassInBox(const at::Tensor& maps,
                              const std::vector<std::array<int, 4>>& boxes) {
  auto m = maps.detach().to(at::kCPU, at::kDouble).contiguous();
  std::vector<double> share;
  for (int64_t i = 0; i < m.size(0) && i < static_cast<int64_t>(boxes.size()); ++i) {
    const auto& b = boxes[static_cast<size_t>(i)];
    const double total = m[i].sum().item<double>();
    const double in = m[i].slice(0, b[1], b[3]).slice(1, b[0], b[2]).sum().item<double>();
    share.push_back(total > 0 ? in / total : 0.0);
  }
  return share;
}

}  // namespace effnet::explain
