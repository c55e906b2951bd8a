// Single-process tests: bucket layout, sync BN math at world size 1, reducer bookkeeping.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/dist/test_models.h"
#include "worker/dist/create.h"
#include "worker/dist/dist_data_parallel.h"
#include "worker/dist/reducer.h"
#include "worker/dist/sync_batchnorm.h"
#include "worker/model/efficientnet.h"

namespace effnet::dist {
namespace {

std::shared_ptr<Communicator> WorldOfOne() {
  InitMpi();
  return CreateMpiCommunicator(CommOptions{}).ValueOrThrow();
}

TEST(ComputeBuckets, FirstBucketSmallThenCapInGivenOrder) {
  // 4 float params of 1 KiB each, then one double param.
  std::vector<at::Tensor> p;
  for (int i = 0; i < 4; ++i) p.push_back(torch::zeros({256}));
  p.push_back(torch::zeros({128}, torch::kDouble));
  const std::vector<int64_t> order{3, 2, 1, 0, 4};
  auto b = ComputeBuckets(p, order, /*first=*/1024, /*cap=*/2048);
  ASSERT_EQ(b.size(), 4u);
  EXPECT_EQ(b[0], (std::vector<int64_t>{3}));     // first bucket closes at 1 KiB
  EXPECT_EQ(b[1], (std::vector<int64_t>{2, 1}));  // then 2 KiB
  EXPECT_EQ(b[2], (std::vector<int64_t>{0}));     // leftover float
  EXPECT_EQ(b[3], (std::vector<int64_t>{4}));     // double in its own bucket, last by order
}

TEST(ComputeBuckets, DtypesNeverShareABucketAndOrderFollowsFirstMember) {
  std::vector<at::Tensor> p{torch::zeros({10}, torch::kDouble), torch::zeros({10}),
                            torch::zeros({10}, torch::kDouble), torch::zeros({10})};
  auto b = ComputeBuckets(p, {0, 1, 2, 3}, 1 << 20, 1 << 20);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0], (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(b[1], (std::vector<int64_t>{1, 3}));
}

TEST(SyncBatchNorm, WorldOfOneMatchesBatchNormForwardBackwardAndStats) {
  auto comm = WorldOfOne();
  torch::manual_seed(0);
  torch::nn::BatchNorm2d ref(torch::nn::BatchNorm2dOptions(6).momentum(0.2));
  torch::nn::BatchNorm2d src(torch::nn::BatchNorm2dOptions(6).momentum(0.2));
  torch::NoGradGuard{};
  {
    torch::NoGradGuard g;
    ref->weight.uniform_(0.5, 1.5);
    ref->bias.uniform_(-1, 1);
    src->weight.copy_(ref->weight);
    src->bias.copy_(ref->bias);
  }
  SyncBatchNorm2d sync(*src, comm);
  auto x1 = (torch::randn({5, 6, 7, 3}) * 3 + 1).requires_grad_(true);
  auto x2 = x1.detach().clone().requires_grad_(true);
  auto g = torch::randn({5, 6, 7, 3});
  auto y1 = ref->forward(x1);
  auto y2 = sync->forward(x2);
  EXPECT_LT((y1 - y2).abs().max().item<double>(), 1e-5);
  (y1 * g).sum().backward();
  (y2 * g).sum().backward();
  EXPECT_LT((x1.grad() - x2.grad()).abs().max().item<double>(), 1e-5);
  EXPECT_LT((ref->weight.grad() - sync->weight.grad()).abs().max().item<double>(), 1e-4);
  EXPECT_LT((ref->bias.grad() - sync->bias.grad()).abs().max().item<double>(), 1e-4);
  EXPECT_LT((ref->running_var - sync->running_var).abs().max().item<double>(), 1e-5);
  EXPECT_LT((ref->running_mean - sync->running_mean).abs().max().item<double>(), 1e-6);
  // Shares the source's tensors.
  EXPECT_EQ(sync->weight.data_ptr(), src->weight.data_ptr());
  // Eval mode uses running statistics.
  ref->eval();
  sync->eval();
  EXPECT_LT((ref->forward(x1) - sync->forward(x1)).abs().max().item<double>(), 1e-5);
}

TEST(SyncBatchNorm, ConvertsSequentialAndRejectsTypedMembers) {
  auto comm = WorldOfOne();
  auto net = testing::SmallConvNet(0);
  auto n = ConvertSyncBatchNorm(*net, comm);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 2);
  int bn = 0, sync = 0;
  for (const auto& m : net->modules(false)) {
    bn += m->as<torch::nn::BatchNorm2dImpl>() != nullptr;
    sync += m->as<SyncBatchNorm2dImpl>() != nullptr;
  }
  EXPECT_EQ(bn, 0);
  EXPECT_EQ(sync, 2);
  EXPECT_EQ(net->forward(torch::randn({2, 3, 8, 8})).sizes(), (std::vector<int64_t>{2, 5}));
  EXPECT_TRUE(net->named_parameters().contains("1.weight"));

