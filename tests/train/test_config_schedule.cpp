// Config parsing (errors name the field and the allowed values), presets, --set overrides, the
// resolved YAML round trip, LR schedules, LocalJobControl plans and decision state.
#include <gtest/gtest.h>

#include <cmath>

#include "worker/train/config.h"
#include "worker/train/local_job_control.h"
#include "worker/train/schedule.h"

namespace {

using effnet::train::ParseTrainConfig;

std::string ErrorOf(const std::string& yaml, const std::vector<std::string>& sets = {}) {
  auto r = ParseTrainConfig(yaml, sets);
  return r.ok() ? "" : r.status().message();
}

TEST(Config, DefaultsAndOverrides) {
  auto c = ParseTrainConfig("{}", {"optimizer.lr=0.01", "job.epochs=3", "augment.rot90=true",
                                   "model.variant=b2", "job.progressive.num_stages=2"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_DOUBLE_EQ(c->optimizer.lr, 0.01);
  EXPECT_EQ(c->job.epochs, 3);
  EXPECT_TRUE(c->augment.rot90);
  EXPECT_EQ(c->model.variant, "b2");
  EXPECT_EQ(c->job.progressive.num_stages, 2);
  EXPECT_EQ(c->data.batch_size, 16);  // untouched default
}

TEST(Config, ErrorsNameFieldAndAllowedValues) {
  auto e = ErrorOf("optimizer: {name: lamb}");
  EXPECT_NE(e.find("optimizer.name"), std::string::npos) << e;
  EXPECT_NE(e.find("adam|adamw|sgd|rmsproptf"), std::string::npos) << e;
  EXPECT_NE(e.find("lamb"), std::string::npos) << e;

  e = ErrorOf("optimizer: {lrr: 0.1}");
  EXPECT_NE(e.find("optimizer.lrr: unknown field"), std::string::npos) << e;
  EXPECT_NE(e.find("lr"), std::string::npos) << e;

  e = ErrorOf("trainer: {}");
  EXPECT_NE(e.find("trainer: unknown section"), std::string::npos) << e;

  e = ErrorOf("data: {batch_size: 0}");
  EXPECT_NE(e.find("data.batch_size"), std::string::npos) << e;
  e = ErrorOf("data: {batch_size: 2.5}");
  EXPECT_NE(e.find("an integer"), std::string::npos) << e;
  e = ErrorOf("ema: {enabled: maybe}");
  EXPECT_NE(e.find("ema.enabled: expected true|false"), std::string::npos) << e;
  e = ErrorOf("", {"augment.normalize=zca"});
  EXPECT_NE(e.find("augment.normalize: expected imagenet|inception|none"), std::string::npos) << e;
  e = ErrorOf("", {"optimizer.lr"});
  EXPECT_NE(e.find("section.field=value"), std::string::npos) << e;
  e = ErrorOf("job: {progressive: {formula: fancy}}");
  EXPECT_NE(e.find("job.progressive.formula: expected paper|official"), std::string::npos) << e;
  e = ErrorOf("augment: {crop_area_min: 0.9, crop_area_max: 0.5}");
  EXPECT_NE(e.find("augment.crop_area_min"), std::string::npos) << e;
}

TEST(Config, ResolvedYamlRoundTrips) {
  auto c = ParseTrainConfig("{}", {"optimizer.name=rmsproptf", "schedule.name=exponential",
                                   "ema.enabled=true", "data.path=/x/y z.h5"});
  ASSERT_TRUE(c.ok());
  const auto yaml = effnet::train::TrainConfigToYaml(*c);
  auto back = ParseTrainConfig(yaml);
  ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << yaml;
  EXPECT_EQ(effnet::train::TrainConfigToYaml(*back), yaml);
  EXPECT_EQ(back->data.path, "/x/y z.h5");
  EXPECT_EQ(back->optimizer.name, "rmsproptf");
}

TEST(Config, EveryPresetParsesAndDocumentsItself) {
  const auto names = effnet::train::PresetNames();
  for (const char* want : {"study-b0", "study-b1", "study-b2", "paper-b0", "paper-b1", "paper-b2",
                           "paper-b3", "paper-s", "cpu-b0", "tiny"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
  }
  for (const auto& n : names) {
    auto text = effnet::train::PresetText(n);
    ASSERT_TRUE(text.ok());
    auto c = ParseTrainConfig(*text);
    EXPECT_TRUE(c.ok()) << n << ": " << c.status().ToString();
  }
  auto study = ParseTrainConfig(effnet::train::PresetText("study-b2").value());
  ASSERT_TRUE(study.ok());
  EXPECT_EQ(study->optimizer.name, "adam");
  EXPECT_EQ(study->data.batch_size, 16);
  EXPECT_EQ(study->job.epochs, 10);
  EXPECT_EQ(study->job.early_stopping.patience, 2);
  EXPECT_EQ(study->job.early_stopping.best_metric, "val_loss");
  EXPECT_EQ(effnet::job::StageForEpoch(study->job.progressive, 0, 10).image_size, 260);
  // The study augmented offline only (effnet-prepare --augment-offline): no online flips on top.
  EXPECT_EQ(study->augment.hflip_prob, 0);
  EXPECT_EQ(study->augment.vflip_prob, 0);
  EXPECT_FALSE(study->augment.rot90);
  // Keras's initialisers and Adam epsilon (Note [conv init], Note [Keras epsilon]).
  EXPECT_EQ(study->model.head_init, effnet::model::HeadInit::kGlorot);
  EXPECT_EQ(study->model.conv_init, effnet::model::ConvInit::kKeras);
  EXPECT_EQ(study->optimizer.eps_form, "keras");
  auto tiny = ParseTrainConfig(effnet::train::PresetText("tiny").value());
  ASSERT_TRUE(tiny.ok());
  EXPECT_EQ(tiny->job.progressive.num_stages, 3);
  EXPECT_LT(tiny->model.extra_width, 1.0);
  auto paper = ParseTrainConfig(effnet::train::PresetText("paper-b0").value());
  ASSERT_TRUE(paper.ok());
  EXPECT_EQ(paper->optimizer.name, "rmsproptf");
  // Official formula: B0 trains at 144, 160, 176, 192 (reference sec 4).
  std::vector<int> sizes;
  for (int s = 0; s < 4; ++s)
    sizes.push_back(effnet::job::StageAt(paper->job.progressive, s).image_size);
  EXPECT_EQ(sizes, (std::vector<int>{144, 160, 176, 192}));
  EXPECT_FALSE(effnet::train::PresetText("nope").ok());
  const auto doc = effnet::train::ConfigDocMarkdown();
  EXPECT_NE(doc.find("`optimizer.name`"), std::string::npos);
  EXPECT_NE(doc.find("adam \\| adamw \\| sgd \\| rmsproptf"), std::string::npos);
}

TEST(Schedule, WarmupCosineExponential) {
  effnet::train::LrSchedule s;
  s.peak_lr = 0.1;
  s.steps_per_epoch = 10;
  s.total_steps = 100;
  s.config.warmup_epochs = 1;
  s.config.warmup_lr_init = 0.0;
  s.config.name = "cosine";
  EXPECT_DOUBLE_EQ(s.At(0), 0.0);
  EXPECT_DOUBLE_EQ(s.At(5), 0.05);
  EXPECT_DOUBLE_EQ(s.At(10), 0.1);
  EXPECT_NEAR(s.At(55), 0.05, 1e-12);  // half-way through the cosine part
  EXPECT_NEAR(s.At(100), 0.0, 1e-12);
  s.config.name = "exponential";
  s.config.decay_rate = 0.97;
  s.config.decay_epochs = 2.4;
  // Staircase counted from step 0 (official): epochs [0, 2.4) keep the peak after warmup.
  EXPECT_DOUBLE_EQ(s.At(23), 0.1);
  EXPECT_DOUBLE_EQ(s.At(24), 0.1 * 0.97);
  EXPECT_NEAR(s.At(48), 0.1 * 0.97 * 0.97, 1e-15);
  s.config.name = "constant";
  EXPECT_DOUBLE_EQ(s.At(99), 0.1);
}

// Note [legacy spellings]: runtime.bf16 was a bool; configs inside older checkpoints still say so.
TEST(Config, Bf16ReadsItsOldBooleanSpelling) {
  EXPECT_EQ(ParseTrainConfig("runtime: {bf16: true}")->runtime.bf16, "auto");
  EXPECT_EQ(ParseTrainConfig("runtime: {bf16: false}")->runtime.bf16, "off");
  EXPECT_EQ(ParseTrainConfig("{}")->runtime.bf16, "auto");
  EXPECT_EQ(ParseTrainConfig("runtime: {channels_last: true}")->runtime.channels_last, "on");
  EXPECT_EQ(ParseTrainConfig("runtime: {channels_last: false}")->runtime.channels_last, "off");
  auto bad = ParseTrainConfig("runtime: {bf16: maybe}");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().ToString().find("auto|on|off"), std::string::npos);
}

// Note [global batch]: the batch is split over ranks; a batch the world size does not divide is
// refused naming the key, the world size and the nearest valid batches.
TEST(Config, GlobalBatchSplitsOverRanks) {
  effnet::train::DataSection d;
  d.batch_size = 16;
  EXPECT_EQ(effnet::train::PerRankBatch(d, 1).value(), 16);
  EXPECT_EQ(effnet::train::PerRankBatch(d, 4).value(), 4);
  auto bad = effnet::train::PerRankBatch(d, 3);
  ASSERT_FALSE(bad.ok());
  const std::string e = bad.status().ToString();
  EXPECT_NE(e.find("data.batch_size is the global batch"), std::string::npos) << e;
  EXPECT_NE(e.find("world size 3"), std::string::npos) << e;
  EXPECT_NE(e.find("15 or 18"), std::string::npos) << e;
  d.batch_size = 2;
  EXPECT_NE(effnet::train::PerRankBatch(d, 4).status().ToString().find("(4)"), std::string::npos);
}

// The paper presets: lr 0.016 x global batch / 256, and 0.97 every 2.4 of 350 epochs compressed to
// the run's length, so a 40-epoch run ends near the official run's 1 % of the peak, not at 61 %.
TEST(Schedule, PaperLrScalesWithGlobalBatchAndDecayWithRunLength) {
  auto paper = ParseTrainConfig(effnet::train::PresetText("paper-b0").value());
  ASSERT_TRUE(paper.ok()) << paper.status().ToString();
  EXPECT_EQ(paper->data.batch_size, 32);
  EXPECT_NEAR(effnet::train::PeakLr(*paper), 0.016 * 32 / 256, 1e-15);
  auto big =
      ParseTrainConfig(effnet::train::PresetText("paper-b0").value(), {"data.batch_size=512"});
  EXPECT_NEAR(effnet::train::PeakLr(*big), 0.032, 1e-15);
  EXPECT_EQ(paper->job.epochs, 40);
  EXPECT_NEAR(effnet::train::DecayEpochs(*paper), 2.4 * 40 / 350, 1e-12);
  const int64_t steps = 50;
  const auto s = effnet::train::MakeLrSchedule(*paper, steps);
  const double end = s.At(s.total_steps - 1) / s.peak_lr;
  const double official = std::pow(0.97, std::floor(349.99 / 2.4));  // 0.97^145, 1.2 %
  EXPECT_NEAR(end, official, 0.002) << "end of the run at " << end << " of the peak";
  // Without compression the same 40 epochs end at 0.97^16 = 61 % of the peak.
  auto plain = *paper;
  plain.schedule.decay_reference_epochs = 0;
  const auto p = effnet::train::MakeLrSchedule(plain, steps);
  EXPECT_NEAR(p.At(p.total_steps - 1) / p.peak_lr, std::pow(0.97, 16), 1e-9);
  // The fine-tuning presets scale too: 0.0005 x 32 / 256.
  auto ft = ParseTrainConfig(effnet::train::PresetText("finetune-b0").value());
  EXPECT_NEAR(effnet::train::PeakLr(*ft), 6.25e-5, 1e-15);
  // Learning rates stay what a plain config says when no base batch is given.
  auto study = ParseTrainConfig(effnet::train::PresetText("study-b0").value());
  EXPECT_DOUBLE_EQ(effnet::train::PeakLr(*study), 1e-3);
}

TEST(LocalJobControl, PlansStagesAndRestoresDecisions) {
  effnet::job::JobConfig j;
  j.epochs = 6;
  j.progressive.num_stages = 3;
  j.progressive.min_image_size = 32;
  j.progressive.max_image_size = 64;
  j.early_stopping.patience = 2;
  std::vector<int64_t> train(11);
  for (int i = 0; i < 11; ++i) train[i] = 100 + i;
  effnet::train::LocalJobControl r0(j, train, 0, 2, ""), r1(j, train, 1, 2, "");
  auto p0 = r0.PlanEpoch(4), p1 = r1.PlanEpoch(4);
  ASSERT_TRUE(p0.ok() && p1.ok());
  EXPECT_EQ(p0->stage.image_size, 64);
  EXPECT_EQ(r0.PlanEpoch(0)->stage.image_size, 32);
  EXPECT_EQ(r0.PlanEpoch(2)->stage.image_size, 48);
  EXPECT_EQ(p0->sample_indices.size() + p1->sample_indices.size(), 11u);
  EXPECT_TRUE(r0.PlanEpoch(6)->stop);

  effnet::job::RankMetrics m;
  m.epoch = 0;
  m.val_loss = 1.0;
  m.val_accuracy = 0.5;
  EXPECT_TRUE(r0.EndEpoch(m)->is_best);
  m.epoch = 1;
  m.val_loss = 1.5;
  m.val_accuracy = 0.4;
  EXPECT_FALSE(r0.EndEpoch(m)->stop);
  const auto saved = r0.SaveDecisionState();
  // A restarted control plane continues from the saved state: one more bad epoch stops it.
  effnet::train::LocalJobControl again(j, train, 0, 2, "");
  ASSERT_TRUE(again.RestoreDecisionState(saved).ok());
  m.epoch = 2;
  m.val_loss = 1.2;
  auto d = again.EndEpoch(m);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->stop);
  EXPECT_EQ(d->best_epoch, 0);
  EXPECT_NE(d->reason.find("early stop"), std::string::npos);
  EXPECT_FALSE(again.RestoreDecisionState("{not json").ok());
}

}  // namespace
