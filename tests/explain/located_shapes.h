// Generated data whose class is decided by a small shape at a KNOWN place: class 0 a filled disc,
// 1 a hollow square, 2 a plus sign, each of side `shape` pixels at a random position, in a random
// colour that contrasts with a noisy background of random grey. Nothing outside the shape's box
// carries class information, so an explanation should put its mass inside the box.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/status.h"
#include "storage/writer.h"
#include "tests/train/synthetic_data.h"

namespace effnet::testing {

struct LocatedShapesSpec {
  int train_per_class = 120, val_per_class = 15, test_per_class = 15;
  int image_size = 96;
  int shape = 24;  // side of the shape's box, pixels
  uint64_t seed = 3;
};

inline const std::vector<std::string>& LocatedShapeNames() {
  static const std::vector<std::string> names = {"disc", "hollow_square", "plus"};
  return names;
}

// Writes the store; `boxes` receives {x0, y0, x1, y1} (exclusive) per image, in store order.
inline Status WriteLocatedShapesStore(const std::string& path, const LocatedShapesSpec& s,
                                      std::vector<std::array<int, 4>>* boxes) {
  const int classes = static_cast<int>(LocatedShapeNames().size());
  auto w = storage::DatasetWriter::Create(path, s.image_size);
  if (!w.ok()) return w.status();
  storage::StoreMetadata meta;
  meta.class_names = LocatedShapeNames();
  std::mt19937_64 gen(s.seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const int S = s.image_size, B = s.shape;
  std::vector<uint8_t> img(static_cast<size_t>(S) * S * 3);
  int64_t index = 0;
  const std::pair<storage::Split, int> parts[] = {{storage::Split::kTrain, s.train_per_class},
                                                  {storage::Split::kVal, s.val_per_class},
                                                  {storage::Split::kTest, s.test_per_class}};
  for (const auto& [split, per_class] : parts) {
    for (int i = 0; i < per_class; ++i) {
      for (int c = 0; c < classes; ++c) {
        const double grey = 70 + 110 * u(gen);
        // Shape colour: a random hue, brighter or darker than the background by 70..120.
        const double sign = grey < 125 ? 1.0 : -1.0;
        double colour[3];
        for (double& v : colour) v = std::clamp(grey + sign * (70 + 50 * u(gen)), 0.0, 255.0);
        const int x0 = static_cast<int>(u(gen) * (S - B)), y0 = static_cast<int>(u(gen) * (S - B));
        boxes->push_back({x0, y0, x0 + B, y0 + B});
        const double r = B / 2.0, cx = x0 + r, cy = y0 + r, bar = B / 4.0, ring = B / 6.0;
        for (int y = 0; y < S; ++y) {
          for (int x = 0; x < S; ++x) {
            bool in = false;
            if (x >= x0 && x < x0 + B && y >= y0 && y < y0 + B) {
              const double dx = x + 0.5 - cx, dy = y + 0.5 - cy;
              if (c == 0) {
                in = dx * dx + dy * dy < r * r;
              } else if (c == 1) {
                in = std::max(std::abs(dx), std::abs(dy)) > r - ring;
              } else {
                in = std::abs(dx) < bar / 2 || std::abs(dy) < bar / 2;
              }
            }
            for (int ch = 0; ch < 3; ++ch) {
              const double v = (in ? colour[ch] : grey) + 40 * (u(gen) - 0.5);
              img[(static_cast<size_t>(y) * S + x) * 3 + ch] =
                  static_cast<uint8_t>(std::clamp(v, 0.0, 255.0));
            }
          }
        }
        EFFNET_RETURN_IF_ERROR(
            AppendGenerated(**w, meta, img.data(), c, split, "located", index++));
      }
    }
  }
  return (*w)->Finish(meta);
}

}  // namespace effnet::testing
