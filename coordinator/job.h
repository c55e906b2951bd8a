// The coordinator's job state machine, without any networking: registrations and generations,
// per-epoch shard plans, metrics aggregation, early stopping, the checkpoint registry, worker
// liveness, and the state file that lets a restarted coordinator resume the job.
//
// Note [job phases]: waiting_for_workers -> running (all ranks of the launch registered) ->
// finished (a stop decision) | failed (a rank died or left). A failed job waits for a new launch:
// the first worker of generation G+1 starts it (StartGeneration), which rolls the job back to the
// last committed checkpoint (see Note [no epoch twice]) and waits for all ranks again.
//
// Note [no epoch twice]: each epoch record keeps the early-stopping state after its decision. On a
// new generation every record after the last committed checkpoint is dropped and the
// early-stopping state of the last kept record restored, so an epoch whose checkpoint never made
// it to disk is trained and decided again, once, and never counted twice. The job's current
// early-stopping state is always that of its last record (the initial one without records), so
// the state file keeps it only per record.
//
// Note [elastic world size]: world_size is the job's configured (full) number of ranks; with
// min_world_size below it a launch (generation) may have any size in [min_world_size,
// world_size]. A generation's size is fixed by its first registration (or by Resize) and holds
// for all of it; a generation always starts at an epoch boundary (Note [no epoch twice]), so
// every epoch is trained by one generation of one size, and its shards (job::PlanShards over the
// whole train split for that size) put every train sample in exactly one rank's shard: exactly
// once per epoch whatever the size. data.batch_size is the global batch and stays so (each rank
// trains train::PerRankBatch of it; effnet-coordinator, coordinator/main.cpp, refuses at start a
// batch that some size in the range does not divide); the peak learning rate (train::PeakLr) and,
// up to rounding, the steps per epoch follow the global batch, so they do not change with the
// size either. Each epoch record keeps the size that trained it, and every change of size is
// listed (world_size_changes). Which ranks exist is the launcher's knowledge (hosts, slots); when
// the size changes, and that it happens at an epoch boundary, is the job's: a shrink is a new
// generation after a failure; a grow is Resize, accepted only when every decided epoch's
// checkpoint is committed, so the epoch in progress is the only work redone.
//
// Not thread-safe: the server serialises all calls behind one mutex.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/job/config.h"
#include "common/job/early_stopping.h"
#include "common/job/progressive.h"
#include "common/job/records.h"
#include "common/job/shards.h"
#include "common/job/types.h"
#include "common/status.h"

namespace effnet::v1 {
class JobInfo;
class JobState;
}  // namespace effnet::v1

namespace effnet::coord {

// The records the job keeps (common/job/records.h), by their short names.
using job::CheckpointRef;
using job::Clock;
using job::EpochRecord;
using job::Phase;
using job::PhaseName;
using job::WorkerInfo;
using job::WorkerRecord;
using job::WorkerState;
using job::WorkerStateName;

// What the job is about; fixed for its whole life and checked again on restore.
struct JobSetup {
  int world_size = 1;      // the full size (Note [elastic world size])
  int min_world_size = 0;  // smallest launch; 0: world_size (not elastic)
  job::JobConfig config;
  std::vector<int64_t> train_indices;  // the train split of the data set
  std::string data_path;               // for the state file and the messages
  // The run's checkpoint folder: committed paths must name a directory directly inside it
  // (compared after making both absolute and normal). "" = not checked beyond refusing "..".
  std::string checkpoint_dir;
};

// The smallest launch of a job: setup.min_world_size, or world_size when it is 0.
int MinWorldSize(const JobSetup& setup);

class Job {
 public:
  Job(JobSetup setup, int64_t generation);
  // Restores a job from its state file's text (the message JobStateFile, coordinator/job_state.h).
  // The file's format must be this build's, and the setup the one the state was written with
  // (world size, seed, epochs, train split); `generation` above the stored one starts a new
  // launch at once.
  static Result<Job> Restore(const std::string& state_json, JobSetup setup, int64_t generation,
                             Clock::time_point now);
  // The state file's text: JobStateFile in protobuf's JSON mapping.
  std::string ToJson() const;
  // The job's wire form, as GetJobState answers it; `now` gives the workers' time since their
  // last heartbeat.
  void ToProto(Clock::time_point now, v1::JobState* out) const;
  void ToProto(v1::JobInfo* out) const;

