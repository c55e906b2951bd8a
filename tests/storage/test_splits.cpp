#include <gtest/gtest.h>

#include <map>

#include "storage/dedup.h"
#include "storage/splits.h"

namespace effnet::storage {
namespace {

std::vector<int64_t> Identity(size_t n) {
  std::vector<int64_t> g(n);
  for (size_t i = 0; i < n; ++i) g[i] = static_cast<int64_t>(i);
  return g;
}

TEST(Splits, TargetsFollowTheStudy) {
  SplitConfig c;  // 20 % test, then 20 % of the rest
  auto t = SplitTargets(150, c);
  EXPECT_EQ(t.test, 30);
  EXPECT_EQ(t.val, 24);
  EXPECT_EQ(t.train, 96);
  t = SplitTargets(148, c);
  EXPECT_EQ(t.test + t.val + t.train, 148);
  EXPECT_EQ(t.test, 30);  // round(29.6)
  EXPECT_EQ(t.val, 24);   // round(23.6)
}

TEST(Splits, StratifiedWithinOneOfTargetPerClass) {
  // Uneven classes, some with duplicate groups of 2 and 3.
  std::vector<int32_t> labels;
  std::vector<int64_t> groups;
  const int sizes[] = {150, 149, 37, 11, 5, 1};
  int64_t next_group = 0;
  for (int c = 0; c < 6; ++c) {
    for (int i = 0; i < sizes[c]; ++i) {
      labels.push_back(c);
      // Every 20th item of the big classes joins the previous item's group.
      groups.push_back((c < 2 && i % 20 == 19) ? next_group - 1 : next_group++);
    }
  }
  SplitConfig cfg;
  cfg.seed = 7;
  auto s = StratifiedSplit(labels, groups, cfg);
  ASSERT_TRUE(s.ok());
  for (int c = 0; c < 6; ++c) {
    int64_t have[3] = {0, 0, 0};
    for (size_t i = 0; i < labels.size(); ++i) {
      if (labels[i] == c) have[static_cast<int>((*s)[i])] += 1;
    }
    const auto t = SplitTargets(sizes[c], cfg);
    EXPECT_LE(std::abs(have[0] - t.train), 1) << "class " << c;
    EXPECT_LE(std::abs(have[1] - t.val), 1) << "class " << c;
    EXPECT_LE(std::abs(have[2] - t.test), 1) << "class " << c;
  }
  // Groups never straddle splits.
  std::map<int64_t, Split> group_split;
  int joined = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    auto [it, inserted] = group_split.emplace(groups[i], (*s)[i]);
    if (!inserted) {
      ++joined;
      EXPECT_EQ((*s)[i], it->second) << i;
    }
  }
  EXPECT_EQ(joined, 14);
}

TEST(Splits, ExactTargetsWithoutGroups) {
  std::vector<int32_t> labels(300);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int32_t>(i % 3);
  auto s = StratifiedSplit(labels, Identity(labels.size()), SplitConfig{});
  ASSERT_TRUE(s.ok());
  std::map<std::pair<int, int>, int> count;
  for (size_t i = 0; i < labels.size(); ++i) count[{labels[i], static_cast<int>((*s)[i])}]++;
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ((count[{c, 0}]), 64);
    EXPECT_EQ((count[{c, 1}]), 16);
    EXPECT_EQ((count[{c, 2}]), 20);
  }
}

TEST(Splits, SeededAndReproducible) {
  std::vector<int32_t> labels(200);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int32_t>(i % 4);
  SplitConfig a, b;
  a.seed = b.seed = 123;
  auto s1 = StratifiedSplit(labels, Identity(200), a);
  auto s2 = StratifiedSplit(labels, Identity(200), b);
  b.seed = 124;
  auto s3 = StratifiedSplit(labels, Identity(200), b);
  ASSERT_TRUE(s1.ok() && s2.ok() && s3.ok());
  EXPECT_EQ(*s1, *s2);
  EXPECT_NE(*s1, *s3);
}

TEST(Splits, RejectsBadInput) {
  EXPECT_FALSE(StratifiedSplit({0, 1}, {0}, SplitConfig{}).ok());
  SplitConfig bad;
  bad.test_fraction = 1.0;
  EXPECT_FALSE(StratifiedSplit({0}, {0}, bad).ok());
}

