// The trainer with a small stand-in model (conv + BN + dropout + linear) on generated HDF5 data:
// exact resume after a stop, NaN stop naming the step and the last good checkpoint, refusal of
// a class-count mismatch, and the loss scaling of Note [shard plan]: 2 ranks x b == 1 rank x 2b;
// model.freeze / model.unfreeze_epoch (Note [unfreeze] in worker/train/trainer.cpp); a slow rank
// is the slowest in the epoch records' per-rank pace (Note [rank throughput]); no step's autograd
// graph outlives the step.
#include <gtest/gtest.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/cuda.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "storage/dataset_reader.h"
#include "tests/train/synthetic_data.h"
#include "worker/dist/dist_data_parallel.h"
#include "worker/dist/inprocess_communicator.h"
#include "worker/formats/safetensors.h"
#include "worker/train/local_job_control.h"
#include "worker/train/trainer.h"

namespace {

namespace fs = std::filesystem;
using namespace effnet;

// Autograd graphs alive: each Tracked node holds a token whose deleter counts down.
std::atomic<int> g_live_graphs{0};
struct Tracked : public torch::autograd::Function<Tracked> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x) {
    ++g_live_graphs;
    ctx->saved_data["token"] = torch::from_blob(new float(0), {1}, [](void* p) {
      delete static_cast<float*>(p);
      --g_live_graphs;
    });
    return x.clone();
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*,
                                                 torch::autograd::variable_list g) {
    return {g[0]};
  }
};

struct TinyNetImpl : torch::nn::Module {
  TinyNetImpl(int classes, bool with_bn) : with_bn_(with_bn) {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).stride(2)));
    if (with_bn) bn = register_module("bn", torch::nn::BatchNorm2d(8));
    fc = register_module("fc", torch::nn::Linear(8, classes));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    ++calls;
    if (train_sleep_ms > 0 && is_training()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(train_sleep_ms));
    }
    auto h = conv->forward(x);
    if (with_bn_) h = bn->forward(h);
    if (track_graphs && h.requires_grad()) {
      max_live_graphs = std::max(max_live_graphs, g_live_graphs.load());
      h = Tracked::apply(h);
    }
    h = torch::relu(h).mean({2, 3});
    h = torch::dropout(h, dropout_rate, is_training());
    auto out = fc->forward(h);
    if (nan_at_call >= 0 && calls == nan_at_call) out = out * std::nan("");
    return out;
  }
  bool with_bn_;
  double dropout_rate = 0.1;
  int64_t calls = 0, nan_at_call = -1;
  int train_sleep_ms = 0;  // a straggler: this much longer per training forward
  bool track_graphs = false;
  int max_live_graphs = 0;  // the most graphs of earlier steps alive at a training forward
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(TinyNet);

std::string Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