  struct Typed : torch::nn::Module {
    Typed() { bn = register_module("bn", torch::nn::BatchNorm2d(4)); }
    torch::nn::BatchNorm2d bn{nullptr};
  };
  Typed typed;
  auto bad = ConvertSyncBatchNorm(typed, comm);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("bn"), std::string::npos);
}

TEST(SyncBatchNorm, ConvertsEfficientNetV2AndMatchesPlainBnAtWorldOfOne) {
  // Note [replaceable BN forward]: the model's typed BN members are converted in place.
  auto comm = WorldOfOne();
  model::ModelConfig cfg;
  cfg.num_classes = 4;
  cfg.extra_width = 0.25;
  cfg.extra_depth = 0.25;
  cfg.drop_path = 0.0;
  cfg.dropout = 0.0;
  torch::manual_seed(3);
  model::EfficientNetV2 plain(cfg), synced(cfg);
  {
    torch::NoGradGuard g;
    auto src = plain->named_parameters();
    for (auto& p : synced->named_parameters()) p.value().copy_(src[p.key()]);
  }
  int num_bn = 0;
  for (const auto& m : plain->modules(false))
    num_bn += m->as<torch::nn::BatchNorm2dImpl>() != nullptr;
  auto n = ConvertSyncBatchNorm(*synced, comm);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, num_bn);
  EXPECT_GT(num_bn, 10);
  auto x = torch::randn({3, 3, 32, 32});
  auto y1 = plain->forward(x);
  auto y2 = synced->forward(x);
  EXPECT_LT((y1 - y2).abs().max().item<double>(), 1e-4);
  y1.sum().backward();
  y2.sum().backward();
  const auto g1 = plain->named_parameters()["conv_stem.weight"].grad();
  const auto g2 = synced->named_parameters()["conv_stem.weight"].grad();
  // Statistics via sum/sum-of-squares (sync BN) vs Welford (native BN) differ by fp32 rounding,
  // which 21 blocks amplify to ~1e-4 relative; a wrong backward term would be O(1).
  EXPECT_LT((g1 - g2).abs().max().item<double>(), 1e-3 * g1.abs().max().item<double>());
}

// The NCCL reducer at world 1 on one GPU (NCCL refuses two ranks on one GPU): gradients after
// the bucketed ncclAllReduce equal a plain backward's. Run by `ctest -L gpu` on a GPU machine;
// skipped elsewhere (and on builds without NCCL).
TEST(Cuda, NcclReducerAtWorldOneKeepsThePlainGradients) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  if (!HaveNccl()) GTEST_SKIP() << "built without NCCL";
  auto comm = WorldOfOne();
  auto a = testing::SmallConvNet(3), b = testing::SmallConvNet(3);
  a->to(torch::kCUDA);
  b->to(torch::kCUDA);
  DistConfig cfg;
  cfg.backend = "nccl";
  cfg.reducer.first_bucket_mb = 0.0002;
  cfg.reducer.bucket_cap_mb = 0.002;
  DistDataParallel dp(cfg, comm);
  const Status attached = dp.Attach(*b);
  ASSERT_TRUE(attached.ok()) << attached.ToString();
  EXPECT_EQ(dp.grad_comm().backend(), "nccl");
  for (int step = 0; step < 3; ++step) {  // the layout is rebuilt after the first step
    auto batch = testing::GlobalBatch(step, 8);
    const auto x = batch.x.to(torch::kCUDA), y = batch.y.to(torch::kCUDA);
    for (auto& p : a->parameters()) p.mutable_grad() = torch::Tensor();
    torch::nn::functional::cross_entropy(a->forward(x), y).backward();
    ASSERT_TRUE(dp.BeforeBackward().ok());
    torch::nn::functional::cross_entropy(b->forward(x), y).backward();
    const Status done = dp.AfterBackward();
    ASSERT_TRUE(done.ok()) << done.ToString();
    auto pa = a->parameters(), pb = b->parameters();
    for (size_t i = 0; i < pa.size(); ++i) {
      EXPECT_LT((pa[i].grad() - pb[i].grad()).abs().max().item<double>(), 1e-6)
          << "step " << step << " parameter " << i;
    }
  }
}