TEST(Splits, WarningsNameTheShortClassAndTheEmptySplit) {
  SplitConfig c;
  // A class absent from train is never learnt; one absent from test is never measured there.
  auto w = SplitWarnings({"a", "b", "c"}, {{{6, 2, 2}}, {{0, 1, 1}}, {{1, 1, 0}}}, c);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_NE(w[0].find("class 'b' has 2 images, too few for the splits (train 0, val 1, test 1): "
                      "none in train, so the model never learns it"),
            std::string::npos)
      << w[0];
  EXPECT_NE(w[1].find("class 'c' has 2 images"), std::string::npos) << w[1];
  EXPECT_NE(w[1].find("none in test, so it is never measured there"), std::string::npos) << w[1];
  // Empty val and test splits: one line each, not one per class.
  w = SplitWarnings({"a", "b"}, {{{1, 0, 0}}, {{1, 0, 0}}}, c);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_NE(w[0].find("the val split is empty"), std::string::npos);
  EXPECT_NE(w[1].find("the test split is empty"), std::string::npos);
  c.val_fraction = c.test_fraction = 0;
  EXPECT_TRUE(SplitWarnings({"a", "b"}, {{{1, 0, 0}}, {{1, 0, 0}}}, c).empty());
  // Enough images everywhere: nothing to say.
  EXPECT_TRUE(SplitWarnings({"a"}, {{{6, 2, 2}}}, SplitConfig{}).empty());
}

TEST(Dedup, GroupsAndCrossSplitDetection) {
  const std::vector<uint64_t> h = {5, 7, 5, 9, 7, 5};
  EXPECT_EQ(GroupByHash(h), (std::vector<int64_t>{0, 1, 0, 3, 1, 0}));
  auto groups = ExactDuplicateGroups(h);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].members, (std::vector<int64_t>{0, 2, 5}));
  EXPECT_EQ(groups[1].members, (std::vector<int64_t>{1, 4}));
  std::vector<Split> splits = {Split::kTrain, Split::kVal, Split::kTrain,
                               Split::kTest,  Split::kVal, Split::kTest};
  auto across = GroupsAcrossSplits(groups, splits);
  ASSERT_EQ(across.size(), 1u);
  EXPECT_EQ(across[0].hash, 5u);
  // Excluding item 5 removes the leak.
  EXPECT_TRUE(GroupsAcrossSplits(ExactDuplicateGroups(h, {1, 1, 1, 1, 1, 0}), splits).empty());
}

TEST(Dedup, NearDuplicatesOnlyAcrossSplitsAndNotExact) {
  const std::vector<uint64_t> ph = {0x0, 0x3, 0xFF, 0x1, 0x0};
  const std::vector<uint64_t> ch = {1, 2, 3, 4, 1};
  const std::vector<Split> sp = {Split::kTrain, Split::kTest, Split::kTest, Split::kTrain,
                                 Split::kVal};
  auto pairs = NearDuplicatesAcrossSplits(ph, ch, sp, 2);
  // (0,1) d=2 across; (0,3) same split; (0,4) exact duplicate; (1,3) d=1; (1,4) d=2; (3,4) d=1.
  ASSERT_EQ(pairs.size(), 4u);
  EXPECT_EQ(pairs[0].a, 0);
  EXPECT_EQ(pairs[0].b, 1);
  EXPECT_EQ(pairs[0].distance, 2);
  EXPECT_TRUE(NearDuplicatesAcrossSplits(ph, ch, sp, -1).empty());
}

TEST(Dedup, HashesAreStable) {
  // FNV-1a 64 reference values ("" and "a").
  EXPECT_EQ(Fnv1a64("", 0), 0xcbf29ce484222325ULL);
  EXPECT_EQ(Fnv1a64("a", 1), 0xaf63dc4c8601ec8cULL);
  const uint8_t px[6] = {1, 2, 3, 4, 5, 6};
  EXPECT_NE(ContentHash(px, 1, 2, 3), ContentHash(px, 2, 1, 3));  // shape is hashed
  uint8_t thumb[72];
  for (int i = 0; i < 72; ++i) thumb[i] = static_cast<uint8_t>(i % 9);  // rises left to right
  EXPECT_EQ(DHashFromThumbnail(thumb), ~uint64_t{0});
  for (int i = 0; i < 72; ++i) thumb[i] = static_cast<uint8_t>(9 - i % 9);
  EXPECT_EQ(DHashFromThumbnail(thumb), 0u);
}

}  // namespace
}  // namespace effnet::storage
