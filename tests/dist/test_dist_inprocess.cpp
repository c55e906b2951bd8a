// Several ranks as threads of this process over the in-process communicator
// (worker/dist/inprocess_communicator.h): the collectives and their deadlines, the reducer
// (averaged gradients, buckets, rebuilt layout, overlap), sync BN, and 2 ranks x b == 1 rank x 2b
// through DistDataParallel. Plain unit tests: no mpirun; tests/dist/test_dist_mpi.cpp keeps the
// same checks over the real MPI transport.
//
// Models and batches are built on the main thread before the rank threads start: the global
// generator (torch::manual_seed) is shared by all threads.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <functional>
#include <thread>

#include "tests/dist/test_models.h"
#include "worker/dist/dist_data_parallel.h"
#include "worker/dist/inprocess_communicator.h"
#include "worker/dist/sync_batchnorm.h"

namespace effnet::dist {
namespace {

using testing::Batch;
using testing::GlobalBatch;
using testing::GlobalBatches;
using testing::MaxAbsDiff;
using testing::SgdSteps;
using testing::Slice;
using testing::SmallConvNet;
using testing::TwoBranch;

// One intra-op thread per rank thread: N ranks must not oversubscribe the machine.
class OneThreadEach : public ::testing::Environment {
 public:
  void SetUp() override { at::set_num_threads(1); }
};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new OneThreadEach);

std::vector<std::shared_ptr<Communicator>> Group(int world, double timeout_s = 30) {
  CommOptions o;
  o.timeout_s = timeout_s;
  return CreateInProcessCommunicators(world, o);
}

// Runs fn(rank) on one thread per rank and joins them.
void RunRanks(int world, const std::function<void(int)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) threads.emplace_back([&fn, r] { fn(r); });
  for (auto& t : threads) t.join();
}

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(DistConfig, DefaultsAreValidAndBadFieldsAreNamed) {
  DistConfig c;
  EXPECT_TRUE(Validate(c).ok());
  EXPECT_LT(c.reducer.first_bucket_mb, c.reducer.bucket_cap_mb);  // Note [small first bucket]
  c.backend = "gloo";
  EXPECT_NE(Validate(c).message().find("dist.backend"), std::string::npos);
  c = DistConfig{};
  c.comm.timeout_s = 0;
  EXPECT_NE(Validate(c).message().find("dist.comm.timeout_s"), std::string::npos);
  c = DistConfig{};
  c.comm.heartbeat_silence_s = c.comm.heartbeat_interval_s / 2;
  EXPECT_EQ(Validate(c).code(), StatusCode::kInvalidArgument);
  c = DistConfig{};
  c.reducer.bucket_cap_mb = -1;
  EXPECT_NE(Validate(c).message().find("dist.reducer.bucket_cap_mb"), std::string::npos);
}

