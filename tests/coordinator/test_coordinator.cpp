// In-process coordinator tests: the server runs in this process on 127.0.0.1 with port 0; workers
// are the real client library (threads) or raw gRPC stubs where a test needs to misbehave.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <set>
#include <thread>

#include "common/utf8.h"
#include "coordinator/server.h"
#include "proto/convert.h"
#include "proto/coordinator.grpc.pb.h"
#include "worker/client/coordinator_job_control.h"
#include "worker/train/config.h"

namespace effnet::coord {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::effnet::v1;
using Seconds = std::chrono::duration<double>;

constexpr char kToken[] = "s3cret-token";

JobSetup MakeSetup(int world, int epochs, int num_train) {
  JobSetup s;
  s.world_size = world;
  s.config.epochs = epochs;
  s.config.seed = 7;
  s.config.early_stopping.patience = 0;  // tests that want early stopping set it
  // Train indices are not contiguous (val/test samples interleave in a real file).
  for (int i = 0; i < num_train; ++i) s.train_indices.push_back(3 * i + 1);
  s.data_path = "synthetic";
  return s;
}

CoordinatorConfig MakeConfig(const std::string& state_dir = "", double hb_timeout = 10.0) {
  CoordinatorConfig c;
  c.host = "127.0.0.1";
  c.port = 0;
  c.token = kToken;
  c.state_dir = state_dir;
  c.heartbeat_timeout_s = hb_timeout;
  c.max_long_poll_ms = 2000;
  return c;
}

std::unique_ptr<CoordinatorServer> StartServer(const CoordinatorConfig& c, JobSetup s) {
  auto server = CoordinatorServer::Start(c, std::move(s));
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  return std::move(server).value();
}

std::string Address(const CoordinatorServer& s) { return "127.0.0.1:" + std::to_string(s.port()); }

client::CoordinatorClientConfig ClientConfig(const CoordinatorServer& s, int rank, int world,
                                             int64_t generation = 0) {
  client::CoordinatorClientConfig c;
  c.address = Address(s);
  c.token = kToken;
  c.rank = rank;
  c.world_size = world;
  c.generation = generation;
  c.device = "cpu";
  c.timeouts.call_timeout_s = 5.0;
  c.timeouts.heartbeat_interval_s = 0.2;
  c.timeouts.register_timeout_s = 20.0;
  c.timeouts.unavailable_timeout_s = 20.0;
  c.timeouts.decision_timeout_s = 30.0;
  c.exit_on_job_failure = false;
  return c;
}

// Connects `world` client ranks concurrently (registration blocks until all are in).
std::vector<std::unique_ptr<train::JobControl>> ConnectAll(const CoordinatorServer& s, int world,
                                                           int64_t generation = 0) {
  std::vector<std::future<Result<std::unique_ptr<train::JobControl>>>> futures;
  for (int r = 0; r < world; ++r) {
    futures.push_back(std::async(std::launch::async, [&s, r, world, generation] {
      return client::ConnectCoordinator(ClientConfig(s, r, world, generation));
    }));
  }
  std::vector<std::unique_ptr<train::JobControl>> out;
  for (auto& f : futures) {
    auto jc = f.get();
    EXPECT_TRUE(jc.ok()) << jc.status().ToString();
    if (jc.ok()) out.push_back(std::move(jc).value());
  }
  return out;
}

// Every rank reports `m` (with its own rank) concurrently; returns the decisions.
std::vector<job::EpochDecision> EndEpochAll(std::vector<std::unique_ptr<train::JobControl>>& jcs,
                                            std::vector<job::RankMetrics> ms) {
  std::vector<std::future<Result<job::EpochDecision>>> futures;
  for (size_t r = 0; r < jcs.size(); ++r) {
    futures.push_back(
        std::async(std::launch::async, [&jcs, &ms, r] { return jcs[r]->EndEpoch(ms[r]); }));
  }
  std::vector<job::EpochDecision> out;
  for (auto& f : futures) {
    auto d = f.get();
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    if (d.ok()) out.push_back(*d);
  }
  return out;
}

job::RankMetrics Metrics(int epoch, int rank, double val_loss, double val_acc) {
  job::RankMetrics m;
  m.epoch = epoch;
  m.rank = rank;
  m.train_loss = 1.0 + rank;
  m.train_accuracy = 0.5;
  m.val_loss = val_loss;
  m.val_accuracy = val_acc;
  m.images_per_second = 100.0;
  m.step_time_ms = 50.0;
  m.image_size = 224;
  return m;
}

// A worker speaking raw gRPC, for the refusal tests.
struct RawWorker {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Coordinator::Stub> stub;
  v1::WorkerIdentity id;
  RawWorker(const CoordinatorServer& s, int rank, int world, int64_t generation,
            const std::string& worker_id) {
    channel = grpc::CreateChannel(Address(s), grpc::InsecureChannelCredentials());
    stub = v1::Coordinator::NewStub(channel);
    id.set_rank(rank);
    id.set_world_size(world);
    id.set_generation(generation);
    id.set_worker_id(worker_id);
    id.set_host("testhost");
    id.set_pid(1000 + rank);
  }
  static void Prepare(grpc::ClientContext* ctx, const std::string& token) {
    if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }
  grpc::Status Register(const std::string& token = kToken, int wait_ms = 0,
                        const std::string& job_config = "") {
    grpc::ClientContext ctx;
    Prepare(&ctx, token);
    v1::RegisterWorkerRequest req;
    *req.mutable_worker() = id;
    req.set_wait_for_start_ms(wait_ms);
    req.set_job_config(job_config);
    v1::RegisterWorkerResponse resp;
    return stub->RegisterWorker(&ctx, req, &resp);
  }
  grpc::Status Plan(int epoch, v1::GetEpochPlanResponse* resp) {
    grpc::ClientContext ctx;
    Prepare(&ctx, kToken);
    v1::GetEpochPlanRequest req;
    *req.mutable_worker() = id;
    req.set_epoch(epoch);
    return stub->GetEpochPlan(&ctx, req, resp);
  }
  grpc::Status Report(const job::RankMetrics& m, const std::string& token = kToken) {
    grpc::ClientContext ctx;
    Prepare(&ctx, token);
    v1::ReportMetricsRequest req;
    *req.mutable_worker() = id;
    wire::ToProto(m, req.mutable_metrics());
    req.set_wait_ms(0);
    v1::ReportMetricsResponse resp;
    return stub->ReportMetrics(&ctx, req, &resp);
  }
  grpc::Status Commit(int epoch, const std::string& path) {
    grpc::ClientContext ctx;
    Prepare(&ctx, kToken);
    v1::CommitCheckpointRequest req;
    *req.mutable_worker() = id;
    req.set_epoch(epoch);
    req.set_path(path);
    v1::CommitCheckpointResponse resp;
    return stub->CommitCheckpoint(&ctx, req, &resp);
  }
  grpc::Status ReportFailure(const std::string& cause, const std::string& token = kToken) {
    grpc::ClientContext ctx;
    Prepare(&ctx, token);
    v1::ReportFailureRequest req;
    *req.mutable_worker() = id;
    req.set_cause(cause);
    v1::ReportFailureResponse resp;
    return stub->ReportFailure(&ctx, req, &resp);
  }
  v1::JobState State() {
    grpc::ClientContext ctx;
    Prepare(&ctx, kToken);
    v1::JobState st;
    EXPECT_TRUE(stub->GetJobState(&ctx, v1::GetJobStateRequest(), &st).ok());
    return st;
  }
};

fs::path TempDir(const std::string& name) {
  fs::path p = fs::temp_directory_path() /
               (name + "-" + std::to_string(::getpid()) + "-" +
                std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  fs::create_directories(p);
  return p;
}

TEST(Coordinator, PlansCoverEveryTrainSampleExactlyOncePerEpoch) {
  const int world = 3, epochs = 3, n = 100;
  JobSetup setup = MakeSetup(world, epochs, n);
  setup.config.progressive.num_stages = 3;
  setup.config.progressive.min_image_size = 128;
  setup.config.progressive.max_image_size = 224;
  const std::set<int64_t> train(setup.train_indices.begin(), setup.train_indices.end());
  auto server = StartServer(MakeConfig(), setup);
  auto jcs = ConnectAll(*server, world);
  ASSERT_EQ(jcs.size(), static_cast<size_t>(world));
  std::vector<int64_t> previous_order;
  std::vector<int> sizes_seen;
  for (int epoch = 0; epoch < epochs; ++epoch) {
    std::vector<int64_t> all;
    std::vector<int64_t> order;
    std::set<int> image_sizes;
    for (int r = 0; r < world; ++r) {
      auto plan = jcs[r]->PlanEpoch(epoch);
      ASSERT_TRUE(plan.ok()) << plan.status().ToString();
      EXPECT_FALSE(plan->stop);
      EXPECT_EQ(plan->epoch, epoch);
      const auto& idx = plan->sample_indices;
      EXPECT_EQ(static_cast<int64_t>(idx.size()), job::ShardSize(n, world, r));
      all.insert(all.end(), idx.begin(), idx.end());
      order.insert(order.end(), idx.begin(), idx.end());
      image_sizes.insert(plan->stage.image_size);
      EXPECT_EQ(plan->stage.index, epoch);
    }
    ASSERT_EQ(image_sizes.size(), 1u) << "all ranks train one epoch at one image size";
    sizes_seen.push_back(*image_sizes.begin());
    std::sort(all.begin(), all.end());
    EXPECT_EQ(all.size(), train.size());
    EXPECT_TRUE(std::adjacent_find(all.begin(), all.end()) == all.end()) << "a sample twice";
    EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()), train);
    // Deterministic from the seed, different each epoch.
    const auto expected = job::PlanShards(setup.train_indices, setup.config.seed, epoch, world);
    std::vector<int64_t> expected_order;
    for (const auto& s : expected) expected_order.insert(expected_order.end(), s.begin(), s.end());
    EXPECT_EQ(order, expected_order);
    EXPECT_NE(order, previous_order);
    previous_order = order;
    std::vector<job::RankMetrics> ms;
    for (int r = 0; r < world; ++r) {
      ms.push_back(Metrics(epoch, r, 1.0 - 0.1 * epoch, 0.5));
      ms.back().image_size = sizes_seen.back();  // the plan's (Note [reports are checked])
    }
    EndEpochAll(jcs, ms);
  }
  EXPECT_EQ(sizes_seen, (std::vector<int>{128, 176, 224}));  // the paper's progressive sizes
  auto after = jcs[0]->PlanEpoch(epochs);
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->stop);
  EXPECT_EQ(server->phase(), Phase::kFinished);
}

