// The config table (worker/train/config.cpp) without Torch: every section parses, prints back the
// same, names the field in errors, and generates docs/config.md exactly as committed.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "worker/train/config.h"

namespace effnet::train {
namespace {

TEST(ConfigTable, JobSectionParsesAndRoundTrips) {
  auto c = ParseTrainConfig(
      "job:\n  epochs: 12\n  seed: 7\n  progressive: {num_stages: 3, formula: official, "
      "min_image_size: 64, max_image_size: 128, max_randaug: 10}\n  early_stopping: {patience: "
      "4}\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->job.epochs, 12);
  EXPECT_EQ(c->job.progressive.formula, job::ScheduleFormula::kOfficial);
  EXPECT_EQ(c->job.early_stopping.patience, 4);
  auto again = ParseTrainConfig(TrainConfigToYaml(*c));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->job.progressive.max_randaug, 10);
  EXPECT_EQ(again->job.seed, 7u);
  EXPECT_EQ(TrainConfigToYaml(*again), TrainConfigToYaml(*c));
  // The job section alone parses back to the same job.
  auto job_only = ParseTrainConfig("job:\n" + [&] {
    std::string indented, line;
    std::stringstream ss(JobConfigToYaml(c->job));
    std::getline(ss, line);  // "job:"
    while (std::getline(ss, line)) indented += line + "\n";
    return indented;
  }());
  ASSERT_TRUE(job_only.ok()) << job_only.status().ToString();
  EXPECT_EQ(job_only->job.progressive.num_stages, 3);
}

TEST(ConfigTable, EveryDefaultRoundTrips) {
  TrainConfig defaults;
  auto c = ParseTrainConfig(TrainConfigToYaml(defaults));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(TrainConfigToYaml(*c), TrainConfigToYaml(defaults));
  for (const auto& name : PresetNames()) {
    auto p = ParseTrainConfig(PresetText(name).value());
    ASSERT_TRUE(p.ok()) << name << ": " << p.status().ToString();
    auto back = ParseTrainConfig(TrainConfigToYaml(*p));
    ASSERT_TRUE(back.ok()) << name;
    EXPECT_EQ(TrainConfigToYaml(*back), TrainConfigToYaml(*p)) << name;
  }
}

TEST(ConfigTable, ErrorsNameTheField) {
  auto bad = ParseTrainConfig("job: {progressive: {formula: fancy}}");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("job.progressive.formula: expected paper|official"),
            std::string::npos)
      << bad.status().message();
  auto unknown = ParseTrainConfig("job: {epoch: 3}");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("job.epoch: unknown field"), std::string::npos);
  auto neg = ParseTrainConfig("job: {epochs: 0}");
  EXPECT_NE(neg.status().message().find("job.epochs"), std::string::npos);
  auto sizes = ParseTrainConfig("job: {progressive: {min_image_size: 256, max_image_size: 128}}");
  EXPECT_NE(sizes.status().message().find("min_image_size"), std::string::npos);
  auto variant = ParseTrainConfig("model: {variant: b9}");
  EXPECT_NE(variant.status().message().find("model.variant: expected b0|b1|b2|b3|s|m|l"),
            std::string::npos)
      << variant.status().message();
  auto padding = ParseTrainConfig("model: {padding: same}");
  EXPECT_NE(padding.status().message().find("model.padding: expected tf_same|symmetric"),
            std::string::npos);
  auto section = ParseTrainConfig("outputs: {progress: false}");
  EXPECT_NE(section.status().message().find("outputs: unknown section"), std::string::npos);
  auto freeze = ParseTrainConfig("model: {freeze: head}");
  EXPECT_NE(freeze.status().message().find("model.freeze: expected none|backbone|stages:N, got "
                                           "'head'"),
            std::string::npos)
      << freeze.status().message();
  auto stages = ParseTrainConfig("model: {freeze: 'stages:2', unfreeze_epoch: 3}", {});
  ASSERT_TRUE(stages.ok()) << stages.status().ToString();
  EXPECT_EQ(ParseFreeze(stages->transfer.freeze).value(), 2);
  EXPECT_EQ(stages->transfer.unfreeze_epoch, 3);
  EXPECT_EQ(ParseFreeze("backbone").value(), kFreezeBackbone);
  auto pre = ParseTrainConfig("{}", {"model.pretrained=/w/b0.safetensors"});
  ASSERT_TRUE(pre.ok());
  EXPECT_EQ(pre->transfer.pretrained, "/w/b0.safetensors");
  auto seed = ParseTrainConfig("job: {seed: -1}");
  EXPECT_NE(seed.status().message().find("job.seed: expected a non-negative integer"),
            std::string::npos);
}

