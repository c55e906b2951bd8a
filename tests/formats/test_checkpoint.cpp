// worker/formats/checkpoint.h: a round trip of every part (model, EMA, optimizer, CPU generator,
// meta), replacing an existing checkpoint, refusal of a flipped byte in any file (DataLoss naming
// the file, nothing loaded), of another variant or class count, of a v1 `.pt` file, and pruning.
#include <ATen/CPUGeneratorImpl.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <torch/torch.h>

#include <fstream>
#include <iterator>

#include "tests/formats/test_util.h"
#include "worker/formats/checkpoint.h"
#include "worker/formats/safetensors.h"
#include "worker/model/efficientnet.h"

namespace effnet::formats {
namespace {

using formats_test::SameStateDict;
using formats_test::TempDir;
using formats_test::Tiny;
using model::EfficientNetV2;

bool Exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

// Entries of `dir` other than hidden ones (temporaries are hidden).
int VisibleEntries(const std::string& dir) {
  int n = 0;
  DIR* d = ::opendir(dir.c_str());
  while (const dirent* de = ::readdir(d)) n += de->d_name[0] != '.';
  ::closedir(d);
  return n;
}

std::string Slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// A model that trained a step (non-trivial BN statistics, num_batches_tracked = 1), an optimizer
// with momentum state, and EMA tensors that differ from the model.
struct Trained {
  explicit Trained(uint64_t seed) : net(Tiny(10)) {
    torch::manual_seed(seed);
    net = EfficientNetV2(Tiny(10));
    opt = std::make_unique<torch::optim::SGD>(net->parameters(),
                                              torch::optim::SGDOptions(0.1).momentum(0.9));
    Step();
    for (const auto& item : GetStateDict(*net)) {
      at::Tensor t = item.value().clone();
      if (t.is_floating_point()) t.add_(0.5);
      ema.emplace_back(item.key(), t);
    }
  }
  void Step() {
    net->train();
    opt->zero_grad();
    net->forward(torch::randn({2, 3, 32, 32})).pow(2).mean().backward();
    opt->step();
  }
  CheckpointSource Source() const {
    CheckpointSource s;
    s.model = net.ptr().get();
    s.ema = ema;
    s.ema_num_updates = 17;
    s.optimizer = opt.get();
    return s;
  }
  CheckpointTarget Target() {
    CheckpointTarget t;
    t.model = net.ptr().get();
    t.variant = "b0";
    t.num_classes = 10;
    t.ema = ema;
    t.ema_num_updates = &ema_updates;
    t.optimizer = opt.get();
    t.restore_cpu_rng = true;
    return t;
  }
  EfficientNetV2 net;
  std::unique_ptr<torch::optim::SGD> opt;
  std::vector<std::pair<std::string, at::Tensor>> ema;
  int64_t ema_updates = 0;
};

CheckpointMeta Meta(int epoch) {
  CheckpointMeta m;
  m.model_name = "EfficientNetV2-B0 (reduced)";
  m.model.variant = "b0";
  m.model.num_classes = 10;
  m.model.extra_width = 0.25;
  m.model.extra_depth = 0.34;
  for (int c = 0; c < 10; ++c) m.class_names.push_back("class " + std::to_string(c));
  m.class_names[3] = "Ω-shaped, \"quoted\"";
  m.config_yaml = "job:\n  epochs: 4\n";
  m.epoch = epoch;
  m.next_epoch = epoch + 1;
  m.global_step = 123;
  m.steps_per_epoch = 41;
  m.stage.index = 1;
  m.stage.image_size = 56;
  m.stage.dropout = 0.15;
  m.fit_time_s = 12.3456789;
  m.decision_state = R"({"best_epoch":0})";
  m.world_size = 2;
  m.eval_image_size = 64;
  m.data_path = "/data/x.h5";
  return m;
}

TEST(Checkpoint, RoundTripOfEveryPart) {
  const TempDir dir;
  const std::string ck = dir / "checkpoints/epoch-0002";
  Trained a(1);
  const at::Tensor rng_at_save = at::detail::getDefaultCPUGenerator().get_state();
  Status st = WriteCheckpoint(ck, Meta(2), a.Source());
  ASSERT_TRUE(st.ok()) << st.ToString();
  for (const char* f : {"model.safetensors", "ema.safetensors", "train_state.pt", "meta.json"}) {
    EXPECT_TRUE(Exists(ck + "/" + f)) << f;
  }
  // model.safetensors is the state dict in timm key order, num_batches_tracked included.
  auto sd = ReadSafetensors(ck + "/model.safetensors");
  ASSERT_TRUE(sd.ok()) << sd.status().ToString();
  EXPECT_EQ(sd->keys(), GetStateDict(*a.net).keys());
  const at::Tensor* nbt = sd->find("bn1.num_batches_tracked");
  ASSERT_NE(nbt, nullptr);
  EXPECT_EQ(nbt->scalar_type(), at::kLong);
  EXPECT_EQ(nbt->dim(), 0);
  EXPECT_EQ(nbt->item<int64_t>(), 1);

  torch::randn({100});  // move the generator on; the load restores it
  Trained b(2);
  EXPECT_FALSE(SameStateDict(GetStateDict(*a.net), GetStateDict(*b.net)));
  auto meta = LoadCheckpoint(ck, b.Target());
  ASSERT_TRUE(meta.ok()) << meta.status().ToString();
  EXPECT_TRUE(SameStateDict(GetStateDict(*a.net), GetStateDict(*b.net)));
  for (size_t i = 0; i < a.ema.size(); ++i) {
    EXPECT_TRUE(a.ema[i].second.equal(b.ema[i].second)) << a.ema[i].first;
  }
  EXPECT_EQ(b.ema_updates, 17);
  EXPECT_TRUE(at::detail::getDefaultCPUGenerator().get_state().equal(rng_at_save));
  // Same optimizer state: one more identical step keeps them identical.
  torch::manual_seed(5);
  a.Step();
  torch::manual_seed(5);
  b.Step();
  EXPECT_TRUE(SameStateDict(GetStateDict(*a.net), GetStateDict(*b.net)));

  const CheckpointMeta want = Meta(2);
  EXPECT_EQ(meta->format_version, kCheckpointFormatVersion);
  EXPECT_EQ(meta->model_name, want.model_name);
  EXPECT_EQ(meta->model.extra_depth, 0.34);
  EXPECT_EQ(meta->class_names, want.class_names);
  EXPECT_EQ(meta->config_yaml, want.config_yaml);
  EXPECT_EQ(meta->epoch, 2);
  EXPECT_EQ(meta->next_epoch, 3);
  EXPECT_EQ(meta->global_step, 123);
  EXPECT_EQ(meta->stage.image_size, 56);
  EXPECT_EQ(meta->stage.dropout, 0.15);
  EXPECT_EQ(meta->fit_time_s, 12.3456789);
  EXPECT_EQ(meta->decision_state, want.decision_state);
  EXPECT_EQ(meta->world_size, 2);
  EXPECT_TRUE(meta->has_ema);
  EXPECT_EQ(meta->sha256.size(), 3u);
  // Weights only (evaluation): the module's own view, checksums verified.
  auto w = ReadCheckpointWeights(ck);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_TRUE(w->find("conv_head.weight")->equal(*sd->find("conv_head.weight")));
  auto e = ReadCheckpointWeights(ck, /*ema=*/true);
  ASSERT_TRUE(e.ok());
  for (const auto& [name, t] : a.ema) {
    ASSERT_NE(e->find(name), nullptr) << name;
    EXPECT_TRUE(e->find(name)->equal(t)) << name;
  }
}

TEST(Checkpoint, ReplacesAnExistingCheckpointAndLeavesNoTemporaries) {
  const TempDir dir;
  const std::string ck = dir / "best";
  Trained a(1);
  ASSERT_TRUE(WriteCheckpoint(ck, Meta(0), a.Source()).ok());
  a.Step();
  CheckpointSource no_ema = a.Source();
  no_ema.ema.clear();
  ASSERT_TRUE(WriteCheckpoint(ck, Meta(1), no_ema).ok());
  auto meta = VerifyCheckpoint(ck);
  ASSERT_TRUE(meta.ok()) << meta.status().ToString();
  EXPECT_EQ(meta->epoch, 1);
  EXPECT_FALSE(meta->has_ema);
  EXPECT_FALSE(Exists(ck + "/ema.safetensors"));
  auto w = ReadCheckpointWeights(ck);
  ASSERT_TRUE(w.ok());
  EXPECT_TRUE(SameStateDict(*w, GetStateDict(*a.net)));
  // Only "best" in the parent: the temporary and the swapped-out old checkpoint are gone.
  ASSERT_TRUE(PruneCheckpoints(dir.path, 1).ok());
  EXPECT_EQ(VisibleEntries(dir.path), 1);
  EXPECT_EQ(Slurp(dir.path + "/best/meta.json").find(".tmp."), std::string::npos);
}

TEST(Checkpoint, CopyInstallsTheSameCheckpointThatOutlivesItsSource) {
  const TempDir dir;
  Trained a(1);
  ASSERT_TRUE(WriteCheckpoint(dir / "epoch-0000", Meta(0), a.Source()).ok());
  ASSERT_TRUE(CopyCheckpoint(dir / "epoch-0000", dir / "best").ok());
  a.Step();
  ASSERT_TRUE(WriteCheckpoint(dir / "epoch-0001", Meta(1), a.Source()).ok());
  // Replacing an existing best/ with a newer epoch.
  Status st = CopyCheckpoint(dir / "epoch-0001", dir / "best");
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_TRUE(PruneCheckpoints(dir.path, 1).ok());  // removes epoch-0000, best's first source
  EXPECT_FALSE(Exists(dir / "epoch-0000"));
  TempDir::RemoveAll(dir / "epoch-0001");  // the newer source goes too, out of keep_last
  ASSERT_FALSE(Exists(dir / "epoch-0001"));
  auto meta = VerifyCheckpoint(dir / "best");
  ASSERT_TRUE(meta.ok()) << meta.status().ToString();
  EXPECT_EQ(meta->epoch, 1);
  auto w = ReadCheckpointWeights(dir / "best");
  ASSERT_TRUE(w.ok());
  EXPECT_TRUE(SameStateDict(*w, GetStateDict(*a.net)));
  EXPECT_EQ(VisibleEntries(dir.path), 1);  // best only: no temporary, no swapped-out old best
  // A missing source is an error naming it; nothing is installed.
  st = CopyCheckpoint(dir / "epoch-0007", dir / "other");
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.ToString().find("epoch-0007"), std::string::npos) << st.ToString();
  EXPECT_FALSE(Exists(dir / "other"));
}

TEST(Checkpoint, FlippedByteIsRefusedNamingTheFile) {
  const TempDir dir;
  const std::string ck = dir / "epoch-0000";
  Trained a(1);
  ASSERT_TRUE(WriteCheckpoint(ck, Meta(0), a.Source()).ok());
  for (const std::string f :
       {"model.safetensors", "ema.safetensors", "train_state.pt", "meta.json"}) {
    const std::string path = ck + "/" + f;
    const std::string good = Slurp(path);
    std::string bad = good;
    bad[bad.size() / 2] ^= 0x04;
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bad;
    Trained b(2);
    const auto before = GetStateDict(*b.net);
    std::vector<at::Tensor> before_copy;
    for (const auto& item : before) before_copy.push_back(item.value().clone());
    auto r = LoadCheckpoint(ck, b.Target());
    ASSERT_FALSE(r.ok()) << f;
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << f << ": " << r.status().ToString();
    EXPECT_NE(r.status().message().find(ck + "/" + f + ": SHA-256 mismatch"), std::string::npos)
        << r.status().message();
    size_t i = 0;
    for (const auto& item : GetStateDict(*b.net)) {
      EXPECT_TRUE(item.value().equal(before_copy[i++])) << f << " modified " << item.key();
    }
    EXPECT_FALSE(ReadCheckpointWeights(ck).ok()) << f;
    std::ofstream(path, std::ios::binary | std::ios::trunc) << good;
  }
  EXPECT_TRUE(VerifyCheckpoint(ck).ok());
}

TEST(Checkpoint, RefusesOtherVariantOrClassCountSayingSo) {
  const TempDir dir;
  const std::string ck = dir / "epoch-0000";
  Trained a(1);
  ASSERT_TRUE(WriteCheckpoint(ck, Meta(0), a.Source()).ok());
  CheckpointTarget t = a.Target();
  t.variant = "b2";
  auto r = LoadCheckpoint(ck, t);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("loading checkpoint " + ck +
                                      ": it is for variant 'b0', the model is 'b2'"),
            std::string::npos)
      << r.status().message();
  t = a.Target();
  t.num_classes = 7;
  r = LoadCheckpoint(ck, t);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("it has 10 classes, the model has 7"), std::string::npos)
      << r.status().message();
  // A model of another shape (same variant and classes) is refused by key and shapes.
  model::ModelConfig wide = Tiny(10);
  wide.extra_width = 0.5;
  EfficientNetV2 other(wide);
  CheckpointTarget w;
  w.model = other.ptr().get();
  r = LoadCheckpoint(ck, w);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("shape mismatch for 'conv_stem.weight'"), std::string::npos)
      << r.status().message();
}