// Note [one job config]: a worker whose job: section differs from the coordinator's is refused at
// registration, each differing key named; the same section (or none, older workers) registers.
TEST(Coordinator, WorkersWithAnotherJobConfigAreRefusedNamingTheKeys) {
  CoordinatorConfig config = MakeConfig();
  const JobSetup setup = MakeSetup(2, 3, 20);
  auto server = StartServer(config, setup);
  RawWorker w0(*server, 0, 2, config.generation, "w0");
  auto other = setup.config;
  other.epochs += 2;
  other.early_stopping.patience = 7;
  grpc::Status st = w0.Register(kToken, 0, effnet::train::JobConfigToYaml(other));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  const std::string want_epochs =
      "job.epochs: " + std::to_string(setup.config.epochs) + " -> " + std::to_string(other.epochs);
  EXPECT_NE(st.error_message().find(want_epochs), std::string::npos) << st.error_message();
  EXPECT_NE(st.error_message().find("job.early_stopping.patience"), std::string::npos)
      << st.error_message();
  EXPECT_NE(st.error_message().find("rank 0"), std::string::npos) << st.error_message();
  EXPECT_TRUE(w0.Register(kToken, 0, effnet::train::JobConfigToYaml(setup.config)).ok());
  RawWorker w1(*server, 1, 2, config.generation, "w1");
  EXPECT_TRUE(w1.Register().ok());  // not sent: not checked
}

