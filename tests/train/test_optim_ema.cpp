// RMSpropTF and EMA against timm (Python reference on the same inputs), optimiser state
// serialisation, and the param-group rule (no weight decay on BN and bias).
#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <torch/optim/sgd.h>
#include <torch/types.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/train/synthetic_data.h"
#include "worker/formats/checkpoint.h"
#include "worker/train/ema.h"
#include "worker/train/optim.h"

namespace {

torch::Tensor ReadBin(const std::string& path, std::vector<int64_t> shape,
                      torch::Dtype dtype = torch::kFloat) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string bytes = ss.str();
  auto t = torch::empty(shape, torch::TensorOptions().dtype(dtype));
  EXPECT_EQ(static_cast<size_t>(t.numel() * t.element_size()), bytes.size()) << path;
  std::memcpy(t.data_ptr(), bytes.data(),
              std::min<size_t>(bytes.size(), t.numel() * t.element_size()));
  return t;
}

struct Net : torch::nn::Module {
  Net(const torch::Tensor& w0, const torch::Tensor& b0, const torch::Tensor& buf0) {
    w = register_parameter("w", w0.clone());
    b = register_parameter("b", b0.clone());
    running = register_buffer("running", buf0.clone());
  }
  torch::Tensor w, b, running;
};

struct Reference {
  torch::Tensor w0, b0, buf0, gw, gb, bufs, lrs, out_w, out_b, ema_w, ema_b, ema_buf;
};

class OptimEmaReference : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ =
        std::filesystem::temp_directory_path() / ("effnet_rmsprop_ref_" + std::to_string(getpid()));
    const std::string cmd = std::string(EFFNET_PYTHON) + " " + EFFNET_TRAIN_TEST_DIR +
                            "/rmsprop_ema_reference.py " + dir_.string() + " > " + dir_.string() +
                            ".log 2>&1";
    rc_ = std::system(cmd.c_str());
  }
  static void TearDownTestSuite() {
    effnet::testing::RemoveTree(dir_.string());
    std::filesystem::remove(dir_.string() + ".log");
  }
  Reference Load() {
    const int T = 12;
    auto p = [&](const char* n) { return (dir_ / (std::string(n) + ".bin")).string(); };
    Reference r;
    r.w0 = ReadBin(p("w0"), {4, 3});
    r.b0 = ReadBin(p("b0"), {5});
    r.buf0 = ReadBin(p("buf0"), {5});
    r.gw = ReadBin(p("gw"), {T, 4, 3});
    r.gb = ReadBin(p("gb"), {T, 5});
    r.bufs = ReadBin(p("bufs"), {T, 5});
    r.lrs = ReadBin(p("lrs"), {T}, torch::kDouble);
    r.out_w = ReadBin(p("out_w"), {4, 3});
    r.out_b = ReadBin(p("out_b"), {5});
    r.ema_w = ReadBin(p("ema_w"), {4, 3});
    r.ema_b = ReadBin(p("ema_b"), {5});
    r.ema_buf = ReadBin(p("ema_buf"), {5});
    return r;
  }
  static std::unique_ptr<torch::optim::RMSpropTF> MakeOpt(Net& net) {
    using torch::optim::RMSpropTFOptions;
    auto o = RMSpropTFOptions(0.01).alpha(0.9).eps(1e-3).momentum(0.9).lr_in_momentum(true);
    std::vector<torch::optim::OptimizerParamGroup> groups;
    auto with = o;
    with.weight_decay(1e-2);
    auto without = o;
    without.weight_decay(0.0);
    groups.emplace_back(std::vector<torch::Tensor>{net.w},
                        std::make_unique<RMSpropTFOptions>(with));
    groups.emplace_back(std::vector<torch::Tensor>{net.b},
                        std::make_unique<RMSpropTFOptions>(without));
    return std::make_unique<torch::optim::RMSpropTF>(groups, o);
  }
  // Runs steps [from, to) of the reference sequence.
  static void Steps(Net& net, torch::optim::Optimizer& opt, effnet::train::ModelEma& ema,
                    const Reference& r, int from, int to) {
    for (int t = from; t < to; ++t) {
      effnet::train::SetLearningRate(opt, r.lrs[t].item<double>());
      net.w.mutable_grad() = r.gw[t].clone();
      net.b.mutable_grad() = r.gb[t].clone();
      opt.step();
      {
        torch::NoGradGuard g;
        net.running.copy_(r.bufs[t]);
      }
      ema.Update(net);
    }
  }
  static double MaxDiff(const torch::Tensor& a, const torch::Tensor& b) {
    return (a - b).abs().max().item<double>();
  }
  static inline std::filesystem::path dir_;
  static inline int rc_ = -1;
};