TEST(Reducer, WorldOfOneKeepsGradientsAsBucketViews) {
  auto comm = WorldOfOne();
  auto a = testing::SmallConvNet(3), b = testing::SmallConvNet(3);
  DistConfig cfg;
  cfg.reducer.first_bucket_mb = 0.0002;  // head only: several buckets
  cfg.reducer.bucket_cap_mb = 0.002;
  DistDataParallel dp(cfg, comm);
  ASSERT_TRUE(dp.Attach(*b).ok());
  auto batch = testing::GlobalBatch(0, 8);
  torch::nn::functional::cross_entropy(a->forward(batch.x), batch.y).backward();
  auto loss = torch::nn::functional::cross_entropy(b->forward(batch.x), batch.y);
  ASSERT_TRUE(dp.BeforeBackward().ok());
  loss.backward();
  ASSERT_TRUE(dp.AfterBackward().ok());
  auto pa = a->parameters(), pb = b->parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_LT((pa[i].grad() - pb[i].grad()).abs().max().item<double>(), 1e-7);
  }
  // Every grad is a view into a bucket: writing the bucket through one grad is visible.
  const auto layout = dp.reducer()->layout();
  ASSERT_GE(layout.size(), 3u);
  EXPECT_TRUE(dp.reducer()->rebuilt());
  for (const auto& bucket : layout) {
    for (size_t k = 1; k < bucket.size(); ++k) {
      EXPECT_EQ(pb[bucket[k]].grad().storage().data_ptr().get(),
                pb[bucket[0]].grad().storage().data_ptr().get());
    }
  }
  // Missing BeforeBackward: the hook sees a second gradient in the same step and reports it.
  auto loss2 = torch::nn::functional::cross_entropy(b->forward(batch.x), batch.y);
  ASSERT_TRUE(dp.BeforeBackward().ok());
  loss2.backward();
  ASSERT_TRUE(dp.AfterBackward().ok());
  auto loss3 = torch::nn::functional::cross_entropy(b->forward(batch.x), batch.y);
  loss3.backward();
  const Status twice = dp.AfterBackward();
  EXPECT_EQ(twice.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(twice.message().find("rank 0: AfterBackward"), std::string::npos) << twice.message();
  EXPECT_NE(twice.message().find("ready twice"), std::string::npos) << twice.message();
}

TEST(MpiCommunicator, WorldOfOneCollectivesAndSequenceNumbers) {
  auto comm = WorldOfOne();
  const uint64_t s0 = comm->next_seq();
  auto t = torch::arange(6, torch::kFloat);
  ASSERT_TRUE(comm->AllReduce(t, ReduceOp::kAvg).ok());
  EXPECT_EQ(t[5].item<float>(), 5.0f);
  auto bf = torch::ones({3}, torch::kBFloat16);
  ASSERT_TRUE(comm->AllReduce(bf, ReduceOp::kSum).ok());
  auto g = comm->AllGather("abc");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->at(0), "abc");
  ASSERT_TRUE(comm->Barrier().ok());
  EXPECT_EQ(comm->next_seq(), s0 + 4);
  auto bad = comm->AllReduceAsync(torch::zeros({4, 4}).t(), ReduceOp::kSum);
  EXPECT_EQ(bad->Wait().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace effnet::dist
