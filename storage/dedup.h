// Duplicate detection: exact (content hash of the decoded pixels) and near (64-bit dHash).
//
// Note [duplicate leak]: two photos with identical decoded pixels in different splits let a
// model score on test data it was trained on. effnet-prepare therefore groups identical content
// before splitting (StratifiedSplit keeps a group in one split), and reports near-duplicates
// (perceptual hashes within a small Hamming distance) that still end up in different splits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/hash.h"  // Fnv1a64
#include "storage/dataset_reader.h"

namespace effnet::storage {

// Content hash of a decoded image (docs/hdf5-layout.md): FNV-1a 64 over height, width and
// channels as three little-endian uint32, then the pixel bytes (row-major, RGB or gray).
uint64_t ContentHash(const uint8_t* pixels, int height, int width, int channels);

// dHash of a 9-wide, 8-high grayscale thumbnail (row-major, 72 bytes): bit r*8+c is set when
// thumb[r][c] < thumb[r][c+1] (brightness rises to the right).
uint64_t DHashFromThumbnail(const uint8_t* thumb72);

inline int HammingDistance(uint64_t a, uint64_t b) { return __builtin_popcountll(a ^ b); }

// Group id of every item: the index of the first item with the same hash.
std::vector<int64_t> GroupByHash(const std::vector<uint64_t>& hashes);

struct DuplicateGroup {
  uint64_t hash = 0;
  std::vector<int64_t> members;  // ascending, >= 2
};
// Groups of >= 2 items with equal hash, restricted to items where include[i] (empty: all).
std::vector<DuplicateGroup> ExactDuplicateGroups(const std::vector<uint64_t>& hashes,
                                                 const std::vector<bool>& include = {});
// Groups whose members are not all in one split.
std::vector<DuplicateGroup> GroupsAcrossSplits(const std::vector<DuplicateGroup>& groups,
                                               const std::vector<Split>& splits);

struct NearDuplicatePair {
  int64_t a = 0, b = 0;  // a < b
  int distance = 0;
  bool operator==(const NearDuplicatePair& o) const {
    return a == o.a && b == o.b && distance == o.distance;
  }
};
// Pairs of items in different splits whose perceptual hashes are within `max_distance` and whose
// content hashes differ (exact duplicates are reported separately), sorted by (a, b). Items with
// !include[i] are skipped (empty: all). Multi-index hashing (Note [multi-index hashing]): about
// linear in n for random hashes, plus the pairs within groups of hashes that agree on a block.
std::vector<NearDuplicatePair> NearDuplicatesAcrossSplits(const std::vector<uint64_t>& phash,
                                                          const std::vector<uint64_t>& content_hash,
                                                          const std::vector<Split>& splits,
                                                          int max_distance,
                                                          const std::vector<bool>& include = {});
// The same result by comparing all pairs: O(n^2) popcounts (about 1 s per 10^9 pairs on one
// core). The reference for tests.
std::vector<NearDuplicatePair> NearDuplicatesAcrossSplitsAllPairs(
    const std::vector<uint64_t>& phash, const std::vector<uint64_t>& content_hash,
    const std::vector<Split>& splits, int max_distance, const std::vector<bool>& include = {});

}  // namespace effnet::storage
