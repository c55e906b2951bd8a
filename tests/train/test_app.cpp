// effnet-train / effnet-evaluate end to end on generated data:
//  (1) the `tiny` preset (reduced EfficientNetV2, 3 progressive stages) reaches >= 90 % test
//      accuracy (chance 1/7) within 3 minutes, and writes every report of a run directory;
//  (2) a run killed with SIGKILL after an epoch's checkpoint and resumed ends with a checkpoint
//      (model, EMA, optimizer and generator state) identical to an uninterrupted run's;
//  (3) a class-count mismatch and a bad config value are refused with the field named.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <torch/serialize.h>
#include <torch/serialize/archive.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "tests/app_test_util.h"
#include "tests/train/synthetic_data.h"
#include "worker/formats/safetensors.h"

namespace {

namespace fs = std::filesystem;
using effnet::testing::Bin;
using effnet::testing::RunCmd;
using effnet::testing::Slurp;
using Clock = std::chrono::steady_clock;

class AppTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("effnet_app_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    effnet::testing::RemoveTree(dir_.string());
    fs::create_directories(dir_ / "elsewhere");
  }
  void TearDown() override {
    if (!HasFailure()) effnet::testing::RemoveTree(dir_.string());
  }
  std::string Data(const effnet::testing::SyntheticSpec& s) {
    const std::string p = (dir_ / "data.h5").string();
    auto st = effnet::testing::WriteSyntheticStore(p, s);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return p;
  }
  fs::path dir_;
};

TEST_F(AppTest, TinyPresetReaches90PercentWithReports) {
  // effnet-synth data (shapes and textures, not separable by mean colour), prepared by
  // effnet-prepare: the same path a user takes.
  const std::string synth = (dir_ / "synth").string(), data = (dir_ / "synth.h5").string();
  ASSERT_EQ(RunCmd(Bin("effnet-synth") + " --out " + synth + " --per-class 400 --size 64 --seed 1",
                   dir_.string(), (dir_ / "synth.log").string()),
            0)
      << Slurp((dir_ / "synth.log").string());
  ASSERT_EQ(RunCmd(Bin("effnet-prepare") + " --csv " + synth + "/synth.csv --images " + synth +
                       "/images --out " + data + " --size 64",
                   dir_.string(), (dir_ / "prepare.log").string()),
            0)
      << Slurp((dir_ / "prepare.log").string());
  const std::string run = (dir_ / "run").string();
  const auto t0 = Clock::now();
  // From another working directory: the preset is embedded in the binary.
  const int rc = RunCmd(Bin("effnet-train") + " --preset tiny --data " + data + " --out " + run +
                            " --set output.progress=false",
                        (dir_ / "elsewhere").string(), (dir_ / "train.log").string());
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  ASSERT_EQ(rc, 0) << Slurp((dir_ / "train.log").string());
  auto summary = nlohmann::json::parse(Slurp(run + "/summary.json"));
  const double acc = summary.at("test_accuracy").get<double>();
  std::cout << "[tiny preset] test accuracy " << acc << ", fit " << summary.at("fit_time_s")
            << " s, process " << seconds << " s\n";
  // Speed is measured by bench/, not asserted here (a loaded machine would fail it).
  EXPECT_GE(acc, 0.90) << Slurp((dir_ / "train.log").string());
  EXPECT_EQ(summary.at("world_size"), 1);
  EXPECT_EQ(summary.at("batch_size"), 8);
  EXPECT_EQ(summary.at("variant"), "b0");
  EXPECT_EQ(summary.at("device"), "cpu");
  for (const char* f : {"config.yaml", "metrics.jsonl", "results.md", "confusion_matrix.csv",
                        "confusion_matrix.svg", "learning_curves.svg", "checkpoints/best/meta.json",
                        "checkpoints/LATEST"}) {
    EXPECT_TRUE(fs::exists(run + "/" + f)) << f;
  }
  bool events = false;
  for (auto& e : fs::directory_iterator(run)) {
    events |= e.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  }
  EXPECT_TRUE(events);
  // metrics.jsonl: step and epoch records; the 3 progressive stages used 3 image sizes.
  std::ifstream m(run + "/metrics.jsonl");
  std::set<int> sizes;
  int steps = 0, epochs = 0;
  for (std::string line; std::getline(m, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.at("kind") == "step") {
      ++steps;
      EXPECT_TRUE(j.contains("lr") && j.contains("img_per_s") && j.contains("loss"));
    } else if (j.at("kind") == "epoch") {
      ++epochs;
      sizes.insert(j.at("image_size").get<int>());
      EXPECT_TRUE(j.contains("val_accuracy") && j.contains("train_loss"));
    }
  }
  EXPECT_GT(steps, 0);
  EXPECT_GE(epochs, 3);
  EXPECT_EQ(sizes.size(), 3u);
  EXPECT_NE(Slurp(run + "/results.md").find("Accuracy"), std::string::npos);
  // effnet-evaluate on the best checkpoint reproduces the reported test accuracy.
  const std::string eval_log = (dir_ / "eval.json").string();
  const std::string eval_out = (dir_ / "eval" / "nested").string();  // --out creates it
  ASSERT_EQ(RunCmd(Bin("effnet-evaluate") + " " + run + "/checkpoints/best --data " + data +
                       " --split test --out " + eval_out,
                   dir_.string(), eval_log),
            0)
      << Slurp(eval_log);
  const auto text = Slurp(eval_log);
  auto j = nlohmann::json::parse(text.substr(text.find('{')));
  EXPECT_DOUBLE_EQ(j.at("accuracy").get<double>(), acc);
  EXPECT_TRUE(fs::exists(eval_out + "/eval_test.json"));
  EXPECT_TRUE(fs::exists(eval_out + "/confusion_matrix_test.svg"));
}