TEST(Checkpoint, VersionOneFileIsRefusedWithTheReason) {
  const TempDir dir;
  const std::string old = dir / "epoch-0000.pt";
  std::ofstream(old) << "PK";
  auto r = ReadCheckpointMeta(old);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("format version 1"), std::string::npos)
      << r.status().message();
  EXPECT_EQ(ReadCheckpointMeta(dir / "nothing").status().code(), StatusCode::kNotFound);
}

TEST(Checkpoint, PruneKeepsTheNewestEpochsAndBest) {
  const TempDir dir;
  for (const char* d : {"epoch-0000", "epoch-0001", "epoch-0002", "epoch-0010", "best",
                        ".epoch-0011.tmp.999", "other"}) {
    ASSERT_EQ(::mkdir((dir / d).c_str(), 0755), 0) << d;
    std::ofstream(dir / d + "/f") << "x";
  }
  ASSERT_TRUE(PruneCheckpoints(dir.path, 2).ok());
  for (const char* d : {"epoch-0000", "epoch-0001", ".epoch-0011.tmp.999"}) {
    EXPECT_FALSE(Exists(dir / d)) << d;
  }
  for (const char* d : {"epoch-0002", "epoch-0010", "best", "other"}) {
    EXPECT_TRUE(Exists(dir / d)) << d;
  }
}

}  // namespace
}  // namespace effnet::formats
