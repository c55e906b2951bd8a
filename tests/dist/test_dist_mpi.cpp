// 2-rank tests (run under mpirun -np 2): every TEST runs on both ranks and is collective.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>

#include "tests/dist/test_models.h"
#include "worker/dist/create.h"
#include "worker/dist/dist_data_parallel.h"
#include "worker/dist/mpi_communicator.h"
#include "worker/dist/sync_batchnorm.h"

namespace effnet::dist {
namespace {

using testing::GlobalBatches;
using testing::MaxAbsDiff;
using testing::SgdSteps;
using testing::SmallConvNet;
using testing::TwoBranch;

std::shared_ptr<Communicator> Comm(double timeout_s = 30) {
  CommOptions o;
  o.timeout_s = timeout_s;
  return CreateMpiCommunicator(o).ValueOrThrow();
}

std::string Checksum(torch::nn::Module& m) {
  std::ostringstream s;
  s.precision(17);
  for (const auto& p : m.parameters()) s << p.to(torch::kDouble).sum().item<double>() << ",";
  for (const auto& b : m.buffers()) s << b.to(torch::kDouble).sum().item<double>() << ",";
  return s.str();
}

// (1) 2 ranks x batch b == 1 rank x batch 2b (sync BN on), parameters and BN buffers.
TEST(DistMpi, TwoRanksMatchOneRankWithDoubleBatch) {
  auto host = Comm();
  const int rank = host->rank(), world = host->world_size();
  ASSERT_EQ(world, 2);
  constexpr int kSteps = 6;
  constexpr int64_t kGlobal = 16;

  auto reference = SmallConvNet(0);
  SgdSteps(reference, nullptr, GlobalBatches(kSteps, kGlobal), 0, 1);

  DistConfig cfg;
  cfg.sync_batchnorm = true;
  cfg.reducer.first_bucket_mb = 0.0002;  // head only: several buckets
  cfg.reducer.bucket_cap_mb = 0.002;
  cfg.comm.timeout_s = 30;
  auto fresh = SmallConvNet(0);
  EXPECT_GT(MaxAbsDiff(*fresh, *reference), 1e-2) << "training must move the parameters";
  // Rank 1 starts from other weights: Attach must overwrite them with rank 0's.
  auto model0 = SmallConvNet(rank == 0 ? 0 : 7);
  DistDataParallel dp0(cfg, host);
  ASSERT_TRUE(dp0.Attach(*model0).ok());
  EXPECT_GE(dp0.reducer()->layout().size(), 3u);
  SgdSteps(model0, &dp0, GlobalBatches(kSteps, kGlobal), rank, world);
  const double diff = MaxAbsDiff(*model0, *reference);
  std::cout << "rank " << rank << ": max |2x" << kGlobal / 2 << " - 1x" << kGlobal
            << "| over params and BN buffers = " << diff << "\n";
  EXPECT_LE(diff, 1e-5);

  // Control: the same run without sync BN differs (per-rank batch statistics), so the check above
  // can fail.
  DistConfig plain = cfg;
  plain.sync_batchnorm = false;
  auto model1 = SmallConvNet(rank == 0 ? 0 : 7);
  DistDataParallel dp1(plain, host);
  ASSERT_TRUE(dp1.Attach(*model1).ok());
  SgdSteps(model1, &dp1, GlobalBatches(kSteps, kGlobal), rank, world);
  EXPECT_GT(MaxAbsDiff(*model1, *reference), 1e-4);
}

// bf16 compression: same run, close within bf16 precision but not bit-equal.
TEST(DistMpi, Bf16CompressionStaysClose) {
  auto host = Comm();
  const int rank = host->rank(), world = host->world_size();
  auto reference = SmallConvNet(0);
  SgdSteps(reference, nullptr, GlobalBatches(3, 16), 0, 1);
  DistConfig cfg;
  cfg.sync_batchnorm = true;
  cfg.reducer.compress_bf16 = true;
  auto model = SmallConvNet(0);
  DistDataParallel dp(cfg, host);
  ASSERT_TRUE(dp.Attach(*model).ok());
  SgdSteps(model, &dp, GlobalBatches(3, 16), rank, world);
  const double diff = MaxAbsDiff(*model, *reference);
  std::cout << "rank " << rank << ": bf16-compressed max diff = " << diff << "\n";
  EXPECT_LE(diff, 2e-2);
  EXPECT_GT(diff, 0.0);
}

// (2) The first bucket's all-reduce starts before backward ends.
TEST(DistMpi, FirstBucketAllReduceOverlapsBackward) {
  auto host = Comm();
  namespace nn = torch::nn;
  torch::manual_seed(3);
  nn::Sequential model(nn::Conv2d(nn::Conv2dOptions(3, 32, 3).padding(1)), nn::ReLU(),
                       nn::Conv2d(nn::Conv2dOptions(32, 32, 3).padding(1)), nn::ReLU(),
                       nn::Conv2d(nn::Conv2dOptions(32, 32, 3).padding(1)), nn::ReLU(),
                       nn::Conv2d(nn::Conv2dOptions(32, 32, 3).padding(1)), nn::ReLU(),
                       nn::AdaptiveAvgPool2d(1), nn::Flatten(), nn::Linear(32, 10));
  DistConfig cfg;
  cfg.reducer.first_bucket_mb = 0.001;  // the head's parameters only
  cfg.reducer.bucket_cap_mb = 0.02;
  DistDataParallel dp(cfg, host);
  ASSERT_TRUE(dp.Attach(*model).ok());
  auto x = torch::randn({8, 3, 48, 48});
  auto y = torch::randint(0, 10, {8}, torch::kLong);
  for (int step = 0; step < 3; ++step) {
    auto loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    const int64_t backward_start = NowNs();
    ASSERT_TRUE(dp.BeforeBackward().ok());
    loss.backward();
    const int64_t backward_end = NowNs();
    ASSERT_TRUE(dp.AfterBackward().ok());
    int64_t launch0 = 0, start0 = 0, end0 = 0;
    for (const auto& e : dp.reducer()->events()) {
      if (e.index != 0) continue;
      if (e.kind == ReducerEvent::kBucketLaunch) launch0 = e.t_ns;
      if (e.kind == ReducerEvent::kCommStart) start0 = e.t_ns;
      if (e.kind == ReducerEvent::kCommEnd) end0 = e.t_ns;
    }
    std::cout << "rank " << host->rank() << " step " << step << ": backward "
              << (backward_end - backward_start) / 1e6 << " ms; bucket 0 launched at +"
              << (launch0 - backward_start) / 1e6 << " ms, all-reduce started at +"
              << (start0 - backward_start) / 1e6 << " ms, finished at +"
              << (end0 - backward_start) / 1e6 << " ms\n";
    ASSERT_GT(launch0, 0);
    ASSERT_GT(start0, 0);
    EXPECT_LT(launch0, backward_end);
    EXPECT_LT(start0, backward_end);
  }
}

// (4a) Broadcast from rank 0 at Attach, layout checks, and the mismatch error naming the rank.
TEST(DistMpi, AttachBroadcastsRank0AndChecksShapes) {
  auto host = Comm();
  const int rank = host->rank();
  auto model = SmallConvNet(50 + rank);
  for (auto& b : model->buffers()) b.fill_(rank + 1.0);  // buffers differ too
  const std::string before = Checksum(*model);
  auto all_before = host->AllGather(before).ValueOrThrow();
  EXPECT_NE(all_before[0], all_before[1]);
  DistConfig cfg;
  DistDataParallel dp(cfg, host);
  ASSERT_TRUE(dp.Attach(*model).ok());
  auto all_after = host->AllGather(Checksum(*model)).ValueOrThrow();
  EXPECT_EQ(all_after[0], all_before[0]) << "rank 0 keeps its values";
  EXPECT_EQ(all_after[1], all_before[0]) << "rank 1 receives rank 0's values";

  // A rank with a different model: every rank fails, and the message names rank 1.
  auto odd = rank == 1 ? SmallConvNet(1, /*classes=*/6) : SmallConvNet(1);
  DistDataParallel dp2(cfg, host);
  const Status s = dp2.Attach(*odd);
  ASSERT_FALSE(s.ok()) << "Attach accepted different models";
  EXPECT_NE(s.message().find("rank " + std::to_string(rank) + ": Attach"), std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("rank 1 has"), std::string::npos) << s.message();
}

std::string Join(const std::vector<int64_t>& v) {
  std::string s;
  for (auto i : v) s += std::to_string(i) + " ";
  return s;
}

// (4b) Initial buckets in reverse parameter order; after step 0 every rank rebuilds in RANK 0's
// observed order, and the averaged gradients agree across ranks.
TEST(DistMpi, BucketsRebuiltInRank0ReadyOrder) {
  auto host = Comm();
  const int rank = host->rank();
  TwoBranch model(/*swap=*/rank == 1);
  DistConfig cfg;
  cfg.reducer.first_bucket_mb = 1e-6;  // one tensor per bucket: the layout is the order
  cfg.reducer.bucket_cap_mb = 1e-6;
  DistDataParallel dp(cfg, host);
  ASSERT_TRUE(dp.Attach(*model).ok());
  std::vector<int64_t> initial;
  for (const auto& b : dp.reducer()->layout()) initial.insert(initial.end(), b.begin(), b.end());
  EXPECT_EQ(Join(initial), "5 4 3 2 1 0 ");  // reverse registration order
  torch::manual_seed(5 + rank);
  auto x = torch::randn({4, 6});
  for (int step = 0; step < 2; ++step) {
    auto loss = model->forward(x).square().mean();
    ASSERT_TRUE(dp.BeforeBackward().ok());
    loss.backward();
    ASSERT_TRUE(dp.AfterBackward().ok());
    if (step == 0) {
      ASSERT_TRUE(dp.reducer()->rebuilt());
    }
  }
  auto orders = host->AllGather(Join(dp.reducer()->observed_order())).ValueOrThrow();
  std::cout << "rank " << rank << ": ready order rank0 [" << orders[0] << "] rank1 [" << orders[1]
            << "]\n";
  EXPECT_NE(orders[0], orders[1]) << "the swapped branch should change rank 1's ready order";
  std::vector<int64_t> rebuilt;
  for (const auto& b : dp.reducer()->layout()) rebuilt.insert(rebuilt.end(), b.begin(), b.end());
  EXPECT_EQ(Join(rebuilt), orders[0]);
  std::ostringstream grads;
  grads.precision(17);
  for (const auto& p : model->parameters())
    grads << p.grad().to(torch::kDouble).sum().item<double>() << ",";
  auto all = host->AllGather(grads.str()).ValueOrThrow();
  EXPECT_EQ(all[0], all[1]);
}

// Unused and frozen parameters: no hang, zero slot for the unused one, frozen skipped.
TEST(DistMpi, UnusedAndFrozenParameters) {
  auto host = Comm();
  torch::manual_seed(2);
  auto used = torch::nn::Linear(4, 4);
  auto unused = torch::nn::Linear(4, 4);
  auto frozen = torch::nn::Linear(4, 4);
  torch::nn::Sequential model;
  model->register_module("used", used);
  model->register_module("unused", unused);
  model->register_module("frozen", frozen);
  for (auto& p : frozen->parameters()) p.set_requires_grad(false);
  DistDataParallel dp(DistConfig{}, host);
  ASSERT_TRUE(dp.Attach(*model).ok());
  int64_t bucketed = 0;
  for (const auto& b : dp.reducer()->layout()) bucketed += static_cast<int64_t>(b.size());
  EXPECT_EQ(bucketed, 4);
  auto x = torch::ones({2, 4}) * (host->rank() + 1);
  auto loss = used->forward(frozen->forward(x)).sum();
  ASSERT_TRUE(dp.BeforeBackward().ok());
  loss.backward();
  ASSERT_TRUE(dp.AfterBackward().ok());
  EXPECT_EQ(unused->weight.grad().abs().sum().item<double>(), 0.0);
  EXPECT_FALSE(frozen->weight.grad().defined());
  EXPECT_GT(used->weight.grad().abs().sum().item<double>(), 0.0);
}

}  // namespace
}  // namespace effnet::dist

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  at::set_num_threads(1);
  const auto world = effnet::dist::InitMpi();
  std::cout << "rank " << world.rank << " of " << world.world_size << "\n";
  return RUN_ALL_TESTS();
}
