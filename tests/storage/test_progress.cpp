#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "common/progress.h"

namespace effnet {
namespace {

TEST(Progress, FormatsBarRateAndEta) {
  const std::string line = Progress::Format("decode", "img", 50, 200, 10.0, 20, true);
  EXPECT_NE(line.find("decode [#####---------------]"), std::string::npos) << line;
  EXPECT_NE(line.find("50/200"), std::string::npos) << line;
  EXPECT_NE(line.find("25.0%"), std::string::npos) << line;
  EXPECT_NE(line.find("5.0 img/s"), std::string::npos) << line;
  EXPECT_NE(line.find("ETA 0:30"), std::string::npos) << line;  // 150 left at 5/s

  const std::string plain = Progress::Format("decode", "img", 200, 200, 4.0, 20, false);
  EXPECT_EQ(plain.find('['), std::string::npos) << plain;
  EXPECT_NE(plain.find("in 0:04"), std::string::npos) << plain;

  const std::string unknown = Progress::Format("read", "it", 7, 0, 1.0, 20, true);
  EXPECT_EQ(unknown.find("ETA"), std::string::npos) << unknown;
  EXPECT_EQ(unknown.find('%'), std::string::npos) << unknown;
}

TEST(Progress, Durations) {
  EXPECT_EQ(Progress::FormatDuration(0), "0:00");
  EXPECT_EQ(Progress::FormatDuration(61.4), "1:01");
  EXPECT_EQ(Progress::FormatDuration(3723), "1:02:03");
}

TEST(Progress, CountsFromManyThreads) {
  ProgressOptions o;
  o.enabled = false;
  Progress p(4000, o);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) p.Add(1);
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(p.done(), 4000);
  p.Finish();
  p.Finish();  // idempotent
}

}  // namespace
}  // namespace effnet
