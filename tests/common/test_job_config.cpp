#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include "common/job/config.h"

namespace effnet::job {
namespace {

TEST(JobConfig, ParsesAndRoundTrips) {
  auto node = YAML::Load(
      "epochs: 12\nseed: 7\nprogressive: {num_stages: 3, formula: official, min_image_size: 64,"
      " max_image_size: 128, max_randaug: 10}\nearly_stopping: {patience: 4}\n");
  auto c = ParseJobConfig(node);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->epochs, 12);
  EXPECT_EQ(c->progressive.formula, ScheduleFormula::kOfficial);
  EXPECT_EQ(c->early_stopping.patience, 4);
  auto again = ParseJobConfig(YAML::Load(JobConfigToYaml(*c)));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->progressive.max_randaug, 10);
  EXPECT_EQ(again->seed, 7u);
}

TEST(JobConfig, ErrorsNameTheField) {
  auto bad = ParseJobConfig(YAML::Load("progressive: {formula: fancy}"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("job.progressive.formula"), std::string::npos);
  auto unknown = ParseJobConfig(YAML::Load("epoch: 3"));
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("job.epoch: unknown field"), std::string::npos);
  auto neg = ParseJobConfig(YAML::Load("epochs: 0"));
  EXPECT_NE(neg.status().message().find("job.epochs"), std::string::npos);
}

}  // namespace
}  // namespace effnet::job