// Every tensor and value of an optimizer archive, by path ("state/<param>/square_avg"); the
// parameter ids of the groups (".../params/<i>", each a parameter's address) go into `params`.
void ArchiveEntries(torch::serialize::InputArchive& a, const std::string& prefix,
                    std::vector<std::pair<std::string, torch::Tensor>>* out,
                    std::vector<std::string>* params) {
  for (const auto& k : a.keys()) {
    torch::Tensor t;
    torch::serialize::InputArchive sub;
    c10::IValue v;
    if (a.try_read(k, t) || a.try_read(k, t, /*is_buffer=*/true)) {
      out->emplace_back(prefix + k, t);
    } else if (a.try_read(k, sub)) {
      ArchiveEntries(sub, prefix + k + "/", out, params);
    } else if (a.try_read(k, v)) {
      const std::string path = prefix + k;  // archive keys may hold '/' themselves
      const size_t at = path.rfind("/params/");
      if (at != std::string::npos && path.find('/', at + 8) == std::string::npos) {
        if (v.isInt()) params->push_back(std::to_string(v.toInt()));
        if (v.isString()) params->push_back(v.toStringRef());
      }
      std::ostringstream ss;
      ss << v;
      out->emplace_back(prefix + k + "=" + ss.str(), torch::zeros({1}));
    }
  }
}

