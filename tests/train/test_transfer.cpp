// Transfer learning and using a trained model, end to end on generated data:
//  (1) effnet-export writes timm-keyed weights that timm loads strictly (tests/formats/
//      check_export.py); a run started from them with another class count gets the backbone
//      unchanged and a new head, keeps a frozen backbone (weights and BN statistics) bit-identical
//      through epoch 0 and trains it after model.unfreeze_epoch;
//  (2) unfreezing with more than one rank is refused;
//  (3) effnet-evaluate matches classes by name: a store with the classes in another order gives
//      the same predictions, one with unknown names is refused naming them;
//  (4) effnet-predict on the photos, on the store and from an exported weights file gives the
//      class and probability effnet-evaluate gives for every test image.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "storage/csv.h"
#include "tests/app_test_util.h"
#include "tests/train/synthetic_data.h"
#include "worker/formats/safetensors.h"

namespace {

namespace fs = std::filesystem;
using effnet::testing::Bin;
using effnet::testing::RunCmd;
using effnet::testing::Slurp;

// A 1-stage tiny run at 32 px: seconds on one core.
const char* kQuick =
    " --preset tiny --set job.progressive.num_stages=1 --set job.progressive.min_image_size=32"
    " --set job.progressive.max_image_size=32 --set data.eval_image_size=32"
    " --set output.progress=false --set output.tensorboard=false --set data.batch_size=8";

class TransferTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("effnet_transfer_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    effnet::testing::RemoveTree(dir_.string());
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) effnet::testing::RemoveTree(dir_.string());
  }
  std::string Data(const std::string& name, effnet::testing::SyntheticSpec s) {
    const std::string p = (dir_ / name).string();
    auto st = effnet::testing::WriteSyntheticStore(p, s);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return p;
  }
  // Runs `cmd`; on failure the assertion shows its log.
  void Ok(const std::string& cmd, const std::string& name) {
    const std::string log = (dir_ / (name + ".log")).string();
    ASSERT_EQ(RunCmd(cmd, dir_.string(), log), 0) << cmd << "\n" << Slurp(log);
  }
  fs::path dir_;
};

effnet::formats::StateDict Read(const std::string& path) {
  auto r = effnet::formats::ReadSafetensors(path);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : effnet::formats::StateDict{};
}

effnet::testing::SyntheticSpec Small(int classes) {
  effnet::testing::SyntheticSpec s;
  s.classes = classes;
  s.train_per_class = 6;
  s.val_per_class = 2;
  s.test_per_class = 3;
  s.image_size = 32;
  return s;
}

TEST_F(TransferTest, ExportLoadsInTimmAndPretrainedRunFreezesThenUnfreezes) {
  const std::string d3 = Data("d3.h5", Small(3)), d5 = Data("d5.h5", Small(5));
  const std::string src = (dir_ / "src").string(), ft = (dir_ / "ft").string();
  Ok(Bin("effnet-train") + kQuick + " --set job.epochs=1 --data " + d3 + " --out " + src, "src");
  const std::string w = (dir_ / "w.safetensors").string(), pt = (dir_ / "w.pt").string();
  Ok(Bin("effnet-export") + " " + src + "/checkpoints/best --format safetensors --out " + w,
     "export");
  Ok(Bin("effnet-export") + " " + src + "/checkpoints/best --format pt --out " + pt, "export_pt");
  auto side = nlohmann::json::parse(Slurp(w + ".json"));
  EXPECT_EQ(side.at("class_names"), nlohmann::json({"class_0", "class_1", "class_2"}));
  EXPECT_EQ(side.at("image_size"), 32);
  EXPECT_EQ(side.at("timm_model"), "tf_efficientnetv2_b0");
  EXPECT_EQ(side.at("normalization").at("name"), "imagenet");
  Ok(std::string(EFFNET_PYTHON) + " " + EFFNET_SOURCE_DIR_TESTS + "/formats/check_export.py " + w +
         " " + pt,
     "timm");

  // 5 classes from 3-class weights: new head; backbone frozen in epoch 0, trained from epoch 1.
  Ok(Bin("effnet-train") + kQuick + " --set job.epochs=2 --data " + d5 + " --pretrained " + w +
         " --set model.freeze=backbone --set model.unfreeze_epoch=1 --out " + ft,
     "ft");
  const std::string log = Slurp((dir_ / "ft.log").string());
  EXPECT_NE(log.find("classifier re-initialised (glorot) for 5 classes"), std::string::npos)
      << log;
  EXPECT_NE(log.find("model unfrozen"), std::string::npos) << log;
  const auto pre = Read(w);
  const auto e0 = Read(ft + "/checkpoints/epoch-0000/model.safetensors");
  const auto e1 = Read(ft + "/checkpoints/epoch-0001/model.safetensors");
  ASSERT_EQ(pre.size(), e0.size());
  for (const auto& item : pre) {
    const at::Tensor* a = e0.find(item.key());
    ASSERT_NE(a, nullptr) << item.key();
    if (item.key().rfind("classifier.", 0) == 0) continue;
    EXPECT_TRUE(a->equal(item.value())) << "frozen in epoch 0 but changed: " << item.key();
  }
  EXPECT_EQ(e0.find("classifier.weight")->size(0), 5);
  EXPECT_FALSE(e0.find("classifier.weight")->equal(*e1.find("classifier.weight")));
  EXPECT_FALSE(pre.find("conv_stem.weight")->equal(*e1.find("conv_stem.weight")));
  EXPECT_FALSE(pre.find("bn2.running_mean")->equal(*e1.find("bn2.running_mean")));

  // Resuming does not load the pretrained file again (it would undo the training): a run stopped
  // after epoch 0, then resumed.
  const std::string ft2 = (dir_ / "ft2").string();
  const std::string args = kQuick + std::string(" --set job.epochs=2 --data ") + d5 +
                           " --pretrained " + w +
                           " --set model.freeze=backbone --set model.unfreeze_epoch=1 --out " + ft2;
  Ok(Bin("effnet-train") + args + " --set output.stop_after_epoch=0", "ft2");
  Ok(Bin("effnet-train") + args, "ft_again");
  EXPECT_NE(Slurp((dir_ / "ft_again.log").string()).find("not loaded: resuming from"),
            std::string::npos);
  // The finished run is not touched again (Note [finished runs] in worker/apps/app_common.cpp).
  Ok(Bin("effnet-train") + kQuick + " --set job.epochs=2 --data " + d5 + " --pretrained " + w +
         " --set model.freeze=backbone --set model.unfreeze_epoch=1 --out " + ft,
     "ft_finished");
  EXPECT_NE(Slurp((dir_ / "ft_finished.log").string()).find("is a finished run: nothing to train"),
            std::string::npos);
}