// Note [duplicate keys]: a repeated key is refused with its line, the first line and the full key,
// at any depth and in flow style; the file's path comes first when read from a file.
TEST(ConfigTable, DuplicateKeysAreRefusedWithLineAndKey) {
  auto top = ParseTrainConfig("job: {epochs: 3}\nmodel: {variant: b0}\njob: {epochs: 5}\n");
  ASSERT_FALSE(top.ok());
  EXPECT_NE(top.status().message().find("line 3: duplicate key 'job' (first at line 1)"),
            std::string::npos)
      << top.status().message();
  auto nested = ParseTrainConfig("optimizer:\n  lr: 0.1\n  name: sgd\n  lr: 0.001\n");
  ASSERT_FALSE(nested.ok());
  EXPECT_NE(
      nested.status().message().find("line 4: duplicate key 'optimizer.lr' (first at line 2)"),
      std::string::npos)
      << nested.status().message();
  auto deep = ParseTrainConfig("job: {progressive: {num_stages: 2, num_stages: 3}}");
  ASSERT_FALSE(deep.ok());
  EXPECT_NE(deep.status().message().find("duplicate key 'job.progressive.num_stages'"),
            std::string::npos)
      << deep.status().message();
  // An override of a key the file sets once is not a duplicate.
  EXPECT_TRUE(ParseTrainConfig("optimizer: {lr: 0.1}", {"optimizer.lr=0.2"}).ok());

  const std::string path = ::testing::TempDir() + "/dup_config.yaml";
  std::ofstream(path) << "# a comment\ndata:\n  batch_size: 8\n  batch_size: 16\n";
  auto file = LoadTrainConfig(path);
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().ToString().find(path + ": line 4: duplicate key 'data.batch_size' "
                                                 "(first at line 3)"),
            std::string::npos)
      << file.status().ToString();
}

// Values the docs give no meaning are refused with the key named, including integers past INT_MAX
// for fields with an open upper bound (a silent overflow before).
TEST(ConfigTable, OutOfRangeValuesNameTheKey) {
  auto expect_refused = [](const std::string& yaml, const std::string& want) {
    auto c = ParseTrainConfig(yaml);
    ASSERT_FALSE(c.ok()) << yaml;
    EXPECT_NE(c.status().message().find(want), std::string::npos)
        << yaml << " -> " << c.status().message();
  };
  expect_refused("job: {early_stopping: {patience: 1e12}}", "job.early_stopping.patience");
  expect_refused("job: {early_stopping: {patience: -1}}", "job.early_stopping.patience");
  expect_refused("model: {num_classes: 4294967296}", "model.num_classes");
  expect_refused("model: {num_classes: -3}", "model.num_classes");
  expect_refused("model: {unfreeze_epoch: -2}", "model.unfreeze_epoch");
  expect_refused("output: {log_every_steps: 0}", "output.log_every_steps");
  expect_refused("optimizer: {lr: -0.1}", "optimizer.lr");
  expect_refused("optimizer: {lr: .nan}", "optimizer.lr");
  expect_refused("optimizer: {clip_grad_norm: -1}", "optimizer.clip_grad_norm");
  expect_refused("schedule: {warmup_epochs: -1}", "schedule.warmup_epochs");
  expect_refused("augment: {hflip_prob: 1.5}", "augment.hflip_prob");
  expect_refused("data: {batch_size: -16}", "data.batch_size");
  expect_refused("data: {eval_image_size: 16}", "data.eval_image_size");
  expect_refused("optimizer: {lr: 0.001}\nschedule: {min_lr: 0.01}", "schedule.min_lr");
  expect_refused("client: {call_timeout_s: 1e300}", "client.call_timeout_s");
  expect_refused("client: {decision_timeout_s: -5}", "client.decision_timeout_s");
  expect_refused("dist: {comm: {timeout_s: 0}}", "comm.timeout_s");
  expect_refused("dist: {comm: {timeout_s: .inf}}", "dist.comm.timeout_s");
  expect_refused("runtime: {threads: -1}", "runtime.threads");
  expect_refused("checkpoint: {keep_last: 0}", "checkpoint.keep_last");
}

TEST(ConfigTable, OverridesReachEverySection) {
  auto c = ParseTrainConfig("{}", {"runtime.threads=3", "client.call_timeout_s=7.5",
                                   "job.progressive.num_stages=2", "model.padding=symmetric"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->runtime.threads, 3);
  EXPECT_EQ(c->client.call_timeout_s, 7.5);
  EXPECT_EQ(c->job.progressive.num_stages, 2);
  EXPECT_EQ(c->model.padding, model::Padding::kSymmetric);
  EXPECT_FALSE(ParseTrainConfig("{}", {"output.threads=1"}).ok());  // moved to runtime.threads
}

// docs/config.md is generated (`effnet-train --config-doc > docs/config.md`, or this test with
// EFFNET_UPDATE_DOCS=1), never hand-edited.
TEST(ConfigTable, DocsPageIsGenerated) {
  const char* src = std::getenv("EFFNET_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  const std::string path = std::string(src) + "/docs/config.md";
  if (const char* update = std::getenv("EFFNET_UPDATE_DOCS");
      update && std::string(update) == "1") {
    std::ofstream(path) << ConfigDocMarkdown();
  }
  std::ifstream f(path);
  ASSERT_TRUE(f.good());
  std::stringstream ss;
  ss << f.rdbuf();
  EXPECT_EQ(ss.str(), ConfigDocMarkdown())
      << "docs/config.md is stale: regenerate it with effnet-train --config-doc > docs/config.md";
}

}  // namespace
}  // namespace effnet::train