  // --- worker calls (a refusal is a Status with its code and reason; the server maps it to gRPC)
  // ---
  Status Register(const WorkerInfo& w, Clock::time_point now);
  // Note [one job config]: the coordinator's job: section is the job's one source (epochs,
  // progressive stages, early stopping, seed). A worker started with another one (a stray
  // --set job.epochs=...) would plan its learning-rate schedule for a job the coordinator does not
  // run; it is refused at registration naming each differing key. "" (not sent) is not checked.
  Status CheckJobConfig(const WorkerInfo& w, const std::string& job_yaml) const;
  Result<job::EpochPlan> Plan(const WorkerInfo& w, int epoch);
  // Stores the report; `*decided` is set when the decision of r.epoch exists (possibly made by
  // this call).
  Status Report(const WorkerInfo& w, const job::RankMetrics& r, bool* decided);
  Status Commit(const WorkerInfo& w, int epoch, const std::string& path, bool is_best);
  Status Beat(const WorkerInfo& w, int epoch, int64_t step, Clock::time_point now);
  // Note [failure causes]: a worker that ends on an error it caught (a checkpoint it cannot
  // write, a refused call, a bad store) reports the error's text before it leaves; otherwise the
  // coordinator would only see it leave ("left before the job finished"). The text is kept as
  // the rank's failure (WorkerStatus.failure) and, for the job's first failure, in the failure
  // reason: "rank 0 (host h, pid 42) failed at epoch 3 of generation 0: <cause>". Like every
  // report it is checked (Note [reports are checked]): non-empty UTF-8 of at most
  // job::kMaxFailureCauseBytes. Accepted also after the job failed or finished (the rank's own
  // cause is still recorded); the worker counts as left.
  Status WorkerFailed(const WorkerInfo& w, const std::string& cause);
  // Note [resume fallback under a coordinator]: the last committed checkpoint can be unreadable
  // when a launch resumes (a disk error, a flipped bit: Note [resume fallback] in
  // worker/train/trainer.cpp). Each worker then resumes from the newest older checkpoint that
  // verifies and says so here, naming the unreadable one and why; the job rolls back to that
  // epoch as a new generation does (Note [no epoch twice]): later decisions are dropped, the
  // early-stopping state of the fallback epoch restored, and the epochs after it trained again.
  // Accepted only when the unreadable path is the job's last committed checkpoint, the fallback
  // is an older decided epoch inside the checkpoint folder, and the launch has not decided an
  // epoch or received a report yet (its ranks all start from one checkpoint); a second rank
  // naming the same fallback is answered alike. The roll-back is kept in `failures`.
  Status FallBack(const WorkerInfo& w, const std::string& unreadable_path,
                  const CheckpointRef& fallback, const std::string& reason);
  // The worker's heartbeat stream ended: on purpose (`leaving`: the worker is done) or broken
  // (killed or crashed, or a network blip: see CheckDeadlines). Returns true when the job changed.
  bool StreamEnded(const WorkerInfo& w, bool leaving, Clock::time_point now);
  // Marks dead, and names, the workers whose stream broke more than `reconnect_grace` ago without
  // a new one (earliest break first: that is the rank that died first), then those silent for
  // longer than `timeout`. Returns true when the job changed.
  //
  // Note [broken stream grace]: a broken stream alone does not kill a worker at once; a worker
  // whose connection blipped reconnects (a new stream's beat clears the mark) within the grace.
  bool CheckDeadlines(Clock::time_point now, std::chrono::duration<double> timeout,
                      std::chrono::duration<double> reconnect_grace);
  // Note [elastic world size]: ends the running launch at an epoch boundary (every decided
  // epoch's checkpoint committed) and opens generation + 1 with `world_size` ranks; `reason` is
  // recorded with the change. The old launch's workers are refused as stale from now on.
  Status Resize(int world_size, const std::string& reason);