TEST_F(TransferTest, RefusesUnfreezeWithTwoRanksAndAMismatchedFile) {
  const std::string d3 = Data("d3.h5", Small(3));
  const std::string log = (dir_ / "log").string();
  const char* mpiexec = std::getenv("EFFNET_MPIEXEC");
  if (mpiexec && *mpiexec && fs::exists(Bin("effnet-worker"))) {
    EXPECT_NE(
        RunCmd(std::string(mpiexec) + " --oversubscribe -np 2 " + Bin("effnet-worker") + kQuick +
                   " --set job.epochs=2 --set model.freeze=backbone"
                   " --set model.unfreeze_epoch=1 --data " +
                   d3 + " --out " + (dir_ / "r").string(),
               dir_.string(), log),
        0);
    EXPECT_NE(Slurp(log).find("model.unfreeze_epoch: unfreezing during a run is supported with "
                              "one rank only"),
              std::string::npos)
        << Slurp(log);
  }
  // Not weights at all: the key and the bytes named.
  const std::string junk = (dir_ / "junk.safetensors").string();
  std::ofstream(junk) << "not weights";
  EXPECT_NE(RunCmd(Bin("effnet-train") + kQuick + " --data " + d3 + " --pretrained " + junk +
                       " --out " + (dir_ / "r2").string(),
                   dir_.string(), log),
            0);
  EXPECT_NE(Slurp(log).find("model.pretrained: pretrained weights " + junk), std::string::npos)
      << Slurp(log);
}

TEST_F(TransferTest, EvaluateMatchesClassesByName) {
  auto spec = Small(3);
  const std::string d = Data("d.h5", spec);
  spec.reverse_class_order = true;
  const std::string rev = Data("rev.h5", spec);
  spec.reverse_class_order = false;
  spec.name_prefix = "kind_";
  const std::string other = Data("other.h5", spec);
  const std::string run = (dir_ / "run").string();
  Ok(Bin("effnet-train") + kQuick + " --set job.epochs=1 --data " + d + " --out " + run, "train");
  const std::string ck = run + "/checkpoints/best";
  fs::create_directories(dir_ / "a");
  fs::create_directories(dir_ / "b");
  Ok(Bin("effnet-evaluate") + " " + ck + " --data " + d + " --out " + (dir_ / "a").string(), "a");
  Ok(Bin("effnet-evaluate") + " " + ck + " --data " + rev + " --out " + (dir_ / "b").string(), "b");
  auto a = nlohmann::json::parse(Slurp((dir_ / "a" / "eval_test.json").string()));
  auto b = nlohmann::json::parse(Slurp((dir_ / "b" / "eval_test.json").string()));
  EXPECT_FALSE(a.at("remapped_by_name").get<bool>());
  EXPECT_TRUE(b.at("remapped_by_name").get<bool>());
  EXPECT_EQ(a.at("class_names"), b.at("class_names"));
  EXPECT_EQ(a.at("accuracy"), b.at("accuracy"));
  EXPECT_EQ(a.at("confusion"), b.at("confusion"));
  ASSERT_EQ(a.at("predictions").size(), 9u);
  ASSERT_EQ(a.at("predictions").size(), b.at("predictions").size());
  for (size_t i = 0; i < a.at("predictions").size(); ++i) {
    const auto& pa = a.at("predictions")[i];
    const auto& pb = b.at("predictions")[i];
    EXPECT_EQ(pa.at("label"), pb.at("label")) << i;
    EXPECT_EQ(pa.at("predicted"), pb.at("predicted")) << i;
  }
  const std::string log = (dir_ / "other.log").string();
  EXPECT_NE(RunCmd(Bin("effnet-evaluate") + " " + ck + " --data " + other, dir_.string(), log), 0);
  EXPECT_NE(Slurp(log).find("class name(s) 'kind_0', 'kind_1', 'kind_2' unknown to the model"),
            std::string::npos)
      << Slurp(log);
}

