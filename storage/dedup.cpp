#include "storage/dedup.h"

#include <algorithm>
#include <unordered_map>
#include <utility>

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

std::vector<NearDuplicatePair> NearDuplicatesAcrossSplitsAllPairs(
    const std::vector<uint64_t>& phash, const std::vector<uint64_t>& content_hash,
    const std::vector<Split>& splits, int max_distance, const std::vector<bool>& include) {
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

// Note [multi-index hashing]: split the 64 bits into max_distance + 1 blocks (for 4: 13, 13, 13,
// 13, 12 bits). Two hashes within distance d differ in at most d bits, so by pigeonhole at least
// one of the d + 1 blocks is equal in both. Sorting the items by (block value, index) once per
// block puts every candidate pair into a run of equal values; only pairs within a run are
// compared. A pair equal in several blocks is kept only for the first such block, so each pair
// is found once without a set.
std::vector<NearDuplicatePair> NearDuplicatesAcrossSplits(const std::vector<uint64_t>& phash,
                                                          const std::vector<uint64_t>& content_hash,
                                                          const std::vector<Split>& splits,
                                                          int max_distance,
                                                          const std::vector<bool>& include) {
  std::vector<NearDuplicatePair> out;
  if (max_distance < 0) return out;
  const int num_blocks = max_distance + 1;
  // Blocks under 4 bits would put most items into a few huge runs: compare all pairs instead.
  if (num_blocks > 16) {
    return NearDuplicatesAcrossSplitsAllPairs(phash, content_hash, splits, max_distance, include);
  }
  std::vector<int> shift(num_blocks), width(num_blocks);
  for (int b = 0, at = 0; b < num_blocks; ++b) {
    width[b] = 64 / num_blocks + (b < 64 % num_blocks ? 1 : 0);
    shift[b] = at;
    at += width[b];
  }
  auto block = [&](uint64_t h, int b) {
    const uint64_t mask = width[b] == 64 ? ~uint64_t{0} : (uint64_t{1} << width[b]) - 1;
    return (h >> shift[b]) & mask;
  };
  std::vector<uint32_t> items;
  items.reserve(phash.size());
  for (size_t i = 0; i < phash.size(); ++i) {
    if (include.empty() || include[i]) items.push_back(static_cast<uint32_t>(i));
  }
  std::vector<std::pair<uint64_t, uint32_t>> keyed(items.size());
  for (int b = 0; b < num_blocks; ++b) {
    for (size_t k = 0; k < items.size(); ++k) keyed[k] = {block(phash[items[k]], b), items[k]};
    std::sort(keyed.begin(), keyed.end());
    for (size_t lo = 0; lo < keyed.size();) {
      size_t hi = lo + 1;
      while (hi < keyed.size() && keyed[hi].first == keyed[lo].first) ++hi;
      for (size_t x = lo; x < hi; ++x) {
        const uint32_t i = keyed[x].second;
        for (size_t y = x + 1; y < hi; ++y) {
          const uint32_t j = keyed[y].second;  // i < j: sorted by index within a run
          if (splits[i] == splits[j]) continue;
          const int d = HammingDistance(phash[i], phash[j]);
          if (d > max_distance || content_hash[i] == content_hash[j]) continue;
          bool earlier = false;  // found already in an earlier block
          for (int e = 0; e < b && !earlier; ++e)
            earlier = block(phash[i], e) == block(phash[j], e);
          if (!earlier) out.push_back({static_cast<int64_t>(i), static_cast<int64_t>(j), d});
        }
      }
      lo = hi;
    }
  }
  std::sort(out.begin(), out.end(), [](const NearDuplicatePair& p, const NearDuplicatePair& q) {
    return p.a != q.a ? p.a < q.a : p.b < q.b;
  });
  return out;
}

}  // namespace effnet::storage
