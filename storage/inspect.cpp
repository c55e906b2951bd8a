#include "storage/inspect.h"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "storage/dedup.h"

namespace effnet::storage {

Result<InspectReport> Inspect(const DatasetReader& reader, int near_duplicate_distance) {
  const DatasetInfo& info = reader.info();
  InspectReport r;
  r.path = reader.path();
  r.schema_version = info.schema_version;
  r.num_images = info.num_images;
  r.image_size = info.image_size;
  r.file_bytes = info.file_bytes;
  r.class_names = info.class_names;
  r.prepare_settings = info.source;
  r.near_duplicate_distance = near_duplicate_distance;
  r.counts.assign(info.class_names.size(), {0, 0, 0});
  std::vector<bool> original(static_cast<size_t>(info.num_images));
  for (int64_t i = 0; i < info.num_images; ++i) {
    const int s = static_cast<int>(info.splits[i]);
    r.counts[info.labels[i]][s] += 1;
    r.split_totals[s] += 1;
    original[i] = info.origin[i] == i;
    r.num_originals += original[i] ? 1 : 0;
  }
  r.augmented_copies = r.num_images - r.num_originals;
  // A copy shares its original's hash; only originals can form leak groups, and a copy stored in
  // another split than its original is a leak of its own.
  const auto groups = ExactDuplicateGroups(info.content_hash, original);
  r.duplicate_groups = static_cast<int64_t>(groups.size());
  r.duplicate_groups_across_splits =
      static_cast<int64_t>(GroupsAcrossSplits(groups, info.splits).size());
  for (int64_t i = 0; i < info.num_images; ++i) {
    if (!original[i] && info.splits[i] != info.splits[info.origin[i]]) {
      r.duplicate_groups_across_splits += 1;
    }
  }
  if (near_duplicate_distance >= 0) {
    r.near_duplicate_pairs_across_splits = static_cast<int64_t>(
        NearDuplicatesAcrossSplits(info.perceptual_hash, info.content_hash, info.splits,
                                   near_duplicate_distance, original)
            .size());
  }
  return r;
}

Result<InspectReport> Inspect(const std::string& path, int near_duplicate_distance) {
  EFFNET_ASSIGN_OR_RETURN(auto reader, DatasetReader::Open(path));
  return Inspect(*reader, near_duplicate_distance);
}

std::string ToJson(const InspectReport& r) {
  nlohmann::json j;
  j["path"] = r.path;
  j["schema_version"] = r.schema_version;
  j["num_images"] = r.num_images;
  j["num_originals"] = r.num_originals;
  j["augmented_copies"] = r.augmented_copies;
  j["image_size"] = r.image_size;
  j["file_bytes"] = r.file_bytes;
  j["classes"] = r.class_names;
  nlohmann::json per_class = nlohmann::json::object();
  for (size_t c = 0; c < r.class_names.size(); ++c) {
    per_class[r.class_names[c]] = {
        {"train", r.counts[c][0]}, {"val", r.counts[c][1]}, {"test", r.counts[c][2]}};
  }
  j["per_class"] = per_class;
  j["splits"] = {
      {"train", r.split_totals[0]}, {"val", r.split_totals[1]}, {"test", r.split_totals[2]}};
  j["duplicate_groups"] = r.duplicate_groups;
  j["duplicate_groups_across_splits"] = r.duplicate_groups_across_splits;
  if (r.near_duplicate_distance >= 0) {
    j["near_duplicate_distance"] = r.near_duplicate_distance;
    j["near_duplicate_pairs_across_splits"] = r.near_duplicate_pairs_across_splits;
  }
  auto settings = nlohmann::json::parse(r.prepare_settings, nullptr, /*allow_exceptions=*/false);
  j["prepare_settings"] = settings.is_discarded() ? nlohmann::json(r.prepare_settings) : settings;
  // A path from the command line may be Latin-1 (Note [text encoding]); U+FFFD, never a throw.
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string ToText(const InspectReport& r) {
  char buf[256];
  std::string out;
  out += "file            " + r.path + "\n";
  std::snprintf(buf, sizeof(buf), "schema version  %d\n", r.schema_version);
  out += buf;
  std::snprintf(buf, sizeof(buf),
                "images          %lld (%lld originals, %lld offline-augmented copies), %d x %d x 3 "
                "uint8\n",
                static_cast<long long>(r.num_images), static_cast<long long>(r.num_originals),
                static_cast<long long>(r.augmented_copies), r.image_size, r.image_size);
  out += buf;
  std::snprintf(buf, sizeof(buf), "storage size    %.1f MiB (%lld bytes)\n",
                r.file_bytes / 1048576.0, static_cast<long long>(r.file_bytes));
  out += buf;
  std::snprintf(buf, sizeof(buf), "classes         %zu\n", r.class_names.size());
  out += buf;
  size_t w = 5;
  for (const auto& n : r.class_names) w = std::max(w, n.size());
  std::snprintf(buf, sizeof(buf), "  %-*s %7s %7s %7s %7s\n", static_cast<int>(w), "class", "train",
                "val", "test", "total");
  out += buf;
  for (size_t c = 0; c < r.class_names.size(); ++c) {
    const auto& k = r.counts[c];
    std::snprintf(buf, sizeof(buf), "  %-*s %7lld %7lld %7lld %7lld\n", static_cast<int>(w),
                  r.class_names[c].c_str(), static_cast<long long>(k[0]),
                  static_cast<long long>(k[1]), static_cast<long long>(k[2]),
                  static_cast<long long>(k[0] + k[1] + k[2]));
    out += buf;
  }
  std::snprintf(buf, sizeof(buf), "  %-*s %7lld %7lld %7lld %7lld\n", static_cast<int>(w), "all",
                static_cast<long long>(r.split_totals[0]),
                static_cast<long long>(r.split_totals[1]),
                static_cast<long long>(r.split_totals[2]), static_cast<long long>(r.num_images));
  out += buf;
  std::snprintf(buf, sizeof(buf),
                "duplicates      %lld groups of identical images, %lld across splits%s\n",
                static_cast<long long>(r.duplicate_groups),
                static_cast<long long>(r.duplicate_groups_across_splits),
                r.duplicate_groups_across_splits ? "  <-- LEAK" : "");
  out += buf;
  if (r.near_duplicate_distance >= 0) {
    std::snprintf(
        buf, sizeof(buf), "near-duplicates %lld pairs across splits (dHash distance <= %d)\n",
        static_cast<long long>(r.near_duplicate_pairs_across_splits), r.near_duplicate_distance);
    out += buf;
  }
  out += "prepared with   " + r.prepare_settings + "\n";
  return out;
}

}  // namespace effnet::storage