// Rows of a CSV with a header, keyed by the file name of column "image".
std::map<std::string, std::map<std::string, std::string>> ReadPredictions(const std::string& path) {
  auto t = effnet::storage::ReadCsvFile(path);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  std::map<std::string, std::map<std::string, std::string>> out;
  if (!t.ok()) return out;
  for (const auto& r : t->rows) {
    std::map<std::string, std::string> m;
    for (size_t i = 0; i < t->header.size(); ++i) m[t->header[i]] = r[i];
    out[fs::path(m["image"]).filename().string()] = m;
  }
  return out;
}

TEST_F(TransferTest, PredictOnPhotosAgreesWithEvaluateOnTheStore) {
  // Photos (effnet-synth JPEGs) stored at 24 px by effnet-prepare, evaluated at 32 px: predict
  // must decode, resize to 24 and transform exactly as the store and evaluation did.
  const std::string synth = (dir_ / "synth").string(), data = (dir_ / "d.h5").string();
  Ok(Bin("effnet-synth") + " --out " + synth + " --per-class 8 --size 32 --seed 1", "synth");
  Ok(Bin("effnet-prepare") + " --csv " + synth + "/synth.csv --images " + synth + "/images --out " +
         data + " --size 24",
     "prepare");
  const std::string run = (dir_ / "run").string(), ck = run + "/checkpoints/best";
  Ok(Bin("effnet-train") + kQuick + " --set job.epochs=1 --data " + data + " --out " + run,
     "train");
  fs::create_directories(dir_ / "ev");
  Ok(Bin("effnet-evaluate") + " " + ck + " --data " + data + " --out " + (dir_ / "ev").string(),
     "evaluate");
  const std::string photos = (dir_ / "photos.csv").string(), store = (dir_ / "store.csv").string();
  const std::string weights = (dir_ / "weights.csv").string(),
                    w = (dir_ / "w.safetensors").string();
  Ok(Bin("effnet-predict") + " " + ck + " --images " + synth + "/images --top-k 2 --out " + photos,
     "predict_photos");
  Ok(Bin("effnet-predict") + " " + ck + " --data " + data + " --split test --out " + store,
     "predict_store");
  // A weights file with --variant/--classes and the reduced model's multipliers.
  Ok(Bin("effnet-export") + " " + ck + " --out " + w, "export");
  std::ofstream(dir_ / "names.txt") << "a\nb\nc\nd\ne\nf\ng\n";
  Ok(Bin("effnet-predict") + " " + w + " --variant b0 --class-names " +
         (dir_ / "names.txt").string() +
         " --set model.extra_width=0.25 --set model.extra_depth=0.25 --image-size 32"
         " --store-size 24 --csv " +
         synth + "/synth.csv --images " + synth + "/images --out " + weights,
     "predict_weights");
  const auto ev = nlohmann::json::parse(Slurp((dir_ / "ev" / "eval_test.json").string()));
  const auto names = ev.at("class_names").get<std::vector<std::string>>();
  const auto p = ReadPredictions(photos), s = ReadPredictions(store), wp = ReadPredictions(weights);
  ASSERT_EQ(p.size(), 56u);
  ASSERT_EQ(wp.size(), 56u);
  ASSERT_EQ(s.size(), ev.at("predictions").size());
  ASSERT_GT(s.size(), 5u);
  for (const auto& e : ev.at("predictions")) {
    const std::string file = fs::path(e.at("source").get<std::string>()).filename().string();
    ASSERT_TRUE(p.count(file)) << file;
    const double prob = e.at("probability").get<double>();
    EXPECT_EQ(p.at(file).at("class_1"), e.at("predicted")) << file;
    EXPECT_NEAR(std::stod(p.at(file).at("prob_1")), prob, 1e-4) << file;
    EXPECT_EQ(s.at(file).at("class_1"), e.at("predicted")) << file;
    EXPECT_EQ(s.at(file).at("label"), e.at("label")) << file;
    EXPECT_NEAR(std::stod(s.at(file).at("prob_1")), prob, 1e-4) << file;
    const auto k = std::find(names.begin(), names.end(), e.at("predicted").get<std::string>());
    EXPECT_EQ(wp.at(file).at("class_1"),
              std::string(1, static_cast<char>('a' + (k - names.begin()))))
        << file;
    EXPECT_NEAR(std::stod(wp.at(file).at("prob_1")), prob, 1e-4) << file;
  }
  EXPECT_FALSE(p.begin()->second.at("class_2").empty());
}

}  // namespace