// Every tensor of a checkpoint directory (worker/formats/checkpoint.h): the model and EMA
// weights, the optimizer state and the CPU generator state, sorted by name.
std::vector<std::pair<std::string, torch::Tensor>> CheckpointTensors(const std::string& ckpt) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const char* f : {"model.safetensors", "ema.safetensors"}) {
    auto sd = effnet::formats::ReadSafetensors(ckpt + "/" + f);
    EXPECT_TRUE(sd.ok()) << sd.status().ToString();
    if (!sd.ok()) continue;
    for (const auto& item : *sd) out.emplace_back(std::string(f) + ":" + item.key(), item.value());
  }
  torch::serialize::InputArchive a;
  a.load_from(ckpt + "/train_state.pt");
  std::vector<std::string> params;
  ArchiveEntries(a, "train_state.pt:", &out, &params);
  // LibTorch keys the optimizer state by each parameter's address in the writing process; name
  // them by their position in the parameter groups instead.
  for (auto& [name, t] : out) {
    for (size_t i = 0; i < params.size(); ++i) {
      for (size_t at = name.find(params[i]); at != std::string::npos;
           at = name.find(params[i], at)) {
        name.replace(at, params[i].size(), "param" + std::to_string(i));
      }
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
  return out;
}

TEST_F(AppTest, KilledRunResumesToIdenticalParameters) {
  effnet::testing::SyntheticSpec s;
  s.classes = 3;
  s.train_per_class = 12;
  s.val_per_class = 3;
  s.test_per_class = 2;
  s.image_size = 32;
  const std::string data = Data(s);
  const std::string common =
      " --preset tiny --data " + data +
      " --set job.epochs=4 --set job.progressive.min_image_size=32"
      " --set job.progressive.max_image_size=40 --set data.eval_image_size=32"
      " --set data.batch_size=8 --set output.progress=false --set runtime.threads=1"
      " --set ema.enabled=true --set optimizer.name=rmsproptf --set optimizer.lr=0.005"
      " --set job.progressive.max_randaug=6";
  const std::string full = (dir_ / "full").string(), killed = (dir_ / "killed").string();
  ASSERT_EQ(RunCmd(Bin("effnet-train") + common + " --out " + full, dir_.string(),
                   (dir_ / "full.log").string()),
            0)
      << Slurp((dir_ / "full.log").string());

  // Start the same run, SIGKILL it as soon as epoch 0's checkpoint is committed.
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string cmd = "exec " + Bin("effnet-train") + common + " --out " + killed + " > '" +
                            (dir_ / "killed.log").string() + "' 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  bool committed = false;
  while (Clock::now() < deadline) {
    if (fs::exists(killed + "/checkpoints/LATEST")) {
      committed = true;
      break;
    }
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) break;  // ended before a commit: test fails below
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(committed) << Slurp((dir_ / "killed.log").string());
  EXPECT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed";
  EXPECT_FALSE(fs::exists(killed + "/summary.json"));
  ASSERT_EQ(RunCmd(Bin("effnet-train") + common + " --out " + killed, dir_.string(),
                   (dir_ / "resume.log").string()),
            0)
      << Slurp((dir_ / "resume.log").string());
  EXPECT_NE(Slurp((dir_ / "resume.log").string()).find("resumed from"), std::string::npos);

  auto a = CheckpointTensors(full + "/checkpoints/epoch-0003");
  auto b = CheckpointTensors(killed + "/checkpoints/epoch-0003");
  ASSERT_EQ(a.size(), b.size());
  ASSERT_GT(a.size(), 10u);
  // Not vacuous: EMA weights, optimizer state (by parameter position) and the generator are in.
  for (const std::string part : {"ema.safetensors:", "train_state.pt:optimizer/state/param",
                                 "train_state.pt:rng/torch_cpu"}) {
    EXPECT_TRUE(std::any_of(a.begin(), a.end(), [&](const auto& e) {
      return e.first.rfind(part, 0) == 0;
    })) << part;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].first, b[i].first);
    EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;
  }
  auto sa = nlohmann::json::parse(Slurp(full + "/summary.json"));
  auto sb = nlohmann::json::parse(Slurp(killed + "/summary.json"));
  EXPECT_EQ(sa.at("test_accuracy"), sb.at("test_accuracy"));
}

TEST_F(AppTest, RefusesClassMismatchAndBadConfig) {
  effnet::testing::SyntheticSpec s;
  s.train_per_class = 2;
  s.val_per_class = 1;
  s.test_per_class = 1;
  s.image_size = 16;
  const std::string data = Data(s), log = (dir_ / "log").string();
  EXPECT_NE(RunCmd(Bin("effnet-train") + " --preset tiny --data " + data + " --out " +
                       (dir_ / "r1").string() + " --set model.num_classes=5",
                   dir_.string(), log),
            0);
  auto text = Slurp(log);
  EXPECT_NE(text.find("model.num_classes is 5"), std::string::npos) << text;
  EXPECT_NE(text.find("7 classes"), std::string::npos) << text;
  EXPECT_NE(RunCmd(Bin("effnet-train") + " --preset tiny --data " + data + " --out " +
                       (dir_ / "r2").string() + " --set schedule.name=linear",
                   dir_.string(), log),
            0);
  text = Slurp(log);
  EXPECT_NE(text.find("schedule.name: expected constant|cosine|exponential"), std::string::npos)
      << text;
  EXPECT_NE(RunCmd(Bin("effnet-train") + " --preset nope --data " + data + " --out x",
                   dir_.string(), log),
            0);
  EXPECT_NE(Slurp(log).find("tiny"), std::string::npos);
}

