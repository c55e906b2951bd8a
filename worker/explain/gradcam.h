// What the model looks at: Grad-CAM (Selvaraju et al. 2017) on EfficientNetV2 feature maps, and
// occlusion sensitivity (Zeiler & Fergus 2014) as a model-agnostic cross-check. Both return one
// map per image, [N,H,W] float in [0,1] at the input's resolution, on the input's device.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <functional>
#include <vector>

#include "common/status.h"
#include "worker/model/efficientnet.h"

namespace effnet::explain {

// The feature map Grad-CAM weighs.
inline constexpr int kHeadLayer = -1;  // conv_head/bn2 output (last map before pooling)

struct GradCamOptions {
  // kHeadLayer, or a stage index 0..stages-1: that stage's output (finer maps, less semantic).
  int layer = kHeadLayer;
};

struct GradCamResult {
  at::Tensor heatmap;  // [N,H,W] float in [0,1]; all zeros where no location supports the class
  at::Tensor logits;   // [N,C] of the same forward pass (detached)
};

// images: normalised model input [N,3,H,W]; targets: [N] int64 class per image, or undefined for
// the predicted class. Map = ReLU(sum_c alpha_c A_c), alpha_c = spatial mean of d score / d A_c,
// upsampled bilinearly to HxW and divided by its maximum. Runs the model in eval mode (restoring
// its mode after) with autograd on; parameter gradients are left untouched.
Result<GradCamResult> GradCam(model::EfficientNetV2& model, const at::Tensor& images,
                              const at::Tensor& targets, const GradCamOptions& options = {});

struct OcclusionOptions {
  int patch = 16;       // side of the square grey patch, pixels
  int stride = 8;       // step between patch positions, pixels
  double fill = 128.0;  // patch value in pixel space (0..255): mid grey
  int batch = 64;       // occluded images per forward call
};

// Any classifier: maps pixel-space images (float 0..255, [n,3,H,W]) to logits [n,C].
using PixelClassifier = std::function<at::Tensor(const at::Tensor&)>;

// images: pixel space float [N,3,H,W] (values 0..255); targets: [N] int64 class per image (the
// true or a chosen class), or undefined for the predicted class. Each patch position records
// max(0, p(target | image) - p(target | occluded image)); a pixel's value is the mean over the
// patches covering it, divided by the image's maximum.
Result<at::Tensor> OcclusionSensitivity(const PixelClassifier& classify, const at::Tensor& images,
                                        const at::Tensor& targets,
                                        const OcclusionOptions& options = {});

// Share of each map's mass inside its box: sum(map[y0:y1, x0:x1]) / sum(map); 0 for an empty map.
// maps: [N,H,W]; boxes: per image {x0, y0, x1, y1} (x1, y1 exclusive).
std::vector<double> MassInBox(const at::Tensor& maps, const std::vector<std::array<int, 4>>& boxes);

}  // namespace effnet::explain
