// The coordinator's state file (JobStateFile in proto/coordinator.proto): a job survives the
// round trip through it exactly, and a file of an old format, a malformed one or one of another
// job is refused with its reason. The Job runs without a server here.
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>

#include "common/atomic_file.h"
#include "common/hash.h"
#include "coordinator/job.h"
#include "coordinator/job_state.h"
#include "proto/convert.h"

namespace effnet::coord {
namespace {

JobSetup MakeSetup() {
  JobSetup s;
  s.world_size = 2;
  s.config.epochs = 6;
  s.config.seed = 7;
  s.config.early_stopping.patience = 3;
  s.config.early_stopping.best_metric = "val_loss";
  for (int i = 0; i < 20; ++i) s.train_indices.push_back(3 * i + 1);
  s.data_path = "synthetic.h5";
  return s;
}

WorkerInfo Worker(int rank, int64_t generation) {
  WorkerInfo w;
  w.rank = rank;
  w.world_size = 2;
  w.generation = generation;
  w.worker_id = "w" + std::to_string(rank) + "-g" + std::to_string(generation);
  w.host = "host" + std::to_string(rank);
  w.device = "cpu";
  w.pid = 100 + rank;
  return w;
}

job::RankMetrics Metrics(int epoch, int rank, double val_loss) {
  job::RankMetrics m;
  m.epoch = epoch;
  m.rank = rank;
  m.train_samples = 10;
  m.train_loss = 1.0 + rank;
  m.train_accuracy = 0.5;
  m.val_loss = val_loss;
  m.val_accuracy = 0.6;
  m.images_per_second = 100 + rank;
  m.step_time_ms = 50 + 60 * rank;
  m.image_size = 224;
  m.host = "host" + std::to_string(rank);
  return m;
}

// Both ranks of `generation` report `epoch`; returns the decision.
job::EpochDecision Decide(Job& job, int64_t generation, int epoch, double val_loss) {
  bool decided = false;
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(job.Plan(Worker(r, generation), epoch).ok());
    const Status st = job.Report(Worker(r, generation), Metrics(epoch, r, val_loss), &decided);
    EXPECT_TRUE(st.ok()) << st.ToString();
  }
  EXPECT_TRUE(decided);
  return job.Record(epoch)->decision;
}

// Note [reports are checked] at the job level: heartbeats with an impossible epoch or step.
TEST(JobChecks, HeartbeatsWithImpossibleProgressAreRefused) {
  const auto now = Clock::now();
  Job job(MakeSetup(), 0);
  ASSERT_TRUE(job.Register(Worker(0, 0), now).ok());
  EXPECT_TRUE(job.Beat(Worker(0, 0), -1, 0, now).ok());
  EXPECT_TRUE(job.Beat(Worker(0, 0), 6, 0, now).ok());
  for (const auto& [epoch, step] : {std::pair{-2, int64_t{0}}, {7, 0}, {0, -5}}) {
    const Status st = job.Beat(Worker(0, 0), epoch, step, now);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << epoch << " " << step;
    EXPECT_NE(st.message().find("rank 0 (host host0, pid 100) heartbeat"), std::string::npos)
        << st.message();
  }
}

// A job with something in every part of the file: two generations (one failure), decided
// epochs with early-stopping state that differs per record, both checkpoints, a pending report.
Job BusyJob() {
  const auto now = Clock::now();
  Job job(MakeSetup(), 0);
  for (int r = 0; r < 2; ++r) EXPECT_TRUE(job.Register(Worker(r, 0), now).ok());
  for (int r = 0; r < 2; ++r) EXPECT_TRUE(job.Beat(Worker(r, 0), 0, 5, now).ok());
  Decide(job, 0, 0, 1.0);
  EXPECT_TRUE(job.Commit(Worker(0, 0), 0, "ckpt/e0", true).ok());
  Decide(job, 0, 1, 1.2);                                // worse: one epoch without improvement
  job.StreamEnded(Worker(1, 0), /*leaving=*/true, now);  // generation 0 fails
  EXPECT_EQ(job.phase(), Phase::kFailed);
  for (int r = 0; r < 2; ++r) EXPECT_TRUE(job.Register(Worker(r, 1), now).ok());
  Decide(job, 1, 1, 0.9);
  EXPECT_TRUE(job.Commit(Worker(0, 1), 1, "ckpt/e1", false).ok());
  EXPECT_TRUE(job.Plan(Worker(0, 1), 2).ok());
  bool decided = false;
  EXPECT_TRUE(job.Report(Worker(0, 1), Metrics(2, 0, 0.95), &decided).ok());
  EXPECT_FALSE(decided);
  return job;
}

v1::JobStateFile Parse(const std::string& text) {
  auto file = ParseStateFile(text);
  EXPECT_TRUE(file.ok()) << file.status().ToString();
  return file.ok() ? *file : v1::JobStateFile();
}

TEST(JobState, AJobRoundTripsThroughTheStateFile) {
  const Job job = BusyJob();
  const std::string text = job.ToJson();
  auto restored = Job::Restore(text, MakeSetup(), /*generation=*/1, Clock::now());
  ASSERT_TRUE(restored.ok()) << restored.status().ToString();
  // The restored job writes the same file, but for its version (one up: restoring is a change).
  v1::JobStateFile before = Parse(text), after = Parse(restored->ToJson());
  EXPECT_EQ(after.state().version(), before.state().version() + 1);
  after.mutable_state()->set_version(before.state().version());
  std::string diff;
  google::protobuf::util::MessageDifferencer differ;
  differ.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differ.Compare(before, after)) << diff;

