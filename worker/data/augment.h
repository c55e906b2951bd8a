// Batched, seeded augmentation on the training device (docs/efficientnetv2-reference.md sec 3-5).
//
// Pixels flow as float tensors holding uint8 values (0..255) until Normalize, so that the
// RandAugment ops keep their uint8 semantics (truncation after each op, fill 128). Every random
// choice comes from a HostRng (Note [portable randomness]) and is per sample.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "common/job/types.h"
#include "worker/data/augment_config.h"
#include "worker/data/rng.h"

namespace effnet::data {

// The 16 RandAugment ops in the official order (autoaugment.py NAME_TO_FUNC).
enum class RandAugOp : int {
  kAutoContrast = 0,
  kEqualize,
  kInvert,
  kRotate,
  kPosterize,
  kSolarize,
  kColor,
  kContrast,
  kBrightness,
  kSharpness,
  kShearX,
  kShearY,
  kTranslateX,
  kTranslateY,
  kCutout,
  kSolarizeAdd,
};
constexpr int kNumRandAugOps = 16;
const char* RandAugOpName(RandAugOp op);

// uint8 [N,H,W,3] -> float [N,3,size,size] (values 0..255): per-sample random resized crop,
// flips and 90-degree rotations in one affine grid_sample (bilinear).
at::Tensor RandomResizedCropFlip(const at::Tensor& nhwc_u8, int size, const AugmentConfig& c,
                                 HostRng& rng);

// Applies `op` to every image of x (float [n,3,H,W], 0..255) at `magnitude`; `signs` holds +1/-1
// per image for the signed ops, `rng` draws cutout centres. Result is truncated to integers.
at::Tensor ApplyRandAugOp(const at::Tensor& x, RandAugOp op, double magnitude,
                          const std::vector<double>& signs, const AugmentConfig& c, HostRng& rng);

// RandAugment: `layers` times, each image picks one of the 16 ops uniformly and always applies
// it (official semantics). `chosen` (optional) receives the op index per layer and image.
at::Tensor RandAugment(const at::Tensor& x, int layers, double magnitude, const AugmentConfig& c,
                       HostRng& rng, std::vector<std::vector<int>>* chosen = nullptr);

// Mixup / cutmix on images (float [N,3,H,W]) and soft targets ([N,C]) in place. With both alphas
// > 0 the first half of the batch gets mixup and the second half cutmix; the partner of image i
// is the reversed (half-)batch; mixup lambda ~ Beta(a,a) then max(l, 1-l); cutmix box area from
// Beta(a,a), and the targets weighted by the area actually pasted.
void MixupCutmix(at::Tensor& images, at::Tensor& targets, double mixup_alpha, double cutmix_alpha,
                 HostRng& rng);

// float 0..255 [N,3,H,W] -> normalised (`mode` imagenet | inception | none).
at::Tensor Normalize(const at::Tensor& x, const std::string& mode);

// Evaluation transform: uint8 [N,H,W,3] -> float [N,3,size,size] 0..255: centre crop of side
// size/(size+32)*min(H,W) (when `center_crop`), then bicubic resize with antialias.
at::Tensor EvalResize(const at::Tensor& nhwc_u8, int size, bool center_crop);

struct TrainBatch {
  at::Tensor images;   // float [N,3,S,S], normalised
  at::Tensor targets;  // float [N,C] soft targets (label smoothing, mixup/cutmix applied)
};

// The whole training pipeline for one batch on the batch's device.
TrainBatch AugmentTrain(const at::Tensor& nhwc_u8, const at::Tensor& labels, int num_classes,
                        const job::Stage& stage, double label_smoothing, const AugmentConfig& c,
                        HostRng& rng);
// Evaluation pipeline: EvalResize + Normalize.
at::Tensor AugmentEval(const at::Tensor& nhwc_u8, int size, const AugmentConfig& c);

}  // namespace effnet::data
