// What effnet-inspect reports about a store; computed from the file alone (no source images).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "storage/dataset_reader.h"

namespace effnet::storage {

struct InspectReport {
  std::string path;
  int schema_version = 0;
  int64_t num_images = 0;
  int64_t num_originals = 0;  // origin[i] == i
  int image_size = 0;
  int64_t file_bytes = 0;
  std::vector<std::string> class_names;
  std::vector<std::array<int64_t, 3>> counts;  // [class][split]
  std::array<int64_t, 3> split_totals{};
  int64_t augmented_copies = 0;
  // Exact duplicates recomputed from /content_hash over the originals.
  int64_t duplicate_groups = 0;                // groups of >= 2 identical originals
  int64_t duplicate_groups_across_splits = 0;  // must be 0 for a leak-free file
  int64_t near_duplicate_pairs_across_splits = 0;
  int near_duplicate_distance = 0;
  std::string prepare_settings;  // JSON as stored
};

// near_duplicate_distance < 0 skips the O(n^2) near-duplicate pass.
Result<InspectReport> Inspect(const DatasetReader& reader, int near_duplicate_distance);
Result<InspectReport> Inspect(const std::string& path, int near_duplicate_distance);

std::string ToJson(const InspectReport& report);
std::string ToText(const InspectReport& report);

}  // namespace effnet::storage