  EXPECT_EQ(before.format(), kStateFormat);
  EXPECT_EQ(restored->job_id(), job.job_id());
  EXPECT_EQ(restored->generation(), 1);
  EXPECT_EQ(restored->phase(), Phase::kRunning);
  EXPECT_EQ(restored->next_epoch(), 2);
  EXPECT_EQ(restored->failures(), job.failures());
  ASSERT_EQ(restored->failures().size(), 1u);
  EXPECT_NE(restored->failures()[0].find("rank 1 (host host1, pid 101) left"), std::string::npos);
  EXPECT_EQ(restored->MissingReports(), std::vector<int>{1});
  EXPECT_EQ(restored->last_checkpoint().path, "ckpt/e1");
  EXPECT_EQ(restored->best_checkpoint().path, "ckpt/e0");
  // Note [no epoch twice]: each record keeps its own early-stopping state.
  ASSERT_EQ(restored->history().size(), 2u);
  EXPECT_EQ(restored->history()[0].early_stopping_after.best_epoch, 0);
  EXPECT_EQ(restored->history()[1].early_stopping_after.best_epoch, 1);
  EXPECT_EQ(restored->history()[1].generation, 1);
  EXPECT_EQ(restored->history()[1].ranks[1].host, "host1");
  EXPECT_EQ(restored->workers().at(1).info.worker_id, "w1-g1");
  // The train-split fingerprint is common/hash.h's FNV-1a 64 over the indices' bytes.
  uint64_t h = kFnvOffsetBasis;
  for (int64_t x : MakeSetup().train_indices) h = Fnv1a64(&x, sizeof(x), h);  // little endian
  EXPECT_EQ(before.train_hash(), h);
}

TEST(JobState, ARestoredJobDecidesLikeTheOriginal) {
  Job job = BusyJob();
  auto restored = Job::Restore(job.ToJson(), MakeSetup(), 1, Clock::now());
  ASSERT_TRUE(restored.ok()) << restored.status().ToString();
  // Rank 1 completes epoch 2, and two more worse epochs follow: the early-stopping state after the
  // restore must be that of epoch 1 (best 0.9), so both jobs stop at the same epoch.
  for (Job* j : {&job, &*restored}) {
    bool decided = false;
    ASSERT_TRUE(j->Plan(Worker(1, 1), 2).ok());
    ASSERT_TRUE(j->Report(Worker(1, 1), Metrics(2, 1, 0.95), &decided).ok());
    EXPECT_TRUE(decided);
    Decide(*j, 1, 3, 0.96);
    const job::EpochDecision d = Decide(*j, 1, 4, 0.97);
    EXPECT_TRUE(d.stop) << d.reason;
    EXPECT_EQ(d.best_epoch, 1);
  }
  EXPECT_EQ(job.StatusLine(), restored->StatusLine());
}