  // --- state ---
  Phase phase() const { return phase_; }
  int64_t generation() const { return generation_; }
  int next_epoch() const { return next_epoch_; }
  int world_size() const { return setup_.world_size; }
  int min_world_size() const { return MinWorldSize(setup_); }
  // This generation's size; 0 until its first rank registered (Note [elastic world size]).
  int launch_world_size() const { return launch_world_size_; }
  const std::vector<std::string>& world_size_changes() const { return world_size_changes_; }
  const JobSetup& setup() const { return setup_; }
  const std::string& job_id() const { return job_id_; }
  const std::vector<EpochRecord>& history() const { return history_; }
  const EpochRecord* Record(int epoch) const;
  const CheckpointRef& last_checkpoint() const { return last_checkpoint_; }
  const CheckpointRef& best_checkpoint() const { return best_checkpoint_; }
  const std::string& failure_reason() const { return failure_reason_; }
  const std::vector<int>& dead_ranks() const { return dead_ranks_; }
  const std::vector<std::string>& failures() const { return failures_; }
  const std::map<int, WorkerRecord>& workers() const { return workers_; }
  std::vector<int> MissingReports() const;
  int registered() const;
  int best_epoch() const { return early_stopping_.state().best_epoch; }
  // One line: the last epoch's status, or what the job waits for.
  std::string StatusLine() const;
  // Increases with every change (for WatchJobState and the state file).
  int64_t version() const { return version_; }

 private:
  Status CheckMember(const WorkerInfo& w, bool allow_finished) const;
  void StartGeneration(int64_t generation);
  // The size ranks of this generation must have: fixed, or the full size until fixed.
  int ExpectedWorldSize() const;
  // Fixes this generation's size; records a change from the size of the last kept epoch.
  void FixLaunchWorldSize(int world_size, const std::string& reason);
  // Drops the decisions after `epoch` and restores the early-stopping state after it; the job
  // continues with epoch + 1 (Note [no epoch twice]).
  void RollBackTo(int epoch);
  // A committed path must name a directory directly inside the run's checkpoint folder.
  Status CheckCheckpointPath(const WorkerInfo& w, const std::string& path) const;
  void Decide();
  // "rank R (host, pid) WHAT at epoch E of generation G[: CAUSE]" becomes the failure reason.
  void Fail(const WorkerRecord& w, const std::string& what, const std::string& cause = "");
  void Changed() { ++version_; }

  JobSetup setup_;
  std::string job_id_;
  int64_t generation_ = 0;
  Phase phase_ = Phase::kWaitingForWorkers;
  int next_epoch_ = 0;
  job::EarlyStopping early_stopping_;
  std::vector<EpochRecord> history_;
  std::map<int, job::RankMetrics> pending_;  // reports of next_epoch_
  std::map<int, WorkerRecord> workers_;      // this generation's ranks
  CheckpointRef last_checkpoint_, best_checkpoint_;
  std::string failure_reason_;
  std::vector<int> dead_ranks_;
  std::vector<std::string> failures_;  // every failure so far, "generation 0: rank 1 ..."
  int launch_world_size_ = 0;          // Note [elastic world size]
  std::vector<std::string> world_size_changes_;
  int64_t version_ = 1;
  // Cache of the last computed plan (all ranks ask for the same epoch).
  int cached_plan_epoch_ = -1;
  std::vector<std::vector<int64_t>> cached_plan_;
};

// "epoch 3/10 | stage 1 @ 192px | 1234 img/s | loss 0.512 acc 0.871 | val loss 0.49 acc 0.90 |
//  step ms r0 120 r1 310 (slow)": ranks whose step time is above 1.25x the median are marked.
std::string FormatStatusLine(const EpochRecord& r, int total_epochs, int num_stages);

}  // namespace effnet::coord