// Note [short splits] (storage/splits.h): no validation images is refused before training; no
// test images gives null test metrics and no confusion matrix, never "accuracy 0 on 0 images".
TEST_F(AppTest, EmptySplitsAreNeverReportedAsResults) {
  effnet::testing::SyntheticSpec s;
  s.classes = 2;
  s.train_per_class = 4;
  s.val_per_class = 2;
  s.test_per_class = 0;
  s.image_size = 32;
  const std::string data = Data(s), run = (dir_ / "run").string(), log = (dir_ / "log").string();
  const std::string common =
      " --preset tiny --set job.epochs=1 --set job.progressive.num_stages=1"
      " --set job.progressive.min_image_size=32 --set job.progressive.max_image_size=32"
      " --set data.eval_image_size=32 --set output.progress=false --set runtime.threads=1";
  ASSERT_EQ(RunCmd(Bin("effnet-train") + common + " --data " + data + " --out " + run,
                   dir_.string(), log),
            0)
      << Slurp(log);
  auto text = Slurp(log);
  EXPECT_NE(text.find("no test images in " + data + ": test metrics not computed"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("test accuracy"), std::string::npos) << text;
  auto summary = nlohmann::json::parse(Slurp(run + "/summary.json"));
  EXPECT_TRUE(summary.at("test_accuracy").is_null()) << summary.dump();
  EXPECT_TRUE(summary.at("test_loss").is_null()) << summary.dump();
  EXPECT_EQ(summary.at("test_count"), 0);
  EXPECT_FALSE(fs::exists(run + "/confusion_matrix.csv"));
  const auto results = Slurp(run + "/results.md");
  EXPECT_NE(results.find("no test images: test metrics not computed"), std::string::npos)
      << results;
  EXPECT_EQ(results.find("0.0000"), std::string::npos) << results;
  // effnet-results reads the null back; effnet-evaluate says so and writes null.
  ASSERT_EQ(RunCmd(Bin("effnet-results") + " " + run + " --out " + (dir_ / "all.md").string(),
                   dir_.string(), log),
            0)
      << Slurp(log);
  const std::string eval_out = (dir_ / "eval").string();
  ASSERT_EQ(RunCmd(Bin("effnet-evaluate") + " " + run + "/checkpoints/best --data " + data +
                       " --split test --out " + eval_out,
                   dir_.string(), log),
            0)
      << Slurp(log);
  text = Slurp(log);
  EXPECT_NE(text.find("no test images in " + data + ": test metrics not computed"),
            std::string::npos)
      << text;
  auto ev = nlohmann::json::parse(Slurp(eval_out + "/eval_test.json"));
  EXPECT_TRUE(ev.at("accuracy").is_null());
  EXPECT_EQ(ev.at("count"), 0);
  EXPECT_FALSE(fs::exists(eval_out + "/confusion_matrix_test.csv"));

  // No validation images: refused before any epoch, with the reason and the fix.
  s.val_per_class = 0;
  s.test_per_class = 2;
  const std::string no_val = (dir_ / "no_val.h5").string();
  ASSERT_TRUE(effnet::testing::WriteSyntheticStore(no_val, s).ok());
  EXPECT_NE(RunCmd(Bin("effnet-train") + common + " --data " + no_val + " --out " +
                       (dir_ / "run2").string(),
                   dir_.string(), log),
            0);
  text = Slurp(log);
  EXPECT_NE(text.find("has no validation images: validation loss, early stopping and the best "
                      "checkpoint need them"),
            std::string::npos)
      << text;
  EXPECT_FALSE(fs::exists(dir_ / "run2" / "checkpoints" / "LATEST"));
}

// Note [resume fallback] and Note [same run] (worker/train/trainer.cpp).
TEST_F(AppTest, ResumeFallsBackFromAnUnreadableCheckpointAndRefusesAnotherVariant) {
  effnet::testing::SyntheticSpec s;
  s.classes = 2;
  s.train_per_class = 4;
  s.val_per_class = 2;
  s.test_per_class = 2;
  s.image_size = 32;
  const std::string data = Data(s), run = (dir_ / "run").string(), log = (dir_ / "log").string();
  const std::string common =
      " --preset tiny --data " + data + " --out " + run +
      " --set job.epochs=3 --set job.progressive.num_stages=1"
      " --set job.progressive.min_image_size=32 --set job.progressive.max_image_size=32"
      " --set data.eval_image_size=32 --set output.progress=false --set runtime.threads=1"
      " --set checkpoint.keep_last=3 --set job.early_stopping.patience=0";
  ASSERT_EQ(
      RunCmd(Bin("effnet-train") + common + " --set output.stop_after_epoch=1", dir_.string(), log),
      0)
      << Slurp(log);
  const std::string ckpts = run + "/checkpoints";
  ASSERT_TRUE(fs::exists(ckpts + "/epoch-0001/model.safetensors"));
  // Another variant is refused by name before any weights are read.
  EXPECT_NE(RunCmd(Bin("effnet-train") + common + " --set model.variant=b1", dir_.string(), log),
            0);
  auto text = Slurp(log);
  EXPECT_NE(text.find("the run was trained as variant 'b0' with 2 classes, this config asks for "
                      "variant 'b1' with 2 classes"),
            std::string::npos)
      << text;
  // Another class count (a store with 3 classes) is refused the same way.
  s.classes = 3;
  const std::string three = (dir_ / "three.h5").string();
  ASSERT_TRUE(effnet::testing::WriteSyntheticStore(three, s).ok());
  std::string other = common;
  other.replace(other.find(data), data.size(), three);
  EXPECT_NE(RunCmd(Bin("effnet-train") + other, dir_.string(), log), 0);
  text = Slurp(log);
  EXPECT_NE(text.find("the run was trained as variant 'b0' with 2 classes, this config asks for "
                      "variant 'b0' with 3 classes"),
            std::string::npos)
      << text;
  // best/ as a byte copy of epoch-0001 (as where hard links are refused) survives the damage
  // below, but must not outlive the fall-back (Note [best after a roll-back]).
  effnet::testing::RemoveTree(ckpts + "/best");
  fs::create_directory(ckpts + "/best");
  for (const auto& e : fs::directory_iterator(ckpts + "/epoch-0001")) {
    std::ofstream(ckpts + "/best/" + e.path().filename().string(), std::ios::binary)
        << Slurp(e.path().string());
  }
  // Flip one byte of the committed checkpoint's weights: the resume falls back to epoch-0000.
  {
    std::fstream f(ckpts + "/epoch-0001/model.safetensors",
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-10, std::ios::end);
    char c = 0;
    f.get(c);
    f.seekp(-10, std::ios::end);
    f.put(static_cast<char>(c ^ 0x40));
  }
  ASSERT_EQ(RunCmd(Bin("effnet-train") + common, dir_.string(), log), 0) << Slurp(log);
  text = Slurp(log);
  EXPECT_NE(text.find("checkpoint " + ckpts + "/epoch-0001 is unreadable"), std::string::npos)
      << text;
  EXPECT_NE(text.find("SHA-256 mismatch"), std::string::npos) << text;
  EXPECT_NE(text.find("resuming from the newest valid one, " + ckpts + "/epoch-0000"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("resumed from " + ckpts + "/epoch-0000: next epoch 2"), std::string::npos)
      << text;
  EXPECT_NE(text.find(ckpts + "/best holds epoch 2, after the resumed epoch 1: removed"),
            std::string::npos)
      << text;
  auto summary = nlohmann::json::parse(Slurp(run + "/summary.json"));
  EXPECT_FALSE(summary.at("test_accuracy").is_null());
  // best/ was written again by this attempt, for the epoch it reports as best.
  EXPECT_EQ(nlohmann::json::parse(Slurp(ckpts + "/best/meta.json")).at("epoch"),
            summary.at("best_epoch"));
  // Epochs 1 and 2 were trained again (the second time for epoch 1).
  EXPECT_TRUE(fs::exists(ckpts + "/epoch-0002/meta.json"));
  EXPECT_NE(text.find("epoch 2/3"), std::string::npos) << text;
}

// Note [finished runs] (worker/apps/app_common.cpp): a finished run is never rewritten.
TEST_F(AppTest, RerunningAFinishedRunLeavesItsResultsUntouched) {
  effnet::testing::SyntheticSpec s;
  s.classes = 2;
  s.train_per_class = 4;
  s.val_per_class = 2;
  s.test_per_class = 2;
  s.image_size = 32;
  const std::string data = Data(s), run = (dir_ / "run").string(), log = (dir_ / "log").string();
  const std::string common =
      " --preset tiny --data " + data + " --out " + run +
      " --set job.progressive.num_stages=1"
      " --set job.progressive.min_image_size=32 --set job.progressive.max_image_size=32"
      " --set data.eval_image_size=32 --set output.progress=false --set runtime.threads=1";
  ASSERT_EQ(RunCmd(Bin("effnet-train") + common + " --set job.epochs=1", dir_.string(), log), 0)
      << Slurp(log);
  // Every file of the run folder, with its content (nftw: Note [no fs::remove_all]).
  auto snapshot = [&] {
    static std::map<std::string, std::string>* files = nullptr;
    std::map<std::string, std::string> out;
    files = &out;
    nftw(
        run.c_str(),
        [](const char* p, const struct stat*, int type, struct FTW*) {
          if (type == FTW_F) (*files)[p] = Slurp(p);
          return 0;
        },
        16, FTW_PHYS);
    files = nullptr;
    return out;
  };
  const auto before = snapshot();
  ASSERT_TRUE(before.count(run + "/summary.json"));
  // The same run again (a runtime setting may differ): finished, exit 0, nothing written.
  ASSERT_EQ(RunCmd(Bin("effnet-train") + common + " --set job.epochs=1 --set runtime.threads=2",
                   dir_.string(), log),
            0)
      << Slurp(log);
  auto text = Slurp(log);
  EXPECT_NE(
      text.find(run + " is a finished run: nothing to train; results in " + run + "/results.md"),
      std::string::npos)
      << text;
  EXPECT_EQ(snapshot(), before);
  // More epochs: refused, naming the field; nothing written either.
  EXPECT_NE(RunCmd(Bin("effnet-train") + common + " --set job.epochs=2", dir_.string(), log), 0);
  text = Slurp(log);
  EXPECT_NE(text.find(run + " is a finished run and this config differs from its own (job.epochs: "
                            "1 -> 2)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("train with another --out"), std::string::npos) << text;
  EXPECT_EQ(snapshot(), before);
}

TEST_F(AppTest, WorkerUnderMpirunWithTwoRanks) {
  const char* mpiexec = std::getenv("EFFNET_MPIEXEC");
  if (!mpiexec || !fs::exists(Bin("effnet-worker"))) GTEST_SKIP() << "no mpirun / effnet-worker";
  effnet::testing::SyntheticSpec s;
  s.train_per_class = 6;
  s.val_per_class = 2;
  s.test_per_class = 2;
  s.image_size = 32;
  const std::string data = Data(s), run = (dir_ / "w").string(), log = (dir_ / "w.log").string();
  ASSERT_EQ(RunCmd(std::string(mpiexec) + " --oversubscribe -np 2 " + Bin("effnet-worker") +
                       " --preset tiny --data " + data + " --out " + run +
                       " --set job.epochs=2 --set job.progressive.min_image_size=32"
                       " --set job.progressive.max_image_size=32"
                       " --set data.eval_image_size=32 --set output.progress=false",
                   dir_.string(), log),
            0)
      << Slurp(log);
  auto summary = nlohmann::json::parse(Slurp(run + "/summary.json"));
  EXPECT_EQ(summary.at("world_size"), 2);
  EXPECT_EQ(summary.at("batch_size"), 8);  // global: 4 per rank (Note [global batch])
  // One terminal (Note [one terminal]): rank 1's info lines are in its own log file, not in
  // mpirun's output; both ranks logged the same reduced epoch metrics (Note [same decisions on
  // every rank]).
  EXPECT_EQ(Slurp(log).find("[rank 1]"), std::string::npos) << Slurp(log);
  EXPECT_NE(Slurp(log).find("[rank 0] epoch 1/2"), std::string::npos) << Slurp(log);
  const auto text = Slurp(run + "/logs/rank-0.log") + Slurp(run + "/logs/rank-1.log");
  for (const char* epoch : {"epoch 1/2", "epoch 2/2"}) {
    std::vector<std::string> lines;
    std::stringstream ss(text);
    for (std::string l; std::getline(ss, l);) {
      const auto at = l.find(std::string("] ") + epoch + " size");
      if (at != std::string::npos) lines.push_back(l.substr(at, l.find(" img/s") - at));
    }
    ASSERT_EQ(lines.size(), 2u) << text;
    // Compare up to the throughput field, which is per rank.
    auto cut = [](const std::string& l) { return l.substr(0, l.rfind('|')); };
    EXPECT_EQ(cut(lines[0]), cut(lines[1]));
  }
}

}  // namespace