train::ModelHandle Handle(TinyNet net, int classes) {
  train::ModelHandle h;
  h.module = net.ptr();
  h.forward = [net](const torch::Tensor& x) mutable { return net->forward(x); };
  h.set_dropout = [net](double r) mutable { net->dropout_rate = r; };
  h.num_classes = classes;
  h.name = "TinyNet";
  return h;
}

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("effnet_trainer_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    effnet::testing::RemoveTree(dir_.string());
    fs::create_directories(dir_);
    data_ = (dir_ / "data.h5").string();
    effnet::testing::SyntheticSpec s;
    s.classes = 3;
    s.train_per_class = 6;  // 18 train images (shards of 9 and 9 / odd with 17 below)
    s.val_per_class = 3;
    s.test_per_class = 2;
    s.image_size = 32;
    ASSERT_TRUE(effnet::testing::WriteSyntheticStore(data_, s).ok());
    auto r = storage::DatasetReader::Open(data_);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    reader_ = std::move(r).value();
  }
  void TearDown() override { effnet::testing::RemoveTree(dir_.string()); }

  static train::TrainConfig Config() {
    auto c = train::ParseTrainConfig(R"(
job:
  epochs: 4
  seed: 3
  progressive: {num_stages: 2, min_image_size: 32, max_image_size: 40, min_randaug: 2,
                max_randaug: 6, min_mixup: 0, max_mixup: 0.3, min_dropout: 0.0, max_dropout: 0.2}
  early_stopping: {patience: 0}
data: {batch_size: 4, eval_image_size: 32, prefetch_depth: 2}
optimizer: {name: rmsproptf, lr: 0.01, weight_decay: 0.0001, eps: 0.001, label_smoothing: 0.1}
schedule: {name: exponential, warmup_epochs: 1, decay_epochs: 1, decay_rate: 0.9}
augment: {randaug_translate_px: 4, randaug_cutout_px: 2, rot90: true}
ema: {enabled: true, decay: 0.99}
output: {progress: false, tensorboard: false, log_every_steps: 2}
)");
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return *c;
  }

  // Runs a full (or stopped) training in `run`; returns the final parameters and buffers (on the
  // CPU) and, when asked, the forward calls the model saw.
  std::vector<torch::Tensor> Run(const train::TrainConfig& c, const std::string& run,
                                 train::FitResult* fit_out = nullptr, Status* error = nullptr,
                                 int64_t* forward_calls = nullptr) {
    torch::manual_seed(11);
    TinyNet net(3, true);
    train::SingleProcess dp;
    train::LocalJobControl jc(c.job, reader_->info().IndicesOf(storage::Split::kTrain), 0, 1,
                              run + "/checkpoints");
    train::Trainer t(c, Handle(net, 3), *reader_, dp, jc, run);
    auto st = t.Setup();
    EXPECT_TRUE(st.ok()) << st.ToString();
    auto fit = t.Fit();
    if (error) *error = fit.ok() ? Status::Ok() : fit.status();
    if (fit.ok() && fit_out) *fit_out = *fit;
    if (!error) EXPECT_TRUE(fit.ok()) << fit.status().ToString();
    if (forward_calls) *forward_calls = net->calls;
    std::vector<torch::Tensor> out;
    for (auto& p : net->parameters()) out.push_back(p.detach().cpu().clone());
    for (auto& b : net->buffers()) out.push_back(b.detach().cpu().clone());
    return out;
  }

  // Setup and Fit of a single-process trainer over `net`, run directory `run`.
  Result<train::FitResult> FitNet(const train::TrainConfig& c, TinyNet net,
                                  const std::string& run) {
    train::SingleProcess dp;
    train::LocalJobControl jc(c.job, reader_->info().IndicesOf(storage::Split::kTrain), 0, 1,
                              run + "/checkpoints");
    train::Trainer t(c, Handle(net, 3), *reader_, dp, jc, run);
    if (Status st = t.Setup(); !st.ok()) return st;
    return t.Fit();
  }

  // Setup of a fresh single-process trainer with `c` (for the refusals Setup makes).
  Status SetupStatus(const train::TrainConfig& c) {
    torch::manual_seed(11);
    TinyNet net(3, true);
    train::SingleProcess dp;
    train::LocalJobControl jc(c.job, reader_->info().IndicesOf(storage::Split::kTrain), 0, 1, "");
    train::Trainer t(c, Handle(net, 3), *reader_, dp, jc, "");
    return t.Setup();
  }

  fs::path dir_;
  std::string data_;
  std::unique_ptr<storage::DatasetReader> reader_, reader2_;
};

TEST_F(TrainerTest, ResumeAfterStopIsBitwiseIdentical) {
  auto c = Config();
  const std::string full = (dir_ / "full").string(), split = (dir_ / "split").string();
  train::FitResult f;
  auto uninterrupted = Run(c, full, &f);
  EXPECT_EQ(f.epochs_run, 4);
  auto stopped = c;
  stopped.output.stop_after_epoch = 1;  // as if killed after epoch 1's checkpoint
  train::FitResult first;
  Run(stopped, split, &first);
  EXPECT_TRUE(first.stopped_early_for_test);
  EXPECT_EQ(first.last_epoch, 1);
  train::FitResult second;
  auto resumed = Run(c, split, &second);  // a new process: fresh init, then resume from LATEST
  EXPECT_EQ(second.epochs_run, 2);
  EXPECT_EQ(second.last_epoch, 3);
  ASSERT_EQ(resumed.size(), uninterrupted.size());
  for (size_t i = 0; i < resumed.size(); ++i) {
    EXPECT_TRUE(torch::equal(resumed[i], uninterrupted[i])) << "tensor " << i;
  }
  // A fresh run (different init, no resume) differs: the comparison above is not vacuous.
  auto never = c;
  never.checkpoint.resume = "never";
  never.job.seed = 4;
  auto other = Run(never, (dir_ / "other").string());
  EXPECT_FALSE(torch::equal(other[0], uninterrupted[0]));
  EXPECT_TRUE(fs::exists(split + "/checkpoints/best/model.safetensors"));
  // checkpoint.keep_last (2): the newest two epoch directories, best/ and LATEST, nothing else;
  // and the resumed run's last checkpoint holds the uninterrupted run's model and EMA bytes.
  std::set<std::string> names;
  for (auto& e : fs::directory_iterator(split + "/checkpoints")) {
    names.insert(e.path().filename().string());
  }
  EXPECT_EQ(names, (std::set<std::string>{"LATEST", "best", "epoch-0002", "epoch-0003"}));
  for (const char* f : {"model.safetensors", "ema.safetensors"}) {
    EXPECT_EQ(Slurp(split + "/checkpoints/epoch-0003/" + f),
              Slurp(full + "/checkpoints/epoch-0003/" + f))
        << f;
  }
  EXPECT_NE(Slurp(split + "/checkpoints/LATEST").find("\"epoch-0003\""), std::string::npos);
  EXPECT_TRUE(fs::exists(split + "/metrics.jsonl"));
}