TEST(Coordinator, RefusalsNameTheReason) {
  CoordinatorConfig config = MakeConfig();
  config.generation = 2;
  auto server = StartServer(config, MakeSetup(2, 3, 20));

  RawWorker w0(*server, 0, 2, 2, "w0");
  // Missing and wrong token.
  grpc::Status st = w0.Register("");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(st.error_message().find("missing token"), std::string::npos) << st.error_message();
  st = w0.Register("not-the-token");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(st.error_message().find("wrong token"), std::string::npos) << st.error_message();
  {
    grpc::ClientContext ctx;
    RawWorker::Prepare(&ctx, "");
    v1::JobState js;
    EXPECT_EQ(w0.stub->GetJobState(&ctx, v1::GetJobStateRequest(), &js).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  // Rank out of range.
  RawWorker w5(*server, 5, 2, 2, "w5");
  st = w5.Register();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("rank 5 out of range [0, 2)"), std::string::npos)
      << st.error_message();
  // Stale generation.
  RawWorker old(*server, 1, 2, 1, "old");
  st = old.Register();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(st.error_message().find("stale generation 1"), std::string::npos) << st.error_message();
  // Duplicate rank: a second process claims rank 0; a retry of the first one is fine.
  ASSERT_TRUE(w0.Register().ok());
  ASSERT_TRUE(w0.Register().ok());
  RawWorker dup(*server, 0, 2, 2, "dup");
  st = dup.Register();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_NE(st.error_message().find("duplicate rank 0"), std::string::npos) << st.error_message();
  // The client library reports the refused call and the reason.
  auto cfg = ClientConfig(*server, 1, 2, 2);
  cfg.token = "wrong";
  auto jc = client::ConnectCoordinator(cfg);
  ASSERT_FALSE(jc.ok());
  EXPECT_EQ(jc.status().code(), StatusCode::kUnauthenticated);
  EXPECT_NE(jc.status().message().find("RegisterWorker refused"), std::string::npos);
  EXPECT_NE(jc.status().message().find("wrong token"), std::string::npos);
  // A newer launch (generation 3) takes over; generation 2's worker is now stale everywhere.
  RawWorker next(*server, 0, 2, 3, "next");
  ASSERT_TRUE(next.Register().ok());
  v1::GetEpochPlanResponse plan;
  st = w0.Plan(0, &plan);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(st.error_message().find("stale generation 2"), std::string::npos) << st.error_message();
}

// Resident set of this process, from /proc/self/status ("VmRSS"), in MiB.
double RssMiB() {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return 0;
}

// Note [metadata first] (coordinator/server.cpp) and the request size limit: a 60 MB message
// without the token is refused as UNAUTHENTICATED by the metadata check (had the message been
// read first, the size limit would have answered RESOURCE_EXHAUSTED); with the token, the same
// message is refused by the limit. The limit is above the largest real request, measured here.
TEST(Coordinator, UnauthenticatedCallsAreRefusedOnMetadataBeforeTheirMessage) {
  const CoordinatorConfig config = MakeConfig();
  auto server = StartServer(config, MakeSetup(2, 3, 20));
  RawWorker w(*server, 0, 2, 0, "w0");
  v1::RegisterWorkerRequest big;
  *big.mutable_worker() = w.id;
  big.mutable_worker()->set_host(std::string(60 << 20, 'h'));
  auto call = [&](const std::string& token) {
    grpc::ClientContext ctx;
    RawWorker::Prepare(&ctx, token);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::RegisterWorkerResponse resp;
    return w.stub->RegisterWorker(&ctx, big, &resp);
  };
  const int64_t refused_before = CallsRefusedOnMetadata();
  const double rss_before = RssMiB();
  const int kCalls = 30;
  for (int i = 0; i < kCalls; ++i) {
    const grpc::Status st = call(i % 2 ? "" : "not-the-token");
    ASSERT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
    EXPECT_NE(st.error_message().find(i % 2 ? "missing token" : "wrong token"), std::string::npos)
        << st.error_message();
  }
  EXPECT_EQ(CallsRefusedOnMetadata() - refused_before, kCalls);
  const double grown = RssMiB() - rss_before;
  std::cout << "[metadata first] " << kCalls << " unauthenticated 60 MB calls: RSS of client + "
            << "server grew " << grown << " MiB\n";
  // The client's own serialisation buffers are in this number too; whole messages kept by the
  // server would be 1.8 GB.
  EXPECT_LT(grown, 400.0);
  const grpc::Status authed = call(kToken);
  EXPECT_EQ(authed.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << authed.error_message();
  // The largest real requests: a PATH_MAX checkpoint path, a 255-byte host name.
  v1::WorkerIdentity id = w.id;
  id.set_host(std::string(255, 'h'));
  id.set_worker_id(std::string(64, 'w'));
  id.set_device("cuda:15");
  id.set_pid(std::numeric_limits<int64_t>::max());
  id.set_generation(std::numeric_limits<int64_t>::max());
  v1::CommitCheckpointRequest commit;
  *commit.mutable_worker() = id;
  commit.set_path(std::string(4096, 'p'));
  commit.set_epoch(std::numeric_limits<int32_t>::max());
  v1::ReportMetricsRequest report;
  *report.mutable_worker() = id;
  wire::ToProto(Metrics(0, 0, 1.0, 0.5), report.mutable_metrics());
  report.mutable_metrics()->set_host(std::string(255, 'h'));
  v1::RegisterWorkerRequest reg;
  *reg.mutable_worker() = id;
  const size_t largest =
      std::max({commit.ByteSizeLong(), report.ByteSizeLong(), reg.ByteSizeLong()});
  std::cout << "[request sizes] commit " << commit.ByteSizeLong() << ", report "
            << report.ByteSizeLong() << ", register " << reg.ByteSizeLong() << " bytes; limit "
            << config.max_request_bytes << "\n";
  EXPECT_LT(largest, 4608u);
  EXPECT_LT(largest * 8, static_cast<size_t>(config.max_request_bytes));
}

// Note [reports are checked] (coordinator/job.cpp): a worker with the token is still checked.
TEST(Coordinator, AuthenticatedReportsAndCommitsAreValidated) {
  JobSetup setup = MakeSetup(2, 3, 20);
  setup.checkpoint_dir = "/runs/r/checkpoints";
  setup.config.progressive.min_image_size = setup.config.progressive.max_image_size = 224;
  auto server = StartServer(MakeConfig(), setup);
  RawWorker w0(*server, 0, 2, 0, "w0"), w1(*server, 1, 2, 0, "w1");
  ASSERT_TRUE(w0.Register().ok());
  ASSERT_TRUE(w1.Register().ok());
  auto refused = [&](job::RankMetrics m, const std::string& want) {
    const grpc::Status st = w1.Report(m);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << want;
    EXPECT_NE(st.error_message().find("rank 1"), std::string::npos) << st.error_message();
    EXPECT_NE(st.error_message().find(want), std::string::npos) << st.error_message();
  };
  job::RankMetrics m = Metrics(0, 1, 0.5, 0.5);
  m.val_loss = std::nan("");
  refused(m, "metrics.val_loss is not finite");
  m = Metrics(0, 1, 0.5, 1.5);
  refused(m, "metrics.val_accuracy is outside [0, 1] (1.5)");
  m = Metrics(0, 1, 0.5, 0.5);
  m.train_loss = std::numeric_limits<double>::infinity();
  refused(m, "metrics.train_loss is not finite");
  m = Metrics(0, 1, 0.5, 0.5);
  m.images_per_second = -3;
  refused(m, "metrics.images_per_second is negative");
  m = Metrics(0, 1, 0.5, 0.5);
  m.train_samples = -1;
  refused(m, "metrics.train_samples -1 is outside [0, 10]");
  m.train_samples = 11;
  refused(m, "metrics.train_samples 11 is outside [0, 10]");
  m = Metrics(0, 1, 0.5, 0.5);
  m.image_size = 999;
  refused(m, "metrics.image_size 999 differs from the plan's 224");
  // A report of another rank and a plan for an epoch the job has not reached.
  m = Metrics(0, 0, 0.5, 0.5);
  EXPECT_EQ(w1.Report(m).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::GetEpochPlanResponse plan;
  for (int epoch : {1, 3, 100}) {
    const grpc::Status st = w0.Plan(epoch, &plan);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << epoch;
    EXPECT_NE(st.error_message().find("but the job is at epoch 1"), std::string::npos)
        << st.error_message();
  }
  // Valid reports decide the epoch; then checkpoint paths must lie in the run's folder.
  ASSERT_TRUE(w0.Report(Metrics(0, 0, 0.5, 0.5)).ok());
  ASSERT_TRUE(w1.Report(Metrics(0, 1, 0.5, 0.5)).ok());
  for (const std::string bad : {"/etc/passwd", "/runs/r/checkpoints/../../other/epoch-0000",
                                "/runs/r/checkpoints/sub/epoch-0000", "/runs/r/checkpoints/.."}) {
    const grpc::Status st = w0.Commit(0, bad);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_NE(st.error_message().find("rank 0"), std::string::npos) << st.error_message();
  }
  EXPECT_TRUE(w0.Commit(0, "/runs/r/checkpoints/epoch-0000").ok());
  EXPECT_TRUE(w0.Commit(0, "/runs/r/checkpoints/./epoch-0000").ok());
}

TEST(Coordinator, SilentWorkerIsMarkedDeadAndNamedWithinTheTimeout) {
  const double timeout = 1.0;
  auto server = StartServer(MakeConfig("", timeout), MakeSetup(2, 3, 20));
  // Rank 1 registers by hand and never heartbeats; rank 0 is a real client that does.
  RawWorker silent(*server, 1, 2, 0, "silent");
  ASSERT_TRUE(silent.Register().ok());
  const auto t0 = std::chrono::steady_clock::now();
  auto jc = client::ConnectCoordinator(ClientConfig(*server, 0, 2));
  ASSERT_TRUE(jc.ok()) << jc.status().ToString();
  while (server->phase() != Phase::kFailed &&
         std::chrono::steady_clock::now() - t0 < Seconds(5 * timeout)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const double took = Seconds(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(server->phase(), Phase::kFailed);
  EXPECT_LT(took, timeout + 0.8);
  EXPECT_GE(took, timeout - 0.05);
  const v1::JobState st = silent.State();
  ASSERT_EQ(st.dead_ranks_size(), 1);
  EXPECT_EQ(st.dead_ranks(0), 1);
  EXPECT_NE(st.failure_reason().find("rank 1 (host testhost, pid 1001)"), std::string::npos)
      << st.failure_reason();
  EXPECT_NE(st.failure_reason().find("no heartbeat"), std::string::npos) << st.failure_reason();
  for (const auto& w : st.workers()) EXPECT_EQ(w.state(), w.rank() == 1 ? "dead" : "alive");
  // The live rank's next call learns why.
  auto plan = jc.value()->PlanEpoch(0);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("job failed"), std::string::npos);
  EXPECT_NE(plan.status().message().find("rank 1"), std::string::npos);
}

// Note [failure causes]: a worker's own error becomes its failure and the job's failure reason.
TEST(Coordinator, AWorkersErrorBecomesTheJobsFailureReason) {
  const JobSetup setup = MakeSetup(2, 3, 20);
  auto server = StartServer(MakeConfig(), setup);
  RawWorker w1(*server, 1, 2, 0, "w1");
  ASSERT_TRUE(w1.Register().ok());
  auto jc = client::ConnectCoordinator(ClientConfig(*server, 0, 2));
  ASSERT_TRUE(jc.ok()) << jc.status().ToString();
  // Causes are checked like every report, and only the rank's own worker may report.
  auto refused = [&](grpc::Status st, grpc::StatusCode code, const std::string& want) {
    EXPECT_EQ(st.error_code(), code) << want << ": " << st.error_message();
    EXPECT_NE(st.error_message().find(want), std::string::npos) << st.error_message();
  };
  refused(w1.ReportFailure("bad \xff\xfe byte"), grpc::StatusCode::INVALID_ARGUMENT,
          "rank 1 (host testhost, pid 1001) reported a failure cause that is not UTF-8 (byte 4)");
  refused(w1.ReportFailure(std::string(job::kMaxFailureCauseBytes + 1, 'x')),
          grpc::StatusCode::INVALID_ARGUMENT, "cause of 2049 bytes (at most 2048)");
  refused(w1.ReportFailure(""), grpc::StatusCode::INVALID_ARGUMENT,
          "reported a failure cause without text");
  refused(w1.ReportFailure("x", "wrong"), grpc::StatusCode::UNAUTHENTICATED, "wrong token");
  RawWorker impostor(*server, 1, 2, 0, "impostor");
  refused(impostor.ReportFailure("x"), grpc::StatusCode::PERMISSION_DENIED,
          "belongs to another worker");
  ASSERT_EQ(server->phase(), Phase::kRunning);

  // Rank 0 ends on an error; a cause longer than the limit is cut at a character boundary.
  std::string cause = "writing checkpoint /run/checkpoints/epoch-0001: Operation not permitted";
  std::string long_cause = cause + " ";
  while (long_cause.size() <= job::kMaxFailureCauseBytes) long_cause += "\xc3\xa9";  // U+00E9
  jc.value()->EndWithError(long_cause);
  ASSERT_EQ(server->phase(), Phase::kFailed);
  v1::JobState st = w1.State();
  const v1::WorkerStatus w0 = st.workers(0);
  EXPECT_EQ(w0.state(), "left");
  EXPECT_LE(w0.failure().size(), job::kMaxFailureCauseBytes);
  EXPECT_GT(w0.failure().size(), job::kMaxFailureCauseBytes - 2);
  EXPECT_TRUE(IsValidUtf8(w0.failure()));
  EXPECT_EQ(w0.failure().rfind(cause, 0), 0u) << w0.failure();
  const std::string who = "rank 0 (host " + w0.host() + ", pid " + std::to_string(::getpid()) + ")";
  EXPECT_EQ(st.failure_reason().rfind(who + " failed at epoch 1 of generation 0: " + cause, 0), 0u)
      << st.failure_reason();
  ASSERT_EQ(st.failures_size(), 1);
  EXPECT_EQ(st.failures(0), st.failure_reason());
  EXPECT_EQ(st.status_line(), "failed: " + st.failure_reason());
  // A rank failing after the job failed keeps its own cause; the job's reason stays the first.
  ASSERT_TRUE(w1.ReportFailure("rank 1's own error").ok());
  st = w1.State();
  EXPECT_EQ(st.workers(1).failure(), "rank 1's own error");
  EXPECT_EQ(st.failures_size(), 1);
  // The causes survive a coordinator restart (the state file keeps them).
  server->Inspect([&](const Job& j) {
    auto restored = Job::Restore(j.ToJson(), setup, 0, Clock::now());
    ASSERT_TRUE(restored.ok()) << restored.status().ToString();
    EXPECT_EQ(restored->workers().at(0).failure, w0.failure());
    EXPECT_EQ(restored->failure_reason(), st.failure_reason());
  });
}

// A raw heartbeat stream of one worker; Kill() does to it what the kernel does to the sockets of
// a kill -9'd process.
struct RawStream {
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReaderWriter<v1::HeartbeatRequest, v1::HeartbeatResponse>> stream;
  explicit RawStream(RawWorker& w) {
    ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    stream = w.stub->Heartbeat(&ctx);
    v1::HeartbeatRequest beat;
    *beat.mutable_worker() = w.id;
    v1::HeartbeatResponse resp;
    EXPECT_TRUE(stream->Write(beat) && stream->Read(&resp));
    EXPECT_EQ(resp.phase(), v1::PHASE_RUNNING);
  }
  void Kill() { ctx.TryCancel(); }
};

TEST(Coordinator, BrokenHeartbeatStreamsNameTheRankThatDiedFirst) {
  CoordinatorConfig config = MakeConfig("", /*hb_timeout=*/60.0);
  config.reconnect_grace_s = 0.5;
  auto server = StartServer(config, MakeSetup(3, 3, 30));
  RawWorker w0(*server, 0, 3, 0, "w0"), w1(*server, 1, 3, 0, "w1"), w2(*server, 2, 3, 0, "w2");
  ASSERT_TRUE(w0.Register().ok() && w1.Register().ok() && w2.Register().ok());
  RawStream s0(w0), s1(w1), s2(w2);
  const auto t0 = std::chrono::steady_clock::now();
  s1.Kill();  // rank 1 is killed; mpirun then tears down ranks 2 and 0
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  s2.Kill();
  s0.Kill();
  while (server->phase() != Phase::kFailed &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(server->phase(), Phase::kFailed);
  const double took = Seconds(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(took, 0.5);  // not before the reconnect grace
  EXPECT_LT(took, 2.0);  // but long before the 60 s heartbeat timeout
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const v1::JobState st = w0.State();
  ASSERT_EQ(st.dead_ranks_size(), 3);
  EXPECT_EQ(st.dead_ranks(0), 1);
  EXPECT_NE(st.failure_reason().find("rank 1 (host testhost, pid 1001) lost its connection"),
            std::string::npos)
      << st.failure_reason();
}

TEST(Coordinator, AWorkerThatReconnectsWithinTheGraceStaysAlive) {
  CoordinatorConfig config = MakeConfig("", /*hb_timeout=*/60.0);
  config.reconnect_grace_s = 0.5;
  auto server = StartServer(config, MakeSetup(1, 3, 30));
  RawWorker w0(*server, 0, 1, 0, "w0");
  ASSERT_TRUE(w0.Register().ok());
  {
    RawStream blip(w0);
    blip.Kill();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  RawStream again(w0);  // back within the grace
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  EXPECT_EQ(server->phase(), Phase::kRunning);
  EXPECT_EQ(w0.State().dead_ranks_size(), 0);
}

TEST(Coordinator, MetricsAreSampleWeightedAndEarlyStoppingDecides) {
  const int n = 101;  // shards of 51 and 50 samples
  JobSetup setup = MakeSetup(2, 10, n);
  setup.config.early_stopping.patience = 2;
  setup.config.early_stopping.best_metric = "val_accuracy";
  auto server = StartServer(MakeConfig(), setup);
  auto jcs = ConnectAll(*server, 2);
  ASSERT_EQ(jcs.size(), 2u);
  // val_loss improves, improves, then twice not: stop after epoch 3 (patience 2).
  const std::vector<double> val_loss = {1.0, 0.8, 0.85, 0.9};
  const std::vector<double> val_acc = {0.5, 0.7, 0.75, 0.6};
  for (int epoch = 0; epoch < 4; ++epoch) {
    for (auto& jc : jcs) ASSERT_TRUE(jc->PlanEpoch(epoch).ok());
    auto m0 = Metrics(epoch, 0, val_loss[epoch], val_acc[epoch]);
    auto m1 = Metrics(epoch, 1, val_loss[epoch], val_acc[epoch]);
    m0.train_loss = 1.0;
    m1.train_loss = 2.0;
    m0.images_per_second = 300;
    m1.images_per_second = 150;
    m1.step_time_ms = 2 * m0.step_time_ms;  // a straggler
    auto d = EndEpochAll(jcs, {m0, m1});
    ASSERT_EQ(d.size(), 2u);
    EXPECT_EQ(d[0].is_best, d[1].is_best);
    EXPECT_EQ(d[0].stop, d[1].stop);
    EXPECT_EQ(d[0].best_epoch, d[1].best_epoch);
    EXPECT_EQ(d[0].is_best, epoch != 3) << "epoch " << epoch;
    EXPECT_EQ(d[0].stop, epoch == 3) << "epoch " << epoch;
    EXPECT_EQ(d[0].best_epoch, epoch == 3 ? 2 : epoch);
    if (epoch == 3) {
      EXPECT_NE(d[0].reason.find("did not improve for 2 epochs"), std::string::npos);
      // Counted from 1, as in the logs and reports: val_loss 0.8 was the second epoch's.
      EXPECT_NE(d[0].reason.find("(lowest at epoch 2)"), std::string::npos) << d[0].reason;
    }
  }
  RawWorker viewer(*server, 0, 2, 0, "viewer");
  const v1::JobState st = viewer.State();
  ASSERT_EQ(st.history_size(), 4);
  const auto& e0 = st.history(0);
  EXPECT_NEAR(e0.train_loss(), (51 * 1.0 + 50 * 2.0) / 101.0, 1e-12);
  EXPECT_DOUBLE_EQ(e0.images_per_second(), 450.0);
  ASSERT_EQ(e0.ranks_size(), 2);
  EXPECT_EQ(e0.ranks(0).train_samples(), 51);
  EXPECT_EQ(e0.ranks(1).train_samples(), 50);
  EXPECT_NE(e0.status_line().find("450.0 img/s"), std::string::npos) << e0.status_line();
  EXPECT_NE(e0.status_line().find("r1 100.0 (slow)"), std::string::npos) << e0.status_line();
  EXPECT_EQ(e0.status_line().find("r0 50.0 (slow)"), std::string::npos) << e0.status_line();
  EXPECT_EQ(st.job().phase(), v1::PHASE_FINISHED);
  EXPECT_EQ(st.best_epoch(), 2);
  auto plan = jcs[0]->PlanEpoch(4);
  ASSERT_TRUE(plan.ok());
  EXPECT_TRUE(plan->stop);
}

TEST(Coordinator, RestartedCoordinatorResumesFromItsStateDir) {
  const fs::path dir = TempDir("coord-restart");
  JobSetup setup = MakeSetup(2, 6, 40);
  setup.config.early_stopping.patience = 3;
  auto server = StartServer(MakeConfig(dir.string()), setup);
  const int port = server->port();
  auto jcs = ConnectAll(*server, 2);
  ASSERT_EQ(jcs.size(), 2u);
  for (int epoch = 0; epoch < 2; ++epoch) {
    for (auto& jc : jcs) ASSERT_TRUE(jc->PlanEpoch(epoch).ok());
    EndEpochAll(jcs, {Metrics(epoch, 0, 1.0 - 0.1 * epoch, 0.5 + 0.1 * epoch),
                      Metrics(epoch, 1, 1.0 - 0.1 * epoch, 0.5 + 0.1 * epoch)});
    ASSERT_TRUE(jcs[0]->CommitCheckpoint(epoch, "ckpt/epoch" + std::to_string(epoch), true).ok());
  }
  // Epoch 2 is half reported when the coordinator dies.
  for (auto& jc : jcs) ASSERT_TRUE(jc->PlanEpoch(2).ok());
  auto rank0_report =
      std::async(std::launch::async, [&] { return jcs[0]->EndEpoch(Metrics(2, 0, 0.7, 0.7)); });
  std::string job_id;
  int64_t version_before = 0;
  for (int i = 0; i < 200 && version_before == 0; ++i) {
    server->Inspect([&](const Job& j) {
      if (j.MissingReports() == std::vector<int>{1}) version_before = j.version();
      job_id = j.job_id();
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_NE(version_before, 0) << "rank 0's report never arrived";
  server.reset();  // killed

  CoordinatorConfig again = MakeConfig(dir.string());
  again.port = port;  // workers reconnect to the same address
  server = StartServer(again, setup);
  server->Inspect([&](const Job& j) {
    EXPECT_EQ(j.job_id(), job_id);
    EXPECT_EQ(j.next_epoch(), 2);
    ASSERT_EQ(j.history().size(), 2u);
    EXPECT_EQ(j.history()[1].decision.best_epoch, 1);
    EXPECT_TRUE(j.history()[1].decision.is_best);
    EXPECT_EQ(j.last_checkpoint().epoch, 1);
    EXPECT_EQ(j.last_checkpoint().path, "ckpt/epoch1");
    EXPECT_EQ(j.best_checkpoint().path, "ckpt/epoch1");
    EXPECT_EQ(j.MissingReports(), std::vector<int>{1});  // rank 0's report survived
    EXPECT_EQ(j.phase(), Phase::kRunning);
  });
  // The same worker processes carry on: rank 1 reports, both get the decision of epoch 2.
  auto d1 = jcs[1]->EndEpoch(Metrics(2, 1, 0.7, 0.7));
  ASSERT_TRUE(d1.ok()) << d1.status().ToString();
  auto d0 = rank0_report.get();
  ASSERT_TRUE(d0.ok()) << d0.status().ToString();
  EXPECT_TRUE(d0->is_best);
  EXPECT_EQ(d0->best_epoch, 2);
  EXPECT_EQ(d1->best_epoch, 2);
  ASSERT_TRUE(jcs[0]->CommitCheckpoint(2, "ckpt/epoch2", true).ok());
  server->Inspect([&](const Job& j) {
    EXPECT_EQ(j.next_epoch(), 3);
    EXPECT_EQ(j.history().size(), 3u);
    EXPECT_EQ(j.last_checkpoint().epoch, 2);
  });
  jcs.clear();
  server.reset();
  fs::remove_all(dir);
}

TEST(Coordinator, NewGenerationResumesFromLastCommittedCheckpointWithoutCountingTwice) {
  const fs::path dir = TempDir("coord-generation");
  JobSetup setup = MakeSetup(2, 5, 30);
  setup.config.early_stopping.patience = 2;
  auto server = StartServer(MakeConfig(dir.string()), setup);
  auto jcs = ConnectAll(*server, 2);
  ASSERT_EQ(jcs.size(), 2u);
  for (int epoch = 0; epoch < 2; ++epoch) {
    for (auto& jc : jcs) ASSERT_TRUE(jc->PlanEpoch(epoch).ok());
    // Epoch 0 best (val_loss 1.0); epoch 1 worse (1.2): one epoch without improvement.
    const double vl = epoch == 0 ? 1.0 : 1.2;
    EndEpochAll(
        jcs, {Metrics(epoch, 0, vl, 0.6 - 0.1 * epoch), Metrics(epoch, 1, vl, 0.6 - 0.1 * epoch)});
    // Only epoch 0's checkpoint reaches the disk; the launch dies before committing epoch 1.
    if (epoch == 0) ASSERT_TRUE(jcs[0]->CommitCheckpoint(0, "ckpt/epoch0", true).ok());
  }
  // Generation 1 takes over (the launcher relaunched after a failure).
  auto next = ConnectAll(*server, 2, /*generation=*/1);
  ASSERT_EQ(next.size(), 2u);
  auto resume = next[0]->ResumeCheckpoint();
  ASSERT_TRUE(resume.ok());
  EXPECT_EQ(*resume, "ckpt/epoch0");
  // The old launch is refused everywhere.
  auto stale = jcs[0]->PlanEpoch(1);
  ASSERT_FALSE(stale.ok());
  EXPECT_NE(stale.status().message().find("stale generation 0"), std::string::npos);
  // Epoch 1 is trained again and counted once; the early-stopping state is that of epoch 0, so
  // a second bad epoch does not stop the job yet (it would have, had epoch 1 counted twice).
  for (auto& jc : next) ASSERT_TRUE(jc->PlanEpoch(1).ok());
  auto d = EndEpochAll(next, {Metrics(1, 0, 1.2, 0.5), Metrics(1, 1, 1.2, 0.5)});
  ASSERT_EQ(d.size(), 2u);
  EXPECT_FALSE(d[0].stop) << d[0].reason;
  server->Inspect([&](const Job& j) {
    ASSERT_EQ(j.history().size(), 2u);
    EXPECT_EQ(j.history()[0].epoch, 0);
    EXPECT_EQ(j.history()[1].epoch, 1);
    EXPECT_EQ(j.history()[1].generation, 1);
    EXPECT_EQ(j.generation(), 1);
  });
  for (auto& jc : next) ASSERT_TRUE(jc->PlanEpoch(2).ok());
  d = EndEpochAll(next, {Metrics(2, 0, 1.3, 0.5), Metrics(2, 1, 1.3, 0.5)});
  EXPECT_TRUE(d[0].stop);  // now two epochs without improvement
  next.clear();
  jcs.clear();
  server.reset();
  fs::remove_all(dir);
}

// Note [resume fallback under a coordinator]: the last committed checkpoint is unreadable at
// resume; the ranks fall back to an older one and the job rolls back to its epoch.
TEST(Coordinator, AnUnreadableLastCheckpointRollsTheJobBackToTheWorkersFallback) {
  JobSetup setup = MakeSetup(2, 6, 30);
  setup.config.early_stopping.patience = 2;
  auto server = StartServer(MakeConfig(), setup);
  auto jcs = ConnectAll(*server, 2);
  ASSERT_EQ(jcs.size(), 2u);
  // Epochs 0..2 (shown as 1..3) decided and committed; epoch 1 is the best (val loss 0.8, val
  // accuracy 0.7), epoch 2 the first without improvement.
  const double val_loss[] = {1.0, 0.8, 0.9}, val_acc[] = {0.5, 0.7, 0.6};
  for (int epoch = 0; epoch < 3; ++epoch) {
    for (auto& jc : jcs) ASSERT_TRUE(jc->PlanEpoch(epoch).ok());
    EndEpochAll(jcs, {Metrics(epoch, 0, val_loss[epoch], val_acc[epoch]),
                      Metrics(epoch, 1, val_loss[epoch], val_acc[epoch])});
    ASSERT_TRUE(jcs[0]->CommitCheckpoint(epoch, "ckpt/epoch" + std::to_string(epoch), false).ok());
  }
  jcs.clear();
  auto next = ConnectAll(*server, 2, /*generation=*/1);
  ASSERT_EQ(next.size(), 2u);
  auto resume = next[0]->ResumeCheckpoint();
  ASSERT_TRUE(resume.ok());
  EXPECT_EQ(*resume, "ckpt/epoch2");
  const std::string why = "DataLoss: ckpt/epoch2/model.safetensors: SHA-256 mismatch";
  // Refused: a path that is not the committed one, a fallback that is not older or not decided,
  // a fallback outside the checkpoint folder.
  auto refused = [&](Status st, const std::string& want) {
    EXPECT_FALSE(st.ok()) << want;
    EXPECT_NE(st.message().find(want), std::string::npos) << st.message();
  };
  refused(next[0]->ResumedFromOlder("ckpt/epoch1", 0, "ckpt/epoch0", why),
          "the job's last committed checkpoint is the checkpoint of epoch 3 (ckpt/epoch2)");
  refused(next[0]->ResumedFromOlder("ckpt/epoch2", 2, "ckpt/epoch2b", why),
          "not an older decided epoch than the checkpoint of epoch 3");
  refused(next[0]->ResumedFromOlder("ckpt/epoch2", 1, "../elsewhere/epoch1", why),
          "'..' is not allowed");
  server->Inspect([](const Job& j) { EXPECT_EQ(j.next_epoch(), 3); });
  // Both ranks fall back to epoch 1 (shown as 2): the second is answered alike.
  ASSERT_TRUE(next[0]->ResumedFromOlder("ckpt/epoch2", 1, "ckpt/epoch1", why).ok());
  ASSERT_TRUE(next[1]->ResumedFromOlder("ckpt/epoch2", 1, "ckpt/epoch1", why).ok());
  server->Inspect([&](const Job& j) {
    EXPECT_EQ(j.next_epoch(), 2);
    EXPECT_EQ(j.last_checkpoint().epoch, 1);
    EXPECT_EQ(j.last_checkpoint().path, "ckpt/epoch1");
    ASSERT_EQ(j.history().size(), 2u);
    ASSERT_EQ(j.failures().size(), 2u);  // generation 0 left; the fallback
    EXPECT_NE(j.failures()[1].find("cannot read the checkpoint of epoch 3 (ckpt/epoch2): " + why +
                                   "; the job falls back to the checkpoint of epoch 2"),
              std::string::npos)
        << j.failures()[1];
  });
  // The old epoch's plan is now the job's; the epoch after the fallback is decided once, from
  // the early-stopping state after epoch 1: one worse epoch does not stop a patience of 2 (the
  // dropped decision of epoch 2 counted as well, it would).
  for (auto& jc : next) ASSERT_TRUE(jc->PlanEpoch(2).ok());
  auto d = EndEpochAll(next, {Metrics(2, 0, 0.95, 0.5), Metrics(2, 1, 0.95, 0.5)});
  ASSERT_EQ(d.size(), 2u);
  EXPECT_FALSE(d[0].stop) << d[0].reason;
  EXPECT_EQ(d[0].best_epoch, 1);
  // Once the launch has decided an epoch, a fallback is refused.
  refused(next[0]->ResumedFromOlder("ckpt/epoch1", 0, "ckpt/epoch0", why),
          "a fallback is only accepted before a launch's first epoch");
  server->Inspect([](const Job& j) {
    ASSERT_EQ(j.history().size(), 3u);
    EXPECT_EQ(j.history()[2].generation, 1);
  });
}

TEST(Coordinator, WatchJobStateStreamsChanges) {
  auto server = StartServer(MakeConfig(), MakeSetup(1, 1, 10));
  RawWorker viewer(*server, 0, 1, 0, "viewer");
  grpc::ClientContext ctx;
  RawWorker::Prepare(&ctx, kToken);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  v1::WatchJobStateRequest req;
  auto reader = viewer.stub->WatchJobState(&ctx, req);
  v1::JobState st;
  ASSERT_TRUE(reader->Read(&st));
  EXPECT_EQ(st.job().phase(), v1::PHASE_WAITING_FOR_WORKERS);
  auto jcs = ConnectAll(*server, 1);
  ASSERT_EQ(jcs.size(), 1u);
  ASSERT_TRUE(jcs[0]->PlanEpoch(0).ok());
  EndEpochAll(jcs, {Metrics(0, 0, 1.0, 0.9)});
  std::vector<v1::Phase> phases;
  int64_t last_version = st.version();
  while (reader->Read(&st)) {
    EXPECT_GT(st.version(), last_version);
    last_version = st.version();
    phases.push_back(st.job().phase());
  }
  ASSERT_FALSE(phases.empty());
  EXPECT_EQ(phases.back(), v1::PHASE_FINISHED);  // the stream ends with the finished job
  EXPECT_NE(st.status_line().find("epoch 1/1"), std::string::npos) << st.status_line();
  EXPECT_TRUE(reader->Finish().ok());
}

TEST(Coordinator, TlsWhenCertificatesAreGiven) {
  if (std::system("openssl version > /dev/null 2>&1") != 0) GTEST_SKIP() << "no openssl CLI";
  const fs::path dir = TempDir("coord-tls");
  const std::string cert = (dir / "cert.pem").string(), key = (dir / "key.pem").string();
  const std::string cmd =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost"
      " -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " +
      key + " -out " + cert + " > /dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  CoordinatorConfig config = MakeConfig();
  config.tls_cert_file = cert;
  config.tls_key_file = key;
  auto server = StartServer(config, MakeSetup(1, 1, 10));
  // A plaintext client cannot talk to it.
  auto plain = ClientConfig(*server, 0, 1);
  plain.timeouts.register_timeout_s = 1.0;
  auto refused = client::ConnectCoordinator(plain);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("unreachable"), std::string::npos)
      << refused.status().ToString();
  // A client that trusts the certificate can.
  auto secure = ClientConfig(*server, 0, 1);
  secure.tls_ca_file = cert;
  auto jc = client::ConnectCoordinator(secure);
  ASSERT_TRUE(jc.ok()) << jc.status().ToString();
  auto plan = jc.value()->PlanEpoch(0);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->sample_indices.size(), 10u);
  jc.value().reset();
  server.reset();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace effnet::coord
