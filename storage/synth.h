// A small synthetic data set in the study's format, for demos and other components' tests:
// <out>/synth.csv (columns uniq_id, product_name, product_category_tree, image) and JPEGs in
// <out>/images. Seven classes of shapes and textures with random colours, positions, scales and
// backgrounds, so that the mean colour of an image says nothing about its class.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace effnet::storage {

struct SynthConfig {
  std::string out_dir;
  int per_class = 20;  // images per class
  int size = 128;      // width = height of each JPEG
  uint64_t seed = 1;
  int jpeg_quality = 90;
};

struct SynthSummary {
  std::string csv_path;    // <out>/synth.csv
  std::string images_dir;  // <out>/images
  int64_t images = 0;
};

// Class names in label order of effnet-prepare (sorted): "Checkerboards", "Circles", ...
const std::vector<std::string>& SynthClassNames();

// Same seed and sizes: byte-identical CSV and pixel-identical images.
Result<SynthSummary> WriteSynthDataset(const SynthConfig& config);

}  // namespace effnet::storage