// Fine-tuning beats the same budget from scratch (issue: "it must beat the same budget from
// scratch by a clear margin"). Source task: 5 of effnet-synth's shape/texture classes, 200 photos
// each. Target task: all 7 classes, other photos (another seed), 12 train images per class, where
// 8 epochs from scratch stay near chance (1/7). The fine-tuned run starts from the source run's
// best weights with a new 7-class head, the backbone frozen for 2 epochs then trained.
TEST_F(TransferTest, FineTuningBeatsTheSameBudgetFromScratch) {
  // Source photos without Triangles and Vertical Stripes (two classes the target adds).
  Ok(Bin("effnet-synth") + " --out " + (dir_ / "syn_a").string() +
         " --per-class 200 --size 64 --seed 1",
     "synth_a");
  {
    std::ifstream in(dir_ / "syn_a" / "synth.csv");
    std::ofstream out(dir_ / "syn_a" / "source.csv");
    std::string line;
    int kept = 0;
    for (bool header = true; std::getline(in, line); header = false) {
      const bool drop = line.find("Triangles >>") != std::string::npos ||
                        line.find("Vertical Stripes >>") != std::string::npos;
      if (header || !drop) out << line << "\n";
      kept += !header && !drop;
    }
    ASSERT_EQ(kept, 5 * 200);
  }
  Ok(Bin("effnet-prepare") + " --csv " + (dir_ / "syn_a" / "source.csv").string() + " --images " +
         (dir_ / "syn_a" / "images").string() + " --out " + (dir_ / "a.h5").string() +
         " --size 64 --test-fraction 0.1 --val-fraction 0.1 --progress lines",
     "prepare_a");
  Ok(Bin("effnet-synth") + " --out " + (dir_ / "syn_b").string() +
         " --per-class 30 --size 64 --seed 2",
     "synth_b");
  Ok(Bin("effnet-prepare") + " --csv " + (dir_ / "syn_b" / "synth.csv").string() + " --images " +
         (dir_ / "syn_b" / "images").string() + " --out " + (dir_ / "b.h5").string() +
         " --size 64 --test-fraction 0.5 --val-fraction 0.2 --progress lines",
     "prepare_b");
  const std::string common =
      " --preset tiny --set output.progress=false --set output.tensorboard=false";
  const std::string src = (dir_ / "src").string();
  Ok(Bin("effnet-train") + common + " --data " + (dir_ / "a.h5").string() + " --out " + src +
         " --set job.epochs=14",
     "pretrain");
  const std::string budget = " --data " + (dir_ / "b.h5").string() + " --set job.epochs=8";
  const std::string ft = (dir_ / "ft").string(), scratch = (dir_ / "scratch").string();
  Ok(Bin("effnet-train") + common + budget + " --out " + ft + " --pretrained " + src +
         "/checkpoints/best/model.safetensors --set model.freeze=backbone"
         " --set model.unfreeze_epoch=2",
     "finetune");
  Ok(Bin("effnet-train") + common + budget + " --out " + scratch, "scratch");
  auto acc = [](const std::string& run) {
    return nlohmann::json::parse(Slurp(run + "/summary.json")).at("test_accuracy").get<double>();
  };
  const auto source = nlohmann::json::parse(Slurp(src + "/summary.json"));
  const double a_ft = acc(ft), a_scratch = acc(scratch);
  std::cout << "[fine-tune vs scratch] source test accuracy "
            << source.at("test_accuracy").get<double>() << "; target: fine-tuned " << a_ft
            << ", from scratch " << a_scratch << "\n";
  EXPECT_EQ(nlohmann::json::parse(Slurp(ft + "/summary.json")).at("start"),
            "from model.safetensors");
  EXPECT_EQ(nlohmann::json::parse(Slurp(scratch + "/summary.json")).at("start"), "from scratch");
  EXPECT_GE(a_ft, a_scratch + 0.15) << "fine-tuned " << a_ft << " vs scratch " << a_scratch;
}