TEST(InProcessCommunicator, CollectivesOnThreeRanks) {
  auto comms = Group(3);
  RunRanks(3, [&](int r) {
    Communicator& c = *comms[r];
    EXPECT_EQ(c.rank(), r);
    EXPECT_EQ(c.world_size(), 3);
    auto sum = torch::full({5}, r + 1.0, torch::kFloat);
    auto avg = torch::full({2}, r + 1.0, torch::kDouble);
    auto bf = torch::ones({3}, torch::kBFloat16);
    // Three in flight at once, waited in reverse order.
    auto w0 = c.AllReduceAsync(sum, ReduceOp::kSum);
    auto w1 = c.AllReduceAsync(avg, ReduceOp::kAvg);
    auto w2 = c.AllReduceAsync(bf, ReduceOp::kSum);
    EXPECT_EQ(w0->seq(), 0u);
    EXPECT_EQ(w2->seq(), 2u);
    EXPECT_EQ(w1->op(), OpType::kAllReduce);
    ASSERT_TRUE(w2->Wait().ok());
    ASSERT_TRUE(w1->Wait().ok());
    ASSERT_TRUE(w0->Wait().ok());
    EXPECT_TRUE(w0->IsCompleted());
    EXPECT_TRUE(torch::equal(sum, torch::full({5}, 6.0, torch::kFloat)));
    EXPECT_TRUE(torch::equal(avg, torch::full({2}, 2.0, torch::kDouble)));
    EXPECT_EQ(bf[2].item<float>(), 3.0f);
    const WorkTiming t = w0->timing();
    EXPECT_GT(t.started_ns, 0);
    EXPECT_GE(t.finished_ns, t.started_ns);

    auto b = torch::arange(4, torch::kFloat) + 10.0 * r;
    ASSERT_TRUE(c.Broadcast(b, /*root=*/1).ok());
    EXPECT_TRUE(torch::equal(b, torch::arange(4, torch::kFloat) + 10.0));

    auto g = c.AllGather(std::string(static_cast<size_t>(r) + 1, static_cast<char>('a' + r)));
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    EXPECT_EQ(*g, (std::vector<std::string>{"a", "bb", "ccc"}));
    ASSERT_TRUE(c.Barrier().ok());
    EXPECT_EQ(c.next_seq(), 6u);

    // Rejected before it is posted (on every rank, so no rank waits for it).
    auto bad = c.AllReduceAsync(torch::zeros({4, 4}).t(), ReduceOp::kSum);
    EXPECT_EQ(bad->Wait().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(c.next_seq(), 7u);
  });
}

TEST(InProcessCommunicator, MissingRankTimesOutNamingItAndTheSequenceNumber) {
  constexpr double kDeadline = 0.3;
  auto comms = Group(3, kDeadline);
  RunRanks(3, [&](int r) {
    Communicator& c = *comms[r];
    ASSERT_TRUE(c.Barrier().ok());  // #0 on every rank
    if (r == 2) return;             // rank 2 never posts #1
    auto t = torch::ones({4});
    const auto t0 = std::chrono::steady_clock::now();
    const Status s = c.AllReduce(t, ReduceOp::kSum);
    const double waited = Seconds(t0);
    EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.ToString();
    EXPECT_NE(s.message().find("rank " + std::to_string(r) + ": all_reduce #1 (4 x Float)"),
              std::string::npos)
        << s.message();
    EXPECT_NE(s.message().find("missing: rank 2 has not posted #1 (last posted #0)"),
              std::string::npos)
        << s.message();
    EXPECT_EQ(s.message().find("rank " + std::to_string(1 - r) + " has not posted"),
              std::string::npos)
        << "the other waiting rank posted #1: " << s.message();
    EXPECT_GE(waited, kDeadline - 0.01);
    EXPECT_LT(waited, kDeadline + 1.0);
    // Note [deadlines]: broken; later calls fail at once with the first error.
    const auto t1 = std::chrono::steady_clock::now();
    const Status later = c.Barrier();
    EXPECT_LT(Seconds(t1), 0.1);
    EXPECT_EQ(later.code(), StatusCode::kDeadlineExceeded);
    EXPECT_NE(later.message().find("barrier #2 not run: communicator broken by"), std::string::npos)
        << later.message();
  });
}

TEST(InProcessCommunicator, DivergedCollectivesFailOnEveryRank) {
  auto comms = Group(2, 5.0);
  RunRanks(2, [&](int r) {
    Status s = r == 0 ? comms[r]->Barrier() : comms[r]->AllReduce(torch::ones({3}), ReduceOp::kSum);
    EXPECT_EQ(s.code(), StatusCode::kInternal) << s.ToString();
    EXPECT_NE(s.message().find("collective #0 differs across ranks"), std::string::npos)
        << s.message();
    EXPECT_NE(s.message().find("posted barrier"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("posted all_reduce(3 x Float, sum)"), std::string::npos)
        << s.message();
  });
}

// Reference: the mean over `world` ranks of each rank's local gradient of SmallConvNet(3) on its
// slice of `global` (local BN statistics), per parameter.
std::vector<at::Tensor> MeanOfLocalGradients(const Batch& global, int world, int64_t b) {
  std::vector<at::Tensor> mean;
  for (int r = 0; r < world; ++r) {
    auto ref = SmallConvNet(3);
    const Batch local = Slice(global, r, b);
    torch::nn::functional::cross_entropy(ref->forward(local.x), local.y).backward();
    auto ps = ref->parameters();
    for (size_t i = 0; i < ps.size(); ++i) {
      if (r == 0) mean.push_back(torch::zeros_like(ps[i]));
      mean[i] += ps[i].grad() / world;
    }
  }
  return mean;
}

// One data-parallel step of `model` on `local`: forward, loss, backward, gradient average.
void LocalStep(DistDataParallel& dp, torch::nn::Sequential& model, const Batch& local) {
  auto loss = torch::nn::functional::cross_entropy(model->forward(local.x), local.y);
  ASSERT_TRUE(dp.BeforeBackward().ok());
  loss.backward();
  const Status s = dp.AfterBackward();
  ASSERT_TRUE(s.ok()) << s.ToString();
}

// Each parameter's gradient equals `mean` (1e-6, relative to the larger of 1 and its size).
void ExpectGradientsAre(torch::nn::Sequential& model, const std::vector<at::Tensor>& mean,
                        const std::string& where) {
  auto ps = model->parameters();
  for (size_t i = 0; i < ps.size(); ++i) {
    const double scale = std::max(1.0, mean[i].abs().max().item<double>());
    EXPECT_LE((ps[i].grad() - mean[i]).abs().max().item<double>(), 1e-6 * scale)
        << where << " param " << i;
  }
}

TEST(Reducer, ThreeRanksAverageGradientsInEqualBuckets) {
  constexpr int kWorld = 3;
  constexpr int64_t kB = 4;
  const Batch global = GlobalBatch(0, kWorld * kB);
  const std::vector<at::Tensor> mean = MeanOfLocalGradients(global, kWorld, kB);
  std::vector<torch::nn::Sequential> models;
  for (int r = 0; r < kWorld; ++r) models.push_back(SmallConvNet(r == 0 ? 3 : 30 + r));
  auto comms = Group(kWorld);
  std::vector<std::vector<std::vector<int64_t>>> layouts(kWorld);
  RunRanks(kWorld, [&](int r) {
    DistConfig cfg;
    cfg.reducer.first_bucket_mb = 0.0002;  // head only: several buckets
    cfg.reducer.bucket_cap_mb = 0.002;
    DistDataParallel dp(cfg, comms[r]);
    ASSERT_TRUE(dp.Attach(*models[r]).ok());  // ranks 1, 2 get rank 0's weights
    ASSERT_NO_FATAL_FAILURE(LocalStep(dp, models[r], Slice(global, r, kB)));
    ExpectGradientsAre(models[r], mean, "rank " + std::to_string(r));
    EXPECT_TRUE(dp.reducer()->rebuilt());
    layouts[r] = dp.reducer()->layout();
  });
  ASSERT_GE(layouts[0].size(), 3u);
  EXPECT_EQ(layouts[1], layouts[0]);
  EXPECT_EQ(layouts[2], layouts[0]);
}

// A channels_last weight gets its averaged gradient in a channels_last slot (SlotAlias in
// reducer.cpp), before and after the step-0 rebuild, with the same values as the NCHW reference.
TEST(Reducer, ChannelsLastWeightsGetGradientsInTheirOwnLayout) {
  constexpr int kWorld = 2;
  constexpr int64_t kB = 4;
  const Batch global = GlobalBatch(0, kWorld * kB);
  const std::vector<at::Tensor> mean = MeanOfLocalGradients(global, kWorld, kB);
  std::vector<torch::nn::Sequential> models;
  for (int r = 0; r < kWorld; ++r) {
    models.push_back(SmallConvNet(3));
    for (auto& p : models[r]->parameters()) {
      if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
    }
  }
  auto comms = Group(kWorld);
  RunRanks(kWorld, [&](int r) {
    DistDataParallel dp(DistConfig{}, comms[r]);
    ASSERT_TRUE(dp.Attach(*models[r]).ok());
    const Batch local = Slice(global, r, kB);
    for (int step = 0; step < 2; ++step) {  // step 1 runs in the rebuilt buckets
      ASSERT_NO_FATAL_FAILURE(LocalStep(dp, models[r], local));
      ExpectGradientsAre(models[r], mean,
                         "rank " + std::to_string(r) + " step " + std::to_string(step));
      auto ps = models[r]->parameters();
      int channels_last = 0;
      for (size_t i = 0; i < ps.size(); ++i) {
        EXPECT_EQ(ps[i].grad().strides(), ps[i].strides()) << "step " << step << " param " << i;
        channels_last += ps[i].dim() == 4 && !ps[i].is_contiguous();
      }
      EXPECT_GT(channels_last, 0);
    }
  });
}

std::vector<int64_t> Flatten(const std::vector<std::vector<int64_t>>& layout) {
  std::vector<int64_t> out;
  for (const auto& b : layout) out.insert(out.end(), b.begin(), b.end());
  return out;
}

// Initial buckets in reverse parameter order; after step 0 every rank rebuilds in RANK 0's
// observed order (Note [bucket order]), and the averaged gradients agree bit for bit.
TEST(Reducer, RebuildsInRank0ReadyOrderOnEveryRank) {
  std::vector<TwoBranch> models{TwoBranch(false), TwoBranch(true)};
  std::vector<at::Tensor> inputs;
  for (int r = 0; r < 2; ++r) {
    torch::manual_seed(5 + r);
    inputs.push_back(torch::randn({4, 6}));
  }
  auto comms = Group(2);
  std::vector<std::vector<int64_t>> initial(2), observed(2), rebuilt(2);
  std::vector<std::vector<at::Tensor>> grads(2);
  RunRanks(2, [&](int r) {
    DistConfig cfg;
    cfg.reducer.first_bucket_mb = 1e-6;  // one tensor per bucket: the layout is the order
    cfg.reducer.bucket_cap_mb = 1e-6;
    DistDataParallel dp(cfg, comms[r]);
    ASSERT_TRUE(dp.Attach(*models[r]).ok());
    initial[r] = Flatten(dp.reducer()->layout());
    for (int step = 0; step < 2; ++step) {
      auto loss = models[r]->forward(inputs[r]).square().mean();
      ASSERT_TRUE(dp.BeforeBackward().ok());
      loss.backward();
      ASSERT_TRUE(dp.AfterBackward().ok());
      if (step == 0) EXPECT_TRUE(dp.reducer()->rebuilt());
    }
    observed[r] = dp.reducer()->observed_order();
    rebuilt[r] = Flatten(dp.reducer()->layout());
    for (const auto& p : models[r]->parameters()) grads[r].push_back(p.grad().clone());
  });
  EXPECT_EQ(initial[0], (std::vector<int64_t>{5, 4, 3, 2, 1, 0}));
  EXPECT_EQ(initial[1], initial[0]);
  EXPECT_NE(observed[0], observed[1]) << "the swapped branch should change rank 1's ready order";
  EXPECT_EQ(rebuilt[0], observed[0]);
  EXPECT_EQ(rebuilt[1], observed[0]);
  for (size_t i = 0; i < grads[0].size(); ++i) EXPECT_TRUE(torch::equal(grads[0][i], grads[1][i]));
}

// The first bucket is launched, and its all-reduce posted, while backward still produces
// gradients (Note [small first bucket] in worker/dist/dist_config.h).
TEST(Reducer, FirstBucketIsLaunchedDuringBackward) {
  namespace nn = torch::nn;
  std::vector<nn::Sequential> models;
  for (int r = 0; r < 2; ++r) {
    torch::manual_seed(3);
    models.emplace_back(nn::Conv2d(nn::Conv2dOptions(3, 16, 3).padding(1)), nn::ReLU(),
                        nn::Conv2d(nn::Conv2dOptions(16, 16, 3).padding(1)), nn::ReLU(),
                        nn::Conv2d(nn::Conv2dOptions(16, 16, 3).padding(1)), nn::ReLU(),
                        nn::AdaptiveAvgPool2d(1), nn::Flatten(), nn::Linear(16, 10));
  }
  torch::manual_seed(4);
  auto x = torch::randn({4, 3, 24, 24});
  auto y = torch::randint(0, 10, {4}, torch::kLong);
  auto comms = Group(2);
  RunRanks(2, [&](int r) {
    DistConfig cfg;
    cfg.reducer.first_bucket_mb = 0.001;  // the head's parameters only
    cfg.reducer.bucket_cap_mb = 0.02;
    DistDataParallel dp(cfg, comms[r]);
    ASSERT_TRUE(dp.Attach(*models[r]).ok());
    for (int step = 0; step < 3; ++step) {
      auto loss = torch::nn::functional::cross_entropy(models[r]->forward(x), y);
      ASSERT_TRUE(dp.BeforeBackward().ok());
      loss.backward();
      const int64_t backward_end = NowNs();
      ASSERT_TRUE(dp.AfterBackward().ok());
      int64_t launch0 = 0, start0 = 0, end0 = 0, last_ready = 0;
      for (const auto& e : dp.reducer()->events()) {
        if (e.kind == ReducerEvent::kGradReady) last_ready = std::max(last_ready, e.t_ns);
        if (e.index != 0) continue;
        if (e.kind == ReducerEvent::kBucketLaunch) launch0 = e.t_ns;
        if (e.kind == ReducerEvent::kCommStart) start0 = e.t_ns;
        if (e.kind == ReducerEvent::kCommEnd) end0 = e.t_ns;
      }
      ASSERT_GT(launch0, 0);
      EXPECT_LT(launch0, last_ready) << "rank " << r << " step " << step;
      EXPECT_LE(launch0, start0);
      EXPECT_LT(start0, backward_end);
      EXPECT_GE(end0, start0);
    }
  });
}

TEST(SyncBatchNorm, TwoRanksOfBMatchOneRankOf2B) {
  constexpr int64_t kB = 4;
  torch::manual_seed(0);
  auto opts = torch::nn::BatchNorm2dOptions(6).momentum(0.2);
  torch::nn::BatchNorm2d ref(opts);
  {
    torch::NoGradGuard g;
    ref->weight.uniform_(0.5, 1.5);
    ref->bias.uniform_(-1, 1);
  }
  std::vector<torch::nn::BatchNorm2d> src;
  for (int r = 0; r < 2; ++r) {
    src.emplace_back(opts);
    torch::NoGradGuard g;
    src[r]->weight.copy_(ref->weight);
    src[r]->bias.copy_(ref->bias);
  }
  auto x = (torch::randn({2 * kB, 6, 5, 3}) * 3 + 1).requires_grad_(true);
  auto gy = torch::randn({2 * kB, 6, 5, 3});
  auto y = ref->forward(x);
  (y * gy).sum().backward();

  auto comms = Group(2);
  std::vector<at::Tensor> ys(2), xgrads(2), wgrads(2), bgrads(2), means(2), vars(2);
  RunRanks(2, [&](int r) {
    SyncBatchNorm2d sync(*src[r], comms[r]);
    auto xr = x.detach().narrow(0, r * kB, kB).clone().requires_grad_(true);
    auto yr = sync->forward(xr);
    (yr * gy.narrow(0, r * kB, kB)).sum().backward();
    ys[r] = yr.detach();
    xgrads[r] = xr.grad();
    wgrads[r] = sync->weight.grad();
    bgrads[r] = sync->bias.grad();
    means[r] = sync->running_mean.clone();
    vars[r] = sync->running_var.clone();
  });
  auto max_diff = [](const at::Tensor& a, const at::Tensor& b) {
    return (a - b).abs().max().item<double>();
  };
  EXPECT_LT(max_diff(torch::cat(ys), y.detach()), 1e-5);
  EXPECT_LT(max_diff(torch::cat(xgrads), x.grad()), 1e-5);
  // Weight and bias gradients are local sums (the reducer averages them, Note [sync BN math]).
  EXPECT_LT(max_diff(wgrads[0] + wgrads[1], ref->weight.grad()), 1e-4);
  EXPECT_LT(max_diff(bgrads[0] + bgrads[1], ref->bias.grad()), 1e-4);
  for (int r = 0; r < 2; ++r) {
    EXPECT_LT(max_diff(means[r], ref->running_mean), 1e-6) << "rank " << r;
    EXPECT_LT(max_diff(vars[r], ref->running_var), 1e-5) << "rank " << r;
  }
}

// 2 ranks x 8 == 1 rank x 16 over SGD steps (sync BN on), parameters and BN buffers, within the
// tolerance of the mpirun test (tests/dist/test_dist_mpi.cpp); the ranks agree bit for bit.
TEST(DistDataParallel, TwoRanksOf8MatchOneRankOf16) {
  constexpr int kSteps = 6;
  const std::vector<Batch> batches = GlobalBatches(kSteps, 16);
  auto reference = SmallConvNet(0);
  SgdSteps(reference, nullptr, batches, 0, 1);
  EXPECT_GT(MaxAbsDiff(*SmallConvNet(0), *reference), 1e-2) << "training must move the parameters";

  // sync_batchnorm on, then off (the control: per-rank batch statistics must make it differ).
  for (const bool sync_bn : {true, false}) {
    std::vector<torch::nn::Sequential> models;
    for (int r = 0; r < 2; ++r) models.push_back(SmallConvNet(r == 0 ? 0 : 7));  // Attach fixes 1
    auto comms = Group(2);
    RunRanks(2, [&](int r) {
      DistConfig cfg;
      cfg.sync_batchnorm = sync_bn;
      cfg.reducer.first_bucket_mb = 0.0002;  // head only: several buckets
      cfg.reducer.bucket_cap_mb = 0.002;
      DistDataParallel dp(cfg, comms[r]);
      ASSERT_TRUE(dp.Attach(*models[r]).ok());
      EXPECT_GE(dp.reducer()->layout().size(), 3u);
      SgdSteps(models[r], &dp, batches, r, 2);
    });
    const double diff = MaxAbsDiff(*models[0], *reference);
    std::cout << "sync_batchnorm " << sync_bn
              << ": max |2x8 - 1x16| over params and BN buffers = " << diff << "\n";
    const auto p0 = models[0]->parameters(), p1 = models[1]->parameters();
    for (size_t i = 0; i < p0.size(); ++i) {
      EXPECT_TRUE(torch::equal(p0[i], p1[i])) << "the ranks must agree bit for bit: param " << i;
    }
    if (sync_bn) {
      EXPECT_EQ(MaxAbsDiff(*models[0], *models[1]), 0.0) << "BN buffers agree too";
      EXPECT_LE(diff, 1e-5);
    } else {
      EXPECT_GT(diff, 1e-4);
    }
  }
}

// A rank that skips a step: the other's AfterBackward returns (does not throw) DeadlineExceeded
// naming itself, the operation, the missing rank and the sequence number.
TEST(DistDataParallel, AfterBackwardReturnsTheMissingRank) {
  std::vector<torch::nn::Sequential> models{SmallConvNet(0), SmallConvNet(0)};
  const Batch batch = GlobalBatch(0, 8);
  auto comms = Group(2, 0.3);
  RunRanks(2, [&](int r) {
    DistDataParallel dp(DistConfig{}, comms[r]);
    ASSERT_TRUE(dp.Attach(*models[r]).ok());
    if (r == 1) return;  // never runs the step
    auto loss = torch::nn::functional::cross_entropy(models[r]->forward(batch.x), batch.y);
    ASSERT_TRUE(dp.BeforeBackward().ok());
    const std::string first = "#" + std::to_string(dp.grad_comm().next_seq());  // bucket 0's
    loss.backward();
    const Status s = dp.AfterBackward();
    EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.ToString();
    EXPECT_EQ(s.message().rfind("rank 0: AfterBackward: reducer step 0, bucket 0", 0), 0u)
        << s.message();
    EXPECT_NE(s.message().find("all_reduce " + first), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("rank 1 has not posted " + first), std::string::npos) << s.message();
    const auto sum = dp.AllReduceSum({1.0});
    EXPECT_FALSE(sum.ok());
    EXPECT_NE(sum.status().message().find("rank 0: AllReduceSum"), std::string::npos)
        << sum.status().message();
  });
}

}  // namespace
}  // namespace effnet::dist
