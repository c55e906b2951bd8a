// A small generated effnet HDF5 store for the trainer tests: class c is a disc of colour
// kColors[c] (random centre and radius) on a noisy background of random grey level.
#pragma once

#include <ftw.h>
#include <stdio.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/status.h"
#include "storage/writer.h"

namespace effnet::testing {

// Note [no fs::remove_all]: libtorch.so exports its own std::filesystem symbols, and its
// remove_all crashes (a call through a null pointer) when a test binary resolves to it; trees
// are removed with nftw instead.
inline void RemoveTree(const std::string& path) {
  nftw(
      path.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); },
      16, FTW_DEPTH | FTW_PHYS);
}

struct SyntheticSpec {
  int classes = 7;
  int train_per_class = 40, val_per_class = 10, test_per_class = 10;
  int image_size = 64;
  int train_skip = 0;  // leave out the last train image of the last `train_skip` classes
  uint64_t seed = 1;
  // Same images, classes stored in reverse order: colour c gets label classes-1-c, whose name is
  // still name_prefix + c (a store listing the same classes in another order).
  bool reverse_class_order = false;
  std::string name_prefix = "class_";
};

// Appends one generated image and its metadata (label, split, a made-up source path
// "<folder>/<index>.png" and distinct hashes, so no two images look like duplicates).
inline Status AppendGenerated(storage::DatasetWriter& w, storage::StoreMetadata& meta,
                              const uint8_t* img, int label, storage::Split split,
                              const std::string& folder, int64_t index) {
  EFFNET_RETURN_IF_ERROR(w.Append(img));
  meta.labels.push_back(label);
  meta.splits.push_back(split);
  meta.source_paths.push_back(folder + "/" + std::to_string(index) + ".png");
  meta.content_hash.push_back(static_cast<uint64_t>(index) * 0x9E3779B97F4A7C15ULL + 1);
  meta.perceptual_hash.push_back(static_cast<uint64_t>(index));
  return Status::Ok();
}

inline Status WriteSyntheticStore(const std::string& path, const SyntheticSpec& s) {
  static const uint8_t kColors[][3] = {{230, 30, 30},   {30, 200, 30},  {40, 40, 230},
                                       {230, 220, 30},  {220, 30, 220}, {30, 220, 220},
                                       {250, 250, 250}, {120, 60, 10}};
  if (s.classes < 1 || s.classes > 8) return InvalidArgument("classes: 1..8");
  auto w = storage::DatasetWriter::Create(path, s.image_size);
  if (!w.ok()) return w.status();
  storage::StoreMetadata meta;
  auto stored = [&](int c) { return s.reverse_class_order ? s.classes - 1 - c : c; };
  meta.class_names.resize(static_cast<size_t>(s.classes));
  for (int c = 0; c < s.classes; ++c) {
    meta.class_names[static_cast<size_t>(stored(c))] = s.name_prefix + std::to_string(c);
  }
  std::mt19937_64 gen(s.seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const int S = s.image_size;
  std::vector<uint8_t> img(static_cast<size_t>(S) * S * 3);
  int64_t index = 0;
  const std::pair<storage::Split, int> parts[] = {{storage::Split::kTrain, s.train_per_class},
                                                  {storage::Split::kVal, s.val_per_class},
                                                  {storage::Split::kTest, s.test_per_class}};
  for (const auto& [split, per_class] : parts) {
    for (int i = 0; i < per_class; ++i) {
      for (int c = 0; c < s.classes; ++c) {
        if (split == storage::Split::kTrain && i == per_class - 1 &&
            c >= s.classes - s.train_skip) {
          continue;
        }
        const double grey = 60 + 120 * u(gen);
        const double cx = S * (0.3 + 0.4 * u(gen)), cy = S * (0.3 + 0.4 * u(gen));
        const double r = S * (0.18 + 0.14 * u(gen));
        for (int y = 0; y < S; ++y) {
          for (int x = 0; x < S; ++x) {
            const bool in = (x - cx) * (x - cx) + (y - cy) * (y - cy) < r * r;
            for (int ch = 0; ch < 3; ++ch) {
              double v = in ? kColors[c][ch] : grey;
              v += 50 * (u(gen) - 0.5);
              img[(static_cast<size_t>(y) * S + x) * 3 + ch] =
                  static_cast<uint8_t>(std::clamp(v, 0.0, 255.0));
            }
          }
        }
        EFFNET_RETURN_IF_ERROR(
            AppendGenerated(**w, meta, img.data(), stored(c), split, "synthetic", index++));
      }
    }
  }
  return (*w)->Finish(meta);
}

}  // namespace effnet::testing