// runtime.bf16=on runs the forward pass in bf16 on a CPU that has the instructions (the result
// differs from fp32 and stays finite), and is refused naming the setting on one that has not.
TEST_F(TrainerTest, CpuBf16OnlyWhereTheHardwareHasIt) {
  auto c = Config();
  c.job.epochs = 1;
  c.checkpoint.resume = "never";
  c.runtime.bf16 = "off";
  c.runtime.channels_last = "off";
  auto fp32 = Run(c, (dir_ / "fp32").string());
  c.runtime.bf16 = "on";
  if (!train::CpuHasBf16()) {
    const Status st = SetupStatus(c);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("runtime.bf16 is on"), std::string::npos) << st.ToString();
    GTEST_SKIP() << "this CPU has no AVX512-BF16/AMX: only the refusal was checked";
  }
  auto bf16 = Run(c, (dir_ / "bf16").string());
  ASSERT_EQ(bf16.size(), fp32.size());
  bool differs = false;
  for (size_t i = 0; i < bf16.size(); ++i) {
    if (bf16[i].is_floating_point()) EXPECT_TRUE(bf16[i].isfinite().all().item<bool>()) << i;
    differs = differs || !torch::equal(bf16[i], fp32[i]);
  }
  EXPECT_TRUE(differs) << "runtime.bf16=on changed nothing";
}

TEST_F(TrainerTest, NanLossStopsWithStepAndLastGoodCheckpoint) {
  auto c = Config();
  torch::manual_seed(1);
  TinyNet net(3, true);
  // The first epoch: 5 train steps + 2 val batches; call 9 = the second epoch (logged "epoch 2").
  net->nan_at_call = 9;
  const std::string run = (dir_ / "nan").string();
  auto fit = FitNet(c, net, run);
  ASSERT_FALSE(fit.ok());
  const auto& m = fit.status().message();
  EXPECT_NE(m.find("non-finite loss at epoch 2, step 6"), std::string::npos) << m;
  EXPECT_NE(m.find("last good checkpoint: " + run + "/checkpoints/epoch-0000"), std::string::npos)
      << m;
}

// A training step's autograd graph (its nodes and what they keep) is gone before the next step:
// the per-step metrics must not tie the steps' graphs together (the loss summed for logging once
// kept every graph of an epoch alive: 74 MB per B0 step at 224 px with the fused BN + SiLU).
TEST_F(TrainerTest, StepGraphsDoNotOutliveTheirStep) {
  auto c = Config();
  c.job.epochs = 2;
  torch::manual_seed(1);
  TinyNet net(3, true);
  net->track_graphs = true;
  auto fit = FitNet(c, net, (dir_ / "graphs").string());
  ASSERT_TRUE(fit.ok()) << fit.status().ToString();
  EXPECT_EQ(net->max_live_graphs, 0) << "graphs of earlier steps alive at a training forward";
  EXPECT_EQ(g_live_graphs.load(), 0);
}

// Note [CUDA graph step]: runtime.cuda_graphs=on is refused where the step cannot be captured.
TEST_F(TrainerTest, CudaGraphsOnIsRefusedWhereTheyCannotRun) {
  auto c = Config();
  c.runtime.device = "cpu";
  c.runtime.cuda_graphs = "on";
  const Status st = SetupStatus(c);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("runtime.cuda_graphs is on but the device is cpu"), std::string::npos)
      << st.ToString();
}