TEST_F(OptimEmaReference, RmspropTfAndEmaMatchTimm) {
  ASSERT_EQ(rc_, 0) << "the Python reference failed; see " << dir_.string() << ".log";
  auto r = Load();
  Net net(r.w0, r.b0, r.buf0);
  auto opt = MakeOpt(net);
  effnet::train::ModelEma ema(net, 0.999, /*tf_warmup=*/true);
  Steps(net, *opt, ema, r, 0, 12);
  EXPECT_LE(MaxDiff(net.w, r.out_w), 1e-6);
  EXPECT_LE(MaxDiff(net.b, r.out_b), 1e-6);
  // The sequence moved the weights far from their start, so the comparison is not vacuous.
  EXPECT_GT(MaxDiff(net.w, r.w0), 1e-2);
  const auto& shadow = ema.tensors();
  ASSERT_EQ(shadow.size(), 3u);
  EXPECT_EQ(shadow[2].first, "running");
  EXPECT_LE(MaxDiff(shadow[0].second, r.ema_w), 1e-6);
  EXPECT_LE(MaxDiff(shadow[1].second, r.ema_b), 1e-6);
  EXPECT_LE(MaxDiff(shadow[2].second, r.ema_buf), 1e-6);  // BN buffers are averaged too
  EXPECT_GT(MaxDiff(shadow[2].second, r.buf0), 1e-3);
}

TEST_F(OptimEmaReference, StateSurvivesSaveAndLoad) {
  ASSERT_EQ(rc_, 0);
  auto r = Load();
  Net a(r.w0, r.b0, r.buf0);
  auto opt_a = MakeOpt(a);
  effnet::train::ModelEma ema_a(a, 0.999, true);
  Steps(a, *opt_a, ema_a, r, 0, 5);
  // Through a checkpoint (worker/formats/checkpoint.h), as the trainer saves and resumes.
  const std::string ck = (dir_ / "checkpoint").string();
  effnet::formats::CheckpointSource source;
  source.model = &a;
  source.optimizer = opt_a.get();
  source.ema = ema_a.tensors();
  source.ema_num_updates = ema_a.num_updates();
  auto st = effnet::formats::WriteCheckpoint(ck, {}, source);
  ASSERT_TRUE(st.ok()) << st.ToString();
  // A fresh model/optimiser/EMA (as after a restart) loads the state and continues.
  Net b(r.w0, r.b0, r.buf0);
  auto opt_b = MakeOpt(b);
  effnet::train::ModelEma ema_b(b, 0.999, true);
  effnet::formats::CheckpointTarget target;
  target.model = &b;
  target.optimizer = opt_b.get();
  target.ema = ema_b.tensors();
  int64_t updates = 0;
  target.ema_num_updates = &updates;
  auto meta = effnet::formats::LoadCheckpoint(ck, target);
  ASSERT_TRUE(meta.ok()) << meta.status().ToString();
  ema_b.set_num_updates(updates);
  EXPECT_EQ(ema_b.num_updates(), 5);
  Steps(a, *opt_a, ema_a, r, 5, 12);
  Steps(b, *opt_b, ema_b, r, 5, 12);
  EXPECT_TRUE(torch::equal(a.w, b.w));
  EXPECT_TRUE(torch::equal(a.b, b.b));
  EXPECT_TRUE(torch::equal(ema_a.tensors()[0].second, ema_b.tensors()[0].second));
  EXPECT_LE(MaxDiff(b.w, r.out_w), 1e-6);
}

TEST(TfWarmupDecay, Formula) {
  Net n(torch::zeros({4, 3}), torch::zeros({5}), torch::zeros({5}));
  effnet::train::ModelEma warm(n, 0.9999, true), plain(n, 0.9999, false);
  EXPECT_DOUBLE_EQ(warm.DecayAt(0), 0.1);
  EXPECT_DOUBLE_EQ(warm.DecayAt(10), 11.0 / 20.0);
  EXPECT_DOUBLE_EQ(warm.DecayAt(1000000), 0.9999);
  EXPECT_DOUBLE_EQ(plain.DecayAt(0), 0.9999);
}

