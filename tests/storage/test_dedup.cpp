// Near-duplicate search: multi-index hashing (Note [multi-index hashing] in storage/dedup.cpp)
// against comparing all pairs, on random hashes with planted near pairs.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <vector>

#include "common/hash.h"
#include "storage/dedup.h"

namespace effnet::storage {
namespace {

struct HashSet {
  std::vector<uint64_t> phash, content;
  std::vector<Split> splits;
  std::vector<bool> include;
};

// n random hashes, then `planted` items overwritten with a near copy (0-7 flipped bits) of an
// earlier one, some of them chained (clusters), some with the same content hash (exact).
HashSet MakeHashes(uint64_t seed, size_t n, size_t planted) {
  SplitMix64 g(seed);
  HashSet s;
  for (size_t i = 0; i < n; ++i) {
    s.phash.push_back(g.Next());
    s.content.push_back(g.Next());
    s.splits.push_back(static_cast<Split>(g.Below(3)));
    s.include.push_back(g.Below(10) != 0);
  }
  for (size_t k = 0; k < planted; ++k) {
    const size_t dst = 1 + static_cast<size_t>(g.Below(n - 1));
    const size_t src = static_cast<size_t>(g.Below(dst));
    uint64_t h = s.phash[src];
    const int flips = static_cast<int>(g.Below(8));
    for (int f = 0; f < flips; ++f) h ^= uint64_t{1} << g.Below(64);
    s.phash[dst] = h;
    if (g.Below(8) == 0) s.content[dst] = s.content[src];
  }
  return s;
}

TEST(NearDuplicates, MultiIndexEqualsAllPairs) {
  for (uint64_t seed : {1, 2, 3}) {
    const HashSet s = MakeHashes(seed, 3000, 1500);
    for (int d : {0, 1, 2, 3, 4, 5, 7, 12, 20}) {
      const auto want = NearDuplicatesAcrossSplitsAllPairs(s.phash, s.content, s.splits, d);
      const auto got = NearDuplicatesAcrossSplits(s.phash, s.content, s.splits, d);
      EXPECT_EQ(got, want) << "seed " << seed << " distance " << d;
      if (d == 4) EXPECT_GT(want.size(), 300u) << "planted pairs missing";  // not vacuous
      const auto want_inc =
          NearDuplicatesAcrossSplitsAllPairs(s.phash, s.content, s.splits, d, s.include);
      EXPECT_EQ(NearDuplicatesAcrossSplits(s.phash, s.content, s.splits, d, s.include), want_inc)
          << "seed " << seed << " distance " << d << " with include";
    }
  }
}

TEST(NearDuplicates, ManyEqualHashesAndBlockBoundaries) {
  // Groups of equal hashes (one bucket per block) and hashes differing only in the bits at block
  // boundaries (12/13, 25/26, 38/39, 51/52) and the top bit.
  HashSet s;
  SplitMix64 g(9);
  const uint64_t base = 0x0123456789ABCDEFULL;
  const int bits[] = {0, 12, 13, 25, 26, 38, 39, 51, 52, 63};
  for (int k = 0; k < 200; ++k) {
    uint64_t h = base;
    for (int f = 0; f < k % 6; ++f) h ^= uint64_t{1} << bits[g.Below(10)];
    s.phash.push_back(h);
    s.content.push_back(k % 50 == 0 ? 7 : g.Next());
    s.splits.push_back(static_cast<Split>(k % 3));
  }
  for (int d : {0, 1, 3, 4, 6}) {
    EXPECT_EQ(NearDuplicatesAcrossSplits(s.phash, s.content, s.splits, d),
              NearDuplicatesAcrossSplitsAllPairs(s.phash, s.content, s.splits, d))
        << "distance " << d;
  }
  EXPECT_TRUE(NearDuplicatesAcrossSplits(s.phash, s.content, s.splits, -1).empty());
}

TEST(NearDuplicates, EightyFourThousandHashesQuickly) {
  const HashSet s = MakeHashes(5, 84000, 2000);
  const auto t0 = std::chrono::steady_clock::now();
  const auto pairs = NearDuplicatesAcrossSplits(s.phash, s.content, s.splits, 4);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("  84,000 hashes, distance 4: %zu pairs in %.3f s\n", pairs.size(), secs);
  EXPECT_GT(pairs.size(), 500u);
  EXPECT_LT(secs, 10.0);  // all pairs: 3.5e9 popcounts; multi-index: ~0.1 s
}

}  // namespace
}  // namespace effnet::storage