// The tests named Cuda* run on a GPU machine (ctest -L gpu, bench/gpu/run.sh) and skip elsewhere.
class TrainerCudaTest : public TrainerTest {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
    TrainerTest::SetUp();
  }
  // Trains on cuda with `graphs`; returns parameters and buffers, and the forward calls made.
  std::vector<torch::Tensor> RunCuda(train::TrainConfig c, const std::string& graphs,
                                     const std::string& run, int64_t* forward_calls) {
    c.runtime.device = "cuda";
    c.runtime.cuda_graphs = graphs;
    return Run(c, run, nullptr, nullptr, forward_calls);
  }
};

// The captured step trains as the eager one: same weights and BatchNorm statistics after two
// epochs in fp32 (cuDNN autotuning off: the same kernels both ways), with far fewer forward calls
// (the graph replays them). 18 train images in batches of 4: each epoch ends with a batch of 2,
// which runs eagerly between replays (Note [CUDA graph step], 2).
TEST_F(TrainerCudaTest, CudaGraphStepTrainsAsTheEagerStep) {
  auto c = Config();
  c.job.epochs = 2;
  c.job.progressive.num_stages = 1;
  c.job.progressive.min_dropout = c.job.progressive.max_dropout = 0;
  c.job.progressive.min_mixup = c.job.progressive.max_mixup = 0;
  c.runtime.bf16 = "off";
  c.runtime.channels_last = "off";
  c.runtime.cudnn_benchmark = "off";
  int64_t eager_calls = 0, graph_calls = 0;
  const auto eager = RunCuda(c, "off", (dir_ / "eager").string(), &eager_calls);
  const auto graphed = RunCuda(c, "on", (dir_ / "graph").string(), &graph_calls);
  ASSERT_EQ(eager.size(), graphed.size());
  for (size_t i = 0; i < eager.size(); ++i) {
    if (!eager[i].is_floating_point()) {
      EXPECT_TRUE(torch::equal(eager[i], graphed[i])) << "tensor " << i;
      continue;
    }
    const double diff = (eager[i] - graphed[i]).abs().max().item<double>();
    EXPECT_LT(diff, 1e-5) << "tensor " << i;
  }
  // Eager: 5 training steps per epoch; graphed: 2 warm-up steps + 1 capture, then replays.
  EXPECT_LT(graph_calls, eager_calls) << "no step was replayed";
}

// A bf16 autocast step on the GPU (the default there) trains to finite weights that differ from
// fp32's.
TEST_F(TrainerCudaTest, CudaBf16StepIsFinite) {
  auto c = Config();
  c.job.epochs = 1;
  int64_t calls = 0;
  auto fp32 = c;
  fp32.runtime.bf16 = "off";
  const auto a = RunCuda(fp32, "auto", (dir_ / "fp32").string(), &calls);
  auto bf16 = c;
  bf16.runtime.bf16 = "on";
  const auto b = RunCuda(bf16, "auto", (dir_ / "bf16").string(), &calls);
  bool differs = false;
  for (size_t i = 0; i < b.size(); ++i) {
    if (b[i].is_floating_point()) EXPECT_TRUE(b[i].isfinite().all().item<bool>()) << i;
    differs = differs || !torch::equal(a[i], b[i]);
  }
  EXPECT_TRUE(differs);
}

TEST_F(TrainerTest, RefusesClassCountMismatch) {
  auto c = Config();
  TinyNet net(5, true);
  train::SingleProcess dp;
  train::LocalJobControl jc(c.job, {}, 0, 1, "");
  train::Trainer t(c, Handle(net, 5), *reader_, dp, jc, "");
  auto st = t.Setup();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("5 classes"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("3 classes"), std::string::npos) << st.message();
  c.model.num_classes = 4;
  TinyNet net3(3, true);
  train::Trainer t2(c, Handle(net3, 3), *reader_, dp, jc, "");
  st = t2.Setup();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("model.num_classes is 4"), std::string::npos) << st.message();
}

// A world of two that must never be attached: Setup refuses before any collective.
class TwoRanksNeverAttached final : public train::DataParallel {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 2; }
  Status Attach(torch::nn::Module&) override { return Internal("attached"); }
  Status BeforeBackward() override { return Status::Ok(); }
  Status AfterBackward() override { return Status::Ok(); }
  Result<std::vector<double>> AllReduceSum(const std::vector<double>& v) override { return v; }
  Status Barrier() override { return Status::Ok(); }
  bool HooksBackward() const override { return false; }
};

