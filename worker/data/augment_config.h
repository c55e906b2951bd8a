// Augmentation tunables, without Torch (the config table in worker/train/config.cpp documents
// each field; worker/data/augment.h implements them).
#pragma once

#include <string>

namespace effnet::data {

// Every augmentation tunable with its default (`augment:` section of the config).
struct AugmentConfig {
  bool random_resized_crop = true;  // false: the whole stored image resized to the stage size
  double crop_area_min = 0.08, crop_area_max = 1.0;  // fraction of the image area
  double aspect_min = 3.0 / 4.0, aspect_max = 4.0 / 3.0;
  double hflip_prob = 0.5;
  double vflip_prob = 0.0;
  bool rot90 = false;      // rotate each image by a random multiple of 90 degrees
  int randaug_layers = 2;  // N of RandAugment; the magnitude comes from the progressive stage
  // Translate and cutout sizes at magnitude 10, in pixels (official: 100 and 40 for 224-300 px
  // images; scale them down for small images).
  double randaug_translate_px = 100.0;
  double randaug_cutout_px = 40.0;
  std::string normalize = "imagenet";  // imagenet (mean/std) | inception ((x-128)/128) | none
  bool eval_center_crop = true;        // eval: centre crop size/(size+32) of the image, then resize
};

}  // namespace effnet::data
