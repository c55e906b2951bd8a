#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "common/job/early_stopping.h"
#include "common/job/progressive.h"
#include "common/job/shards.h"

namespace effnet::job {
namespace {

TEST(Progressive, PaperFormulaGoesFromMinToMax) {
  ProgressiveConfig c;
  c.num_stages = 4;
  c.min_image_size = 128;
  c.max_image_size = 300;
  c.min_randaug = 5;
  c.max_randaug = 15;
  c.min_dropout = 0.1;
  c.max_dropout = 0.3;
  ASSERT_TRUE(Validate(c).ok());
  EXPECT_EQ(StageAt(c, 0).image_size, 128);
  EXPECT_EQ(StageAt(c, 3).image_size, 296);  // 300 rounded down to a multiple of 8
  EXPECT_DOUBLE_EQ(StageAt(c, 0).randaug_magnitude, 5);
  EXPECT_NEAR(StageAt(c, 1).randaug_magnitude, 5 + 10.0 / 3, 1e-12);
  EXPECT_DOUBLE_EQ(StageAt(c, 3).dropout, 0.3);
}

TEST(Progressive, OfficialFormulaNeverTrainsAtMin) {
  // automl main.py: size = int(128 + (train_size - 128) * (i + 1) / 4); B0 -> 144,160,176,192.
  ProgressiveConfig c;
  c.num_stages = 4;
  c.formula = ScheduleFormula::kOfficial;
  c.min_image_size = 128;
  c.max_image_size = 192;
  c.size_multiple = 1;
  std::vector<int> sizes;
  for (int i = 0; i < 4; ++i) sizes.push_back(StageAt(c, i).image_size);
  EXPECT_EQ(sizes, (std::vector<int>{144, 160, 176, 192}));
}

TEST(Progressive, EpochsSplitIntoEqualStages) {
  ProgressiveConfig c;
  c.num_stages = 3;
  c.min_image_size = 64;
  c.max_image_size = 128;
  std::vector<int> stage_of;
  for (int e = 0; e < 9; ++e) stage_of.push_back(StageForEpoch(c, e, 9).index);
  EXPECT_EQ(stage_of, (std::vector<int>{0, 0, 0, 1, 1, 1, 2, 2, 2}));
}

TEST(Progressive, RejectsBadValuesNamingTheField) {
  ProgressiveConfig c;
  c.num_stages = 0;
  auto s = Validate(c);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("num_stages"), std::string::npos);
}

TEST(Shards, EverySampleExactlyOncePerEpochAndDeterministic) {
  std::vector<int64_t> idx(103);
  std::iota(idx.begin(), idx.end(), 1000);
  for (int world : {1, 2, 3, 8}) {
    auto a = PlanShards(idx, 42, 5, world);
    auto b = PlanShards(idx, 42, 5, world);
    EXPECT_EQ(a, b);
    std::multiset<int64_t> seen;
    for (int r = 0; r < world; ++r) {
      EXPECT_EQ(static_cast<int64_t>(a[r].size()), ShardSize(103, world, r));
      seen.insert(a[r].begin(), a[r].end());
    }
    EXPECT_EQ(seen, std::multiset<int64_t>(idx.begin(), idx.end()));
  }
  EXPECT_NE(PlanShards(idx, 42, 5, 2), PlanShards(idx, 42, 6, 2));
}

TEST(EarlyStopping, StopsAfterPatienceAndTracksBestAccuracy) {
  EarlyStopping es({2, 0.0, "val_accuracy"});
  EXPECT_TRUE(es.Update(0, 1.0, 0.5, false).is_best);
  EXPECT_TRUE(es.Update(1, 0.8, 0.6, false).is_best);
  auto o = es.Update(2, 0.9, 0.7, false);  // loss worse, accuracy better
  EXPECT_TRUE(o.is_best);
  EXPECT_FALSE(o.stop);
  o = es.Update(3, 0.85, 0.65, false);
  EXPECT_FALSE(o.is_best);
  EXPECT_TRUE(o.stop);
  EXPECT_EQ(o.best_epoch, 2);
  EXPECT_NE(o.reason.find("(lowest at epoch 2)"), std::string::npos) << o.reason;  // from 1
}

}  // namespace
}  // namespace effnet::job