struct BnNet : torch::nn::Module {
  BnNet() {
    conv = register_parameter("conv_weight", torch::ones({4, 3, 3, 3}));
    conv_bias = register_parameter("conv_bias", torch::zeros({4}));
    gamma = register_parameter("bn_weight", torch::ones({4}));
    fc = register_parameter("fc_weight", torch::ones({2, 4}));
  }
  torch::Tensor conv, conv_bias, gamma, fc;
};

TEST(MakeOptimizer, NoWeightDecayOnOneDimensionalParams) {
  BnNet net;
  effnet::train::OptimizerSection c;
  c.name = "sgd";
  c.weight_decay = 0.1;
  auto opt = effnet::train::MakeOptimizer(net, c);
  ASSERT_TRUE(opt.ok()) << opt.status().ToString();
  auto& groups = (*opt)->param_groups();
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].params().size(), 2u);  // conv + fc weights
  EXPECT_EQ(groups[1].params().size(), 2u);  // bias + BN gamma
  auto& g0 = static_cast<torch::optim::SGDOptions&>(groups[0].options());
  auto& g1 = static_cast<torch::optim::SGDOptions&>(groups[1].options());
  EXPECT_DOUBLE_EQ(g0.weight_decay(), 0.1);
  EXPECT_DOUBLE_EQ(g1.weight_decay(), 0.0);
  EXPECT_TRUE(g0.nesterov());
  c.decay_bn_and_bias = true;
  auto one = effnet::train::MakeOptimizer(net, c);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ((*one)->param_groups().size(), 1u);
  c.name = "lamb";
  auto bad = effnet::train::MakeOptimizer(net, c);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("optimizer.name"), std::string::npos);
  EXPECT_NE(bad.status().message().find("rmsproptf"), std::string::npos);
}

// Saves `from`'s state through a serialised archive and loads it into `to`, as a checkpoint does.
void CopyOptimizerState(const torch::optim::Optimizer& from, torch::optim::Optimizer& to) {
  torch::serialize::OutputArchive out;
  from.save(out);
  std::ostringstream os;
  out.save_to(os);
  std::istringstream is(os.str());
  torch::serialize::InputArchive in;
  in.load_from(is);
  to.load(in);
}

// Note [fused Adam]: the fused step equals torch::optim's per-tensor step (same formulas, float
// rounding apart), for Adam and AdamW, with two param groups, a channels_last weight whose
// gradient has NCHW strides, and a parameter without a gradient; the state one saves loads into
// the other.
template <typename Fused, typename Plain, typename Options, typename State>
void ExpectFusedMatchesPlain() {
  torch::manual_seed(3);
  std::vector<torch::Tensor> a = {
      torch::randn({8, 4, 3, 3}).contiguous(at::MemoryFormat::ChannelsLast).requires_grad_(),
      torch::randn({7, 5}).requires_grad_(), torch::randn({5}).requires_grad_(),
      torch::randn({3}).requires_grad_()};
  std::vector<torch::Tensor> b;
  for (auto& p : a) b.push_back(p.detach().clone().requires_grad_());
  auto groups = [](const std::vector<torch::Tensor>& ps) {
    auto with = Options(1e-2).betas({0.9, 0.999}).eps(1e-7).weight_decay(0.05);
    auto without = with;
    without.weight_decay(0.0);
    std::vector<torch::optim::OptimizerParamGroup> g;
    g.emplace_back(std::vector<torch::Tensor>{ps[0], ps[1]}, std::make_unique<Options>(with));
    g.emplace_back(std::vector<torch::Tensor>{ps[2], ps[3]}, std::make_unique<Options>(without));
    return g;
  };
  Fused fused(groups(a), Options(1e-2));
  Plain plain(groups(b), Options(1e-2));
  for (int step = 0; step < 6; ++step) {
    for (size_t i = 0; i + 1 < a.size(); ++i) {  // the last parameter never gets a gradient
      auto g = torch::randn_like(a[i]);
      // As a data-parallel bucket view: NCHW strides beside the channels_last weight.
      a[i].mutable_grad() = i == 0 ? g.contiguous() : g.clone();
      b[i].mutable_grad() = g.clone();
    }
    fused.step();
    plain.step();
  }
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::allclose(a[i], b[i], 1e-5, 1e-6)) << "param " << i;
  }
  EXPECT_TRUE(torch::equal(a.back(), b.back()));  // no gradient: untouched
  Plain reloaded(groups(b), Options(1e-2));
  CopyOptimizerState(fused, reloaded);
  const auto& st = static_cast<const State&>(*reloaded.state().at(b[0].unsafeGetTensorImpl()));
  EXPECT_EQ(st.step(), 6);
  EXPECT_TRUE(torch::allclose(
      st.exp_avg_sq(),
      static_cast<const State&>(*plain.state().at(b[0].unsafeGetTensorImpl())).exp_avg_sq(), 1e-5,
      1e-9));
  // And back: the per-tensor state (loaded contiguous) continues in a fused optimiser.
  std::vector<torch::Tensor> c;
  for (auto& p : b) c.push_back(p.detach().clone().requires_grad_());
  c[0] = c[0].detach().contiguous(at::MemoryFormat::ChannelsLast).requires_grad_();
  Fused continued(groups(c), Options(1e-2));
  CopyOptimizerState(plain, continued);
  for (size_t i = 0; i + 1 < c.size(); ++i) {
    auto g = torch::randn_like(b[i]);
    b[i].mutable_grad() = g.clone();
    c[i].mutable_grad() = g.clone();
  }
  plain.step();
  continued.step();
  for (size_t i = 0; i < c.size(); ++i) {
    EXPECT_TRUE(torch::allclose(c[i], b[i], 1e-5, 1e-6)) << "param " << i << " after reload";
  }
}

