#include "storage/dedup.h"

#include <unordered_map>

namespace effnet::storage {

uint64_t ContentHash(const uint8_t* pixels, int height, int width, int channels) {
  uint8_t header[12];
  const uint32_t v[3] = {static_cast<uint32_t>(height), static_cast<uint32_t>(width),
                         static_cast<uint32_t>(channels)};
  for (int k = 0; k < 3; ++k) {
    for (int b = 0; b < 4; ++b) header[k * 4 + b] = static_cast<uint8_t>(v[k] >> (8 * b));
  }
  uint64_t h = Fnv1a64(header, sizeof(header));
  return Fnv1a64(pixels, static_cast<size_t>(height) * width * channels, h);
}

uint64_t DHashFromThumbnail(const uint8_t* thumb72) {
  uint64_t h = 0;
  for (int r = 0; r < 8; ++r) {
    for (int c = 0; c < 8; ++c) {
      if (thumb72[r * 9 + c] < thumb72[r * 9 + c + 1]) h |= uint64_t{1} << (r * 8 + c);
    }
  }
  return h;
}

std::vector<int64_t> GroupByHash(const std::vector<uint64_t>& hashes) {
  std::unordered_map<uint64_t, int64_t> first;
  first.reserve(hashes.size());
  std::vector<int64_t> group(hashes.size());
  for (size_t i = 0; i < hashes.size(); ++i) {
    auto it = first.emplace(hashes[i], static_cast<int64_t>(i)).first;
    group[i] = it->second;
  }
  return group;
}

std::vector<DuplicateGroup> ExactDuplicateGroups(const std::vector<uint64_t>& hashes,
                                                 const std::vector<bool>& include) {
  std::unordered_map<uint64_t, size_t> slot;
  std::vector<DuplicateGroup> all;
  for (size_t i = 0; i < hashes.size(); ++i) {
    if (!include.empty() && !include[i]) continue;
    auto [it, inserted] = slot.emplace(hashes[i], all.size());
    if (inserted) all.push_back(DuplicateGroup{hashes[i], {}});
    all[it->second].members.push_back(static_cast<int64_t>(i));
  }
  std::vector<DuplicateGroup> out;
  for (auto& g : all) {
    if (g.members.size() >= 2) out.push_back(std::move(g));
  }
  return out;
}

std::vector<DuplicateGroup> GroupsAcrossSplits(const std::vector<DuplicateGroup>& groups,
                                               const std::vector<Split>& splits) {
  std::vector<DuplicateGroup> out;
  for (const auto& g : groups) {
    const Split first = splits[static_cast<size_t>(g.members.front())];
    for (int64_t m : g.members) {
      if (splits[static_cast<size_t>(m)] != first) {
        out.push_back(g);
        break;
      }
    }
  }
  return out;
}

std::vector<NearDuplicatePair> NearDuplicatesAcrossSplits(const std::vector<uint64_t>& phash,
                                                          const std::vector<uint64_t>& content_hash,
                                                          const std::vector<Split>& splits,
                                                          int max_distance,
                                                          const std::vector<bool>& include) {
  std::vector<NearDuplicatePair> out;
  if (max_distance < 0) return out;
  const size_t n = phash.size();
  for (size_t i = 0; i < n; ++i) {
    if (!include.empty() && !include[i]) continue;
    for (size_t j = i + 1; j < n; ++j) {
      if (splits[i] == splits[j]) continue;
      if (!include.empty() && !include[j]) continue;
      const int d = HammingDistance(phash[i], phash[j]);
      if (d <= max_distance && content_hash[i] != content_hash[j]) {
        out.push_back({static_cast<int64_t>(i), static_cast<int64_t>(j), d});
      }
    }
  }
  return out;
}

}  // namespace effnet::storage