TEST_F(TrainerTest, FreezeKeepsFrozenWeightsUntilUnfreezeAndRefusesItWithTwoRanks) {
  auto c = Config();
  c.ema.enabled = false;
  c.job.epochs = 2;
  c.transfer.freeze = "backbone";
  c.transfer.unfreeze_epoch = 1;
  torch::manual_seed(11);
  TinyNet net(3, true);
  auto h = Handle(net, 3);
  h.set_frozen = [net](bool on) mutable {
    for (auto* m : {static_cast<torch::nn::Module*>(net->conv.get()),
                    static_cast<torch::nn::Module*>(net->bn.get())}) {
      for (auto& p : m->parameters()) p.set_requires_grad(!on);
    }
    return Status::Ok();
  };
  const auto conv0 = net->conv->weight.detach().clone();
  const auto fc0 = net->fc->weight.detach().clone();
  TwoRanksNeverAttached two;
  train::LocalJobControl jc2(c.job, {}, 0, 2, "");
  train::Trainer refused(c, h, *reader_, two, jc2, "");
  auto st = refused.Setup();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("model.unfreeze_epoch: unfreezing during a run is supported with "
                              "one rank only"),
            std::string::npos)
      << st.message();

  // One rank: epoch 0 trains the classifier only, epoch 1 everything. (BN statistics of a frozen
  // EfficientNetV2 are checked in test_transfer.cpp; this stand-in only toggles requires_grad.)
  const std::string run = (dir_ / "frozen").string();
  train::SingleProcess dp;
  train::LocalJobControl jc(c.job, reader_->info().IndicesOf(storage::Split::kTrain), 0, 1,
                            run + "/checkpoints");
  train::Trainer t(c, h, *reader_, dp, jc, run);
  ASSERT_TRUE(t.Setup().ok());
  EXPECT_FALSE(net->conv->weight.requires_grad());
  ASSERT_TRUE(t.Fit().ok());
  auto e0 = formats::ReadSafetensors(run + "/checkpoints/epoch-0000/model.safetensors");
  ASSERT_TRUE(e0.ok()) << e0.status().ToString();
  EXPECT_TRUE(e0->find("conv.weight")->equal(conv0));
  EXPECT_FALSE(e0->find("fc.weight")->equal(fc0));
  EXPECT_FALSE(net->conv->weight.equal(conv0));
  EXPECT_TRUE(net->conv->weight.requires_grad());
}

TEST_F(TrainerTest, TwoRanksTimesBatchEqualsOneRankTimesTwiceTheBatch) {
  // 17 train images of 2 classes (shards 9 and 8): with b = 4 the last step has 1 real sample on
  // rank 0 and none on rank 1, which then feeds a zero-weight copy; 1 rank x 8 runs 8, 8, 1.
  // No randomness besides the shard plan, no BN (batch statistics would differ by design).
  effnet::testing::SyntheticSpec two;
  two.classes = 2;
  two.train_per_class = 9;
  two.train_skip = 1;
  two.val_per_class = 1;
  two.test_per_class = 1;
  two.image_size = 32;
  const std::string path2 = (dir_ / "two.h5").string();
  ASSERT_TRUE(effnet::testing::WriteSyntheticStore(path2, two).ok());
  reader2_ = std::move(storage::DatasetReader::Open(path2)).value();
  ASSERT_EQ(reader2_->info().IndicesOf(storage::Split::kTrain).size(), 17u);
  auto c = train::ParseTrainConfig(R"(
job: {epochs: 2, seed: 5, progressive: {num_stages: 1, min_image_size: 32, max_image_size: 32,
      min_dropout: 0, max_dropout: 0}, early_stopping: {patience: 0}}
optimizer: {name: sgd, lr: 0.5, momentum: 0.9, nesterov: true}
augment: {random_resized_crop: false, hflip_prob: 0, vflip_prob: 0, rot90: false}
output: {progress: false}
runtime: {bf16: off, channels_last: off}  # exact fp32: bf16 rounding depends on the batch size
)");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto run = [&](int world, int batch) {
    auto cfg = *c;
    cfg.data.batch_size = batch;
    // Ranks as threads of this process, over the real reducer (worker/dist).
    dist::CommOptions comm_options;
    comm_options.timeout_s = 60;
    auto comms = dist::CreateInProcessCommunicators(world, comm_options);
    std::vector<std::vector<torch::Tensor>> finals(static_cast<size_t>(world));
    std::vector<std::thread> threads;
    // Models are built before the threads start: the global generator is not thread-safe.
    std::vector<TinyNet> nets;
    for (int r = 0; r < world; ++r) {
      torch::manual_seed(21);
      nets.emplace_back(2, /*with_bn=*/false);
      nets.back()->dropout_rate = 0;
    }
    for (int r = 0; r < world; ++r) {
      threads.emplace_back([&, r] {
        TinyNet net = nets[static_cast<size_t>(r)];
        dist::DistDataParallel dp(dist::DistConfig{}, comms[static_cast<size_t>(r)]);
        train::LocalJobControl jc(cfg.job, reader2_->info().IndicesOf(storage::Split::kTrain), r,
                                  world, "");
        train::Trainer t(cfg, Handle(net, 2), *reader2_, dp, jc, "");
        auto st = t.Setup();
        EXPECT_TRUE(st.ok()) << st.ToString();
        auto fit = t.Fit();
        EXPECT_TRUE(fit.ok()) << fit.status().ToString();
        for (auto& p : net->parameters())
          finals[static_cast<size_t>(r)].push_back(p.detach().clone());
      });
    }
    for (auto& t : threads) t.join();
    return finals;
  };
  // 17 images, global batch 8 (Note [global batch]): 4 per rank x 2 ranks (steps 4,4,1 /
  // 4,4,0+pad) vs 8 x 1 rank (8, 8, 1).
  auto one = run(1, 8);
  auto two_ranks = run(2, 8);
  ASSERT_EQ(one[0].size(), two_ranks[0].size());
  for (size_t i = 0; i < one[0].size(); ++i) {
    EXPECT_TRUE(torch::equal(two_ranks[0][i], two_ranks[1][i]));  // ranks agree
    EXPECT_LE((one[0][i] - two_ranks[0][i]).abs().max().item<double>(), 1e-5) << "param " << i;
  }
  // The runs trained (the parameters moved), so the equality is not vacuous.
  torch::manual_seed(21);
  TinyNet init(2, false);
  EXPECT_GT((init->parameters()[0] - one[0][0]).abs().max().item<double>(), 1e-3);
}