TEST(FusedAdam, MatchesThePerTensorStepAndSharesItsState) {
  ExpectFusedMatchesPlain<torch::optim::FusedAdam, torch::optim::Adam, torch::optim::AdamOptions,
                          torch::optim::AdamParamState>();
  ExpectFusedMatchesPlain<torch::optim::FusedAdamW, torch::optim::AdamW, torch::optim::AdamWOptions,
                          torch::optim::AdamWParamState>();
}

}  // namespace

// Note [Keras epsilon]: with UseKerasEpsilon the fused step follows keras/src/optimizers/adam.py
// (eps added to sqrt(v), the step size bias-corrected), written out here per tensor, for a
// parameter that trains from the start and one that gets gradients only from step 4 (as after an
// unfreeze: its own step count). With torch's form the same run differs measurably.
TEST(FusedAdam, KerasEpsilonFollowsKerasAdam) {
  torch::manual_seed(5);
  const double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-7;
  // Small gradients, where the two forms differ (sqrt(v) is near eps).
  std::vector<torch::Tensor> init = {torch::randn({6, 3}), torch::randn({4})};
  auto make = [&] {
    std::vector<torch::Tensor> ps;
    for (auto& t : init) ps.push_back(t.clone().requires_grad_());
    return ps;
  };
  auto keras = make(), torch_form = make();
  auto opts = torch::optim::AdamOptions(lr).betas({b1, b2}).eps(eps);
  torch::optim::FusedAdam fused(keras, opts), plain_eps(torch_form, opts);
  fused.UseKerasEpsilon(true);
  std::vector<torch::Tensor> ref, m, v;
  std::vector<int> t(init.size(), 0);
  for (auto& x : init) {
    ref.push_back(x.clone());
    m.push_back(torch::zeros_like(x));
    v.push_back(torch::zeros_like(x));
  }
  for (int step = 0; step < 8; ++step) {
    for (size_t i = 0; i < init.size(); ++i) {
      const bool has_grad = i == 0 || step >= 4;
      auto g = torch::randn_like(init[i]) * 1e-6;
      keras[i].mutable_grad() = has_grad ? g.clone() : torch::Tensor();
      torch_form[i].mutable_grad() = has_grad ? g.clone() : torch::Tensor();
      if (!has_grad) continue;
      ++t[i];
      m[i] += (g - m[i]) * (1 - b1);
      v[i] += (g * g - v[i]) * (1 - b2);
      const double alpha = lr * std::sqrt(1 - std::pow(b2, t[i])) / (1 - std::pow(b1, t[i]));
      ref[i] -= m[i] * alpha / (v[i].sqrt() + eps);
    }
    fused.step();
    plain_eps.step();
  }
  for (size_t i = 0; i < init.size(); ++i) {
    const auto moved = (ref[i] - init[i]).abs().max().item<double>();
    EXPECT_LT((keras[i].detach() - ref[i]).abs().max().item<double>(), 1e-3 * moved) << i;
    EXPECT_GT((torch_form[i].detach() - ref[i]).abs().max().item<double>(), 0.05 * moved) << i;
  }
}