std::string ReplaceLast(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.rfind(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

Status RestoreError(const std::string& text, JobSetup setup = MakeSetup()) {
  auto r = Job::Restore(text, std::move(setup), 0, Clock::now());
  return r.ok() ? Status::Ok() : r.status();
}

TEST(JobState, AnOldFormatStateIsRefusedWithWhatToDo) {
  // Written by the coordinator before the state file had a schema (format 1).
  auto text = ReadFile(std::string(EFFNET_TESTDATA_DIR) + "/state-format1.json");
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  const Status st = RestoreError(*text);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
  EXPECT_NE(st.message().find("state format 1, but this effnet-coordinator reads format 2 only"),
            std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("move the state dir away"), std::string::npos) << st.message();
  // A newer format is refused the same way.
  const std::string newer = ReplaceLast(BusyJob().ToJson(), "\"format\": 2", "\"format\": 3");
  EXPECT_NE(RestoreError(newer).message().find("state format 3"), std::string::npos);
}

TEST(JobState, AMalformedStateIsRefused) {
  const std::string good = BusyJob().ToJson();
  Status st = RestoreError(good.substr(0, good.size() / 2));
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  EXPECT_NE(st.message().find("malformed state file"), std::string::npos) << st.message();
  st = RestoreError("{}");
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  EXPECT_NE(st.message().find("no format version"), std::string::npos) << st.message();
  st = RestoreError(ReplaceLast(good, "\"next_epoch\": 2", "\"next_epoch\": \"two\""));
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  st = RestoreError(ReplaceLast(good, "\"PHASE_RUNNING\"", "\"PHASE_UNSPECIFIED\""));
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  EXPECT_NE(st.message().find("no job phase PHASE_UNSPECIFIED"), std::string::npos) << st.message();
  // The last worker state is in the file's own worker records (the view's come first).
  st = RestoreError(ReplaceLast(good, "\"state\": \"registered\"", "\"state\": \"zombie\""));
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  EXPECT_NE(st.message().find("no worker state 'zombie'"), std::string::npos) << st.message();
}

TEST(JobState, AStateOfAnotherJobIsRefused) {
  const std::string text = BusyJob().ToJson();
  JobSetup other_split = MakeSetup();
  other_split.train_indices[3] += 1;  // same size, other samples
  Status st = RestoreError(text, other_split);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
  EXPECT_NE(st.message().find("a train split of 20 samples (data synthetic.h5)"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("use another --state-dir"), std::string::npos) << st.message();
  JobSetup other_seed = MakeSetup();
  other_seed.config.seed = 8;
  EXPECT_NE(RestoreError(text, other_seed).message().find("seed 7"), std::string::npos);
  JobSetup other_world = MakeSetup();
  other_world.world_size = 3;
  EXPECT_NE(RestoreError(text, other_world).message().find("world size 2"), std::string::npos);
  JobSetup other_epochs = MakeSetup();
  other_epochs.config.epochs = 7;
  EXPECT_NE(RestoreError(text, other_epochs).message().find("epochs 6"), std::string::npos);
}

TEST(JobState, TheResultsTableHasOneRowPerDecidedEpoch) {
  const Job job = BusyJob();
  v1::JobState st;
  job.ToProto(Clock::now(), &st);
  const std::string table = ResultsTable(st);
  EXPECT_NE(table.find("| epoch | stage |  px | train loss |"), std::string::npos) << table;
  EXPECT_NE(table.find("|     1 |     1 | 224 |     1.5000 |"), std::string::npos) << table;
  EXPECT_NE(table.find("|       110.0 |   1 |     2 | best |"), std::string::npos) << table;
  EXPECT_NE(table.find("best epoch 2 (checkpoint ckpt/e0), last committed epoch 2, generation 1, "
                       "phase running"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("failures survived:\n  - rank 1 (host host1, pid 101) left"),
            std::string::npos)
      << table;
}

// Note [elastic world size] at the job level: 3 ranks, at least 2. A launch of 2 after a lost
// rank shards the whole split over 2, a resize at an epoch boundary brings back 3, and every
// epoch sees every train sample exactly once; each epoch and each change keeps its size.
TEST(JobElastic, LaunchesOfAnotherSizeShardTheWholeSplitAndAreRecorded) {
  const auto now = Clock::now();
  JobSetup setup = MakeSetup();
  setup.world_size = 3;
  setup.min_world_size = 2;
  const std::vector<int64_t> all = setup.train_indices;
  Job job(setup, 0);
  auto worker = [](int rank, int world, int64_t generation) {
    WorkerInfo w = Worker(rank, generation);
    w.world_size = world;
    return w;
  };
  // Every rank of `generation` (`world` of them) trains `epoch`: the shards partition the split.
  auto train = [&](int64_t generation, int world, int epoch) {
    std::vector<int64_t> seen;
    bool decided = false;
    for (int r = 0; r < world; ++r) {
      auto plan = job.Plan(worker(r, world, generation), epoch);
      ASSERT_TRUE(plan.ok()) << plan.status().ToString();
      seen.insert(seen.end(), plan->sample_indices.begin(), plan->sample_indices.end());
      job::RankMetrics m = Metrics(epoch, r, 1.0 / (1 + epoch));
      m.train_samples = static_cast<int64_t>(plan->sample_indices.size());
      const Status st = job.Report(worker(r, world, generation), m, &decided);
      ASSERT_TRUE(st.ok()) << st.ToString();
      EXPECT_EQ(decided, r == world - 1) << "epoch " << epoch << " rank " << r;
    }
    std::sort(seen.begin(), seen.end());
    EXPECT_EQ(seen, all) << "epoch " << epoch << " on " << world << " ranks";
    ASSERT_NE(job.Record(epoch), nullptr);
    EXPECT_EQ(job.Record(epoch)->world_size, world);
    EXPECT_TRUE(
        job.Commit(worker(0, world, generation), epoch, "ckpt/e" + std::to_string(epoch), false)
            .ok());
  };
  for (int r = 0; r < 3; ++r) ASSERT_TRUE(job.Register(worker(r, 3, 0), now).ok());
  train(0, 3, 0);
  EXPECT_TRUE(job.world_size_changes().empty());
  job.StreamEnded(worker(2, 3, 0), /*leaving=*/true, now);
  ASSERT_EQ(job.phase(), Phase::kFailed);

  // Below the minimum, above the full size, or a size the generation does not have: refused.
  Status st = job.Register(worker(0, 1, 1), now);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("says world size 1, the job has between 2 and 3"), std::string::npos)
      << st.message();
  EXPECT_EQ(job.Register(worker(0, 4, 1), now).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(job.Register(worker(0, 2, 1), now).ok());
  st = job.Register(worker(1, 3, 1), now);
  EXPECT_NE(st.message().find("but generation 1 has 2 ranks"), std::string::npos) << st.message();
  EXPECT_EQ(job.Register(worker(2, 2, 1), now).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(job.Register(worker(1, 2, 1), now).ok());
  EXPECT_EQ(job.phase(), Phase::kRunning);
  EXPECT_EQ(job.launch_world_size(), 2);
  ASSERT_EQ(job.world_size_changes().size(), 1u);
  EXPECT_NE(job.world_size_changes()[0].find("generation 1 from epoch 2: 2 of 3 ranks (was 3; "
                                             "after: rank 2 (host host2, pid 102) left"),
            std::string::npos)
      << job.world_size_changes()[0];
  train(1, 2, 1);
  train(1, 2, 2);

  // Growing back: only at an epoch boundary (every decided epoch committed).
  bool decided = false;
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(job.Plan(worker(r, 2, 1), 3).ok());
    ASSERT_TRUE(job.Report(worker(r, 2, 1), Metrics(3, r, 0.2), &decided).ok());
  }
  ASSERT_TRUE(decided);
  st = job.Resize(3, "slot back");
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("epoch 4 is decided but its checkpoint is not committed"),
            std::string::npos)
      << st.message();
  EXPECT_EQ(job.Resize(1, "too small").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(job.Resize(2, "same").code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(job.Commit(worker(0, 2, 1), 3, "ckpt/e3", false).ok());
  ASSERT_TRUE(job.Resize(3, "slot back").ok());
  EXPECT_EQ(job.generation(), 2);
  EXPECT_EQ(job.launch_world_size(), 3);
  EXPECT_EQ(job.next_epoch(), 4);
  EXPECT_EQ(job.Plan(worker(0, 2, 1), 4).status().code(), StatusCode::kPermissionDenied);
  for (int r = 0; r < 3; ++r) ASSERT_TRUE(job.Register(worker(r, 3, 2), now).ok());
  train(2, 3, 4);
  ASSERT_EQ(job.world_size_changes().size(), 2u);
  EXPECT_NE(job.world_size_changes()[1].find("generation 2 from epoch 5: 3 of 3 ranks (was 2; "
                                             "slot back)"),
            std::string::npos)
      << job.world_size_changes()[1];
  EXPECT_EQ(job.failures().size(), 1u);  // a resize is no failure

  // The sizes survive the state file; a restore with another minimum is refused.
  auto restored = Job::Restore(job.ToJson(), setup, 2, now);
  ASSERT_TRUE(restored.ok()) << restored.status().ToString();
  EXPECT_EQ(restored->launch_world_size(), 3);
  EXPECT_EQ(restored->world_size_changes(), job.world_size_changes());
  EXPECT_EQ(restored->Record(2)->world_size, 2);
  JobSetup other_min = setup;
  other_min.min_world_size = 3;
  EXPECT_NE(
      Job::Restore(job.ToJson(), other_min, 2, now).status().message().find("minimum world size 2"),
      std::string::npos);
}

}  // namespace
}  // namespace effnet::coord