TEST_F(TrainerTest, SlowRankIsTheSlowestInTheEpochRecords) {
  // Note [rank throughput]: rank 1 sleeps 40 ms per training forward. Wall-clock img/s is equal
  // on both ranks (rank 0 waits for rank 1 at every all-reduce); each rank's own pace is not.
  auto c = Config();
  c.job.epochs = 1;
  c.ema.enabled = false;
  const std::string run = (dir_ / "run").string();
  dist::CommOptions comm_options;
  comm_options.timeout_s = 60;
  auto comms = dist::CreateInProcessCommunicators(2, comm_options);
  std::vector<TinyNet> nets;
  for (int r = 0; r < 2; ++r) {
    torch::manual_seed(21);
    nets.emplace_back(3, /*with_bn=*/false);
  }
  nets[1]->train_sleep_ms = 40;
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      dist::DistDataParallel dp(dist::DistConfig{}, comms[static_cast<size_t>(r)]);
      train::LocalJobControl jc(c.job, reader_->info().IndicesOf(storage::Split::kTrain), r, 2,
                                run + "/checkpoints");
      train::Trainer t(c, Handle(nets[static_cast<size_t>(r)], 3), *reader_, dp, jc, run);
      auto st = t.Setup();
      EXPECT_TRUE(st.ok()) << st.ToString();
      auto fit = t.Fit();
      EXPECT_TRUE(fit.ok()) << fit.status().ToString();
    });
  }
  for (auto& t : threads) t.join();
  std::ifstream metrics(run + "/metrics.jsonl");
  int epochs = 0;
  for (std::string line; std::getline(metrics, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.at("kind") != "epoch") continue;
    ++epochs;
    const auto pace = j.at("rank_img_per_s").get<std::vector<double>>();
    const auto wait = j.at("rank_wait_s").get<std::vector<double>>();
    ASSERT_EQ(pace.size(), 2u);
    ASSERT_EQ(wait.size(), 2u);
    std::cout << "[slow rank] own pace img/s " << pace[0] << " " << pace[1] << ", waited s "
              << wait[0] << " " << wait[1] << "\n";
    EXPECT_LT(pace[1], 0.6 * pace[0]);  // 3 steps x 40 ms dominate rank 1's time
    EXPECT_GT(wait[0], wait[1]);        // rank 0 waited for rank 1
  }
  EXPECT_EQ(epochs, 1);
}

}  // namespace
