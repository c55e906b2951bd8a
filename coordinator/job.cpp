#include "coordinator/job.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "common/hash.h"
#include "common/log.h"
#include "common/text.h"
#include "common/utf8.h"
#include "coordinator/job_state.h"
#include "proto/convert.h"
#include "proto/coordinator.pb.h"
#include "worker/train/config.h"

namespace effnet::coord {
namespace {

// Fingerprint of the train split, so a restored state is not applied to another data set: FNV-1a
// 64 over each index's 8 bytes, least significant first.
uint64_t HashIndices(const std::vector<int64_t>& v) {
  uint64_t h = kFnvOffsetBasis;
  for (int64_t x : v) {
    unsigned char bytes[8];
    for (int i = 0; i < 8; ++i) {
      bytes[i] = static_cast<unsigned char>(static_cast<uint64_t>(x) >> (8 * i));
    }
    h = Fnv1a64(bytes, sizeof(bytes), h);
  }
  return h;
}

std::string CkptText(const CheckpointRef& c) {
  return c.epoch < 0
             ? "the start (no checkpoint committed)"
             : "the checkpoint of epoch " + std::to_string(c.epoch + 1) + " (" + c.path + ")";
}

// Note [reports are checked]: a worker holds the token but is still not trusted with the job's
// numbers. Every field of a report is checked against what the job can produce before it enters
// a decision: finite numbers, accuracies in [0, 1], losses, rates and times >= 0, the rank's
// sample count within its shard, and the image size of the plan the job handed out. A refusal is
// InvalidArgument naming the worker, the epoch and the field.
Status CheckReport(const WorkerInfo& w, const job::RankMetrics& r, int64_t shard_size,
                   int image_size) {
  auto bad = [&](const std::string& field, const std::string& what) {
    return InvalidArgument(w.Describe() + " epoch " + std::to_string(r.epoch + 1) + ": metrics." +
                           field + " " + what);
  };
  auto num = [](double v) {
    std::ostringstream ss;
    ss << v;
    return ss.str();
  };
  const std::pair<const char*, double> values[] = {{"train_loss", r.train_loss},
                                                   {"train_accuracy", r.train_accuracy},
                                                   {"val_loss", r.val_loss},
                                                   {"val_accuracy", r.val_accuracy},
                                                   {"images_per_second", r.images_per_second},
                                                   {"step_time_ms", r.step_time_ms}};
  for (const auto& [field, v] : values) {
    if (!std::isfinite(v)) return bad(field, "is not finite (" + num(v) + ")");
    if (v < 0) return bad(field, "is negative (" + num(v) + ")");
  }
  for (const auto& [field, v] :
       {std::pair{"train_accuracy", r.train_accuracy}, std::pair{"val_accuracy", r.val_accuracy}}) {
    if (v > 1) return bad(field, "is outside [0, 1] (" + num(v) + ")");
  }
  if (r.train_samples < 0 || r.train_samples > shard_size) {
    return bad("train_samples", std::to_string(r.train_samples) + " is outside [0, " +
                                    std::to_string(shard_size) + "] (the rank's shard)");
  }
  if (r.image_size != image_size) {
    return bad("image_size", std::to_string(r.image_size) + " differs from the plan's " +
                                 std::to_string(image_size));
  }
  return Status::Ok();
}

// Text a worker reports (a failure cause, why a checkpoint is unreadable): non-empty UTF-8 of at
// most job::kMaxFailureCauseBytes (Note [reports are checked]).
Status CheckReportedText(const WorkerInfo& w, const std::string& what, const std::string& text) {
  if (text.empty()) return InvalidArgument(w.Describe() + " reported " + what + " without text");
  if (text.size() > job::kMaxFailureCauseBytes) {
    return InvalidArgument(w.Describe() + " reported " + what + " of " +
                           std::to_string(text.size()) + " bytes (at most " +
                           std::to_string(job::kMaxFailureCauseBytes) + ")");
  }
  if (const size_t bad = FirstInvalidUtf8(text); bad != std::string::npos) {
    return InvalidArgument(w.Describe() + " reported " + what + " that is not UTF-8 (byte " +
                           std::to_string(bad) + ")");
  }
  return Status::Ok();
}

}  // namespace

int MinWorldSize(const JobSetup& setup) {
  return setup.min_world_size > 0 ? setup.min_world_size : setup.world_size;
}

std::string FormatStatusLine(const EpochRecord& r, int total_epochs, int num_stages) {
  std::ostringstream ss;
  ss << "epoch " << r.epoch + 1 << "/" << total_epochs << " | stage " << r.stage.index + 1 << "/"
     << num_stages << " @ " << r.stage.image_size << "px | " << Fixed(r.images_per_second, 1)
     << " img/s | loss " << Fixed(r.train_loss, 4) << " acc " << Fixed(r.train_accuracy, 4)
     << " | val loss " << Fixed(r.val_loss, 4) << " acc " << Fixed(r.val_accuracy, 4)
     << " | step ms";
  std::vector<double> steps;
  for (const auto& k : r.ranks) steps.push_back(k.step_time_ms);
  double median = 0;
  if (!steps.empty()) {
    std::sort(steps.begin(), steps.end());
    median = steps[steps.size() / 2];
    if (steps.size() % 2 == 0) median = 0.5 * (steps[steps.size() / 2 - 1] + median);
  }
  for (const auto& k : r.ranks) {
    ss << " r" << k.rank << " " << Fixed(k.step_time_ms, 1);
    if (r.ranks.size() > 1 && k.step_time_ms > 1.25 * median) ss << " (slow)";
  }
  if (r.decision.is_best) ss << " | best";
  if (r.decision.stop) ss << " | stop: " << r.decision.reason;
  return ss.str();
}

Job::Job(JobSetup setup, int64_t generation)
    : setup_(std::move(setup)),
      job_id_(RandomHexId()),
      generation_(generation),
      early_stopping_(setup_.config.early_stopping) {}

Result<Job> Job::Restore(const std::string& text, JobSetup setup, int64_t generation,
                         Clock::time_point now) {
  EFFNET_ASSIGN_OR_RETURN(const v1::JobStateFile file, ParseStateFile(text));
  Job job(std::move(setup), generation);
  const JobSetup& s = job.setup_;
  const v1::JobState& st = file.state();
  const v1::JobInfo& info = st.job();
  auto mismatch = [](const std::string& what, const std::string& stored,
                     const std::string& now_value) {
    return FailedPrecondition("the state belongs to a job with " + what + " " + stored +
                              ", this coordinator was started with " + now_value +
                              " (use another --state-dir for a new job)");
  };
  if (info.world_size() != s.world_size) {
    return mismatch("world size", std::to_string(info.world_size()), std::to_string(s.world_size));
  }
  // Older files have no minimum (0): a job that was not elastic.
  const int stored_min = info.min_world_size() > 0 ? info.min_world_size() : info.world_size();
  if (stored_min != MinWorldSize(s)) {
    return mismatch("minimum world size", std::to_string(stored_min),
                    std::to_string(MinWorldSize(s)));
  }
  if (info.seed() != s.config.seed) {
    return mismatch("seed", std::to_string(info.seed()), std::to_string(s.config.seed));
  }
  if (info.epochs() != s.config.epochs) {
    return mismatch("epochs", std::to_string(info.epochs()), std::to_string(s.config.epochs));
  }
  if (file.train_hash() != HashIndices(s.train_indices) ||
      info.num_train_samples() != static_cast<int64_t>(s.train_indices.size())) {
    return mismatch(
        "a train split of",
        std::to_string(info.num_train_samples()) + " samples (data " + file.data() + ")",
        "another one (" + s.data_path + ")");
  }
  auto malformed = [](const Status& why) { return DataLoss("malformed state: " + why.message()); };
  auto phase = wire::FromProto(info.phase());
  if (!phase.ok()) return malformed(phase.status());
  job.job_id_ = info.job_id();
  job.generation_ = info.generation();
  job.phase_ = *phase;
  job.next_epoch_ = info.next_epoch();
  job.last_checkpoint_ = wire::FromProto(info.last_checkpoint());
  job.best_checkpoint_ = wire::FromProto(info.best_checkpoint());
  job.failure_reason_ = st.failure_reason();
  job.dead_ranks_.assign(st.dead_ranks().begin(), st.dead_ranks().end());
  job.failures_.assign(st.failures().begin(), st.failures().end());
  job.world_size_changes_.assign(st.world_size_changes().begin(), st.world_size_changes().end());
  job.launch_world_size_ = info.launch_world_size();
  if (job.launch_world_size_ < 0 || job.launch_world_size_ > s.world_size) {
    return malformed(InvalidArgument("launch world size " +
                                     std::to_string(info.launch_world_size()) + " outside [0, " +
                                     std::to_string(s.world_size) + "]"));
  }
  job.version_ = st.version() + 1;
  for (const auto& e : st.history()) job.history_.push_back(wire::FromProto(e));
  // Note [no epoch twice]: the current early-stopping state is the last record's.
  if (!job.history_.empty()) job.early_stopping_.Restore(job.history_.back().early_stopping_after);
  for (const auto& p : file.pending()) {
    job::RankMetrics r = wire::FromProto(p);
    job.pending_[r.rank] = r;
  }
  for (const auto& w : file.workers()) {
    auto rec = wire::FromProto(w);
    if (!rec.ok()) return malformed(rec.status());
    // Note [restored deadlines]: the workers could not reach a dead coordinator; their
    // heartbeat clocks restart now, so they get one full timeout to reconnect.
    rec->last_seen = now;
    job.workers_[rec->info.rank] = *rec;
  }
  // A file from before elastic launches: its generation had the full size.
  if (job.launch_world_size_ == 0 && !job.workers_.empty()) job.launch_world_size_ = s.world_size;
  if (generation > job.generation_) job.StartGeneration(generation);
  return job;
}

std::string Job::ToJson() const {
  v1::JobStateFile file;
  file.set_format(kStateFormat);
  ToProto(Clock::now(), file.mutable_state());
  // Time since a heartbeat means nothing to a coordinator that reads the file later.
  for (auto& w : *file.mutable_state()->mutable_workers()) w.clear_seconds_since_heartbeat();
  file.set_data(setup_.data_path);
  file.set_train_hash(HashIndices(setup_.train_indices));
  file.set_job_config(train::JobConfigToYaml(setup_.config));
  for (const auto& [rank, r] : pending_) wire::ToProto(r, file.add_pending());
  for (const auto& [rank, w] : workers_) wire::ToProto(w, file.add_workers());
  return wire::ToJsonText(file);
}

void Job::ToProto(v1::JobInfo* out) const {
  out->set_job_id(job_id_);
  out->set_world_size(setup_.world_size);
  out->set_generation(generation_);
  out->set_epochs(setup_.config.epochs);
  out->set_seed(setup_.config.seed);
  out->set_num_train_samples(static_cast<int64_t>(setup_.train_indices.size()));
  out->set_next_epoch(next_epoch_);
  wire::ToProto(last_checkpoint_, out->mutable_last_checkpoint());
  wire::ToProto(best_checkpoint_, out->mutable_best_checkpoint());
  out->set_phase(wire::ToProto(phase_));
  out->set_min_world_size(MinWorldSize(setup_));
  out->set_launch_world_size(launch_world_size_);
}

void Job::ToProto(Clock::time_point now, v1::JobState* out) const {
  ToProto(out->mutable_job());
  out->set_version(version_);
  out->set_status_line(StatusLine());
  out->set_failure_reason(failure_reason_);
  for (int r : dead_ranks_) out->add_dead_ranks(r);
  for (const auto& [rank, w] : workers_) wire::ToProto(w, now, out->add_workers());
  for (const auto& r : history_) wire::ToProto(r, out->add_history());
  out->set_best_epoch(best_epoch());
  for (const auto& f : failures_) out->add_failures(f);
  for (const auto& c : world_size_changes_) out->add_world_size_changes(c);
}

const EpochRecord* Job::Record(int epoch) const {
  for (const auto& r : history_) {
    if (r.epoch == epoch) return &r;
  }
  return nullptr;
}

int Job::registered() const { return static_cast<int>(workers_.size()); }

std::vector<int> Job::MissingReports() const {
  std::vector<int> missing;
  for (int r = 0; r < ExpectedWorldSize(); ++r) {
    if (!pending_.count(r)) missing.push_back(r);
  }
  return missing;
}

std::string Job::StatusLine() const {
  switch (phase_) {
    case Phase::kWaitingForWorkers:
      return "generation " + std::to_string(generation_) + ": waiting for workers (" +
             std::to_string(registered()) + "/" + std::to_string(ExpectedWorldSize()) +
             " registered), next epoch " + std::to_string(next_epoch_ + 1);
    case Phase::kFailed:
      return "failed: " + failure_reason_;
    case Phase::kFinished:
      return "finished: " +
             (history_.empty() ? std::string("no epoch trained") : history_.back().status_line) +
             " | best epoch " + std::to_string(best_epoch() + 1);
    case Phase::kRunning:
      if (history_.empty()) {
        return "running epoch " + std::to_string(next_epoch_ + 1) + ", generation " +
               std::to_string(generation_);
      }
      return history_.back().status_line;
  }
  return "";
}

void Job::StartGeneration(int64_t generation) {
  log::Warn("generation " + std::to_string(generation) + ": a new launch takes over from " +
            "generation " + std::to_string(generation_) + " (" + PhaseName(phase_) +
            "); resuming from " + CkptText(last_checkpoint_));
  generation_ = generation;
  workers_.clear();
  pending_.clear();
  dead_ranks_.clear();
  failure_reason_.clear();
  launch_world_size_ = 0;  // fixed by the first registration or by Resize
  // Note [no epoch twice]: drop the decisions after the last committed checkpoint.
  RollBackTo(last_checkpoint_.epoch);
  const bool done = !history_.empty() && history_.back().decision.stop;
  phase_ = done ? Phase::kFinished : Phase::kWaitingForWorkers;
  Changed();
}

int Job::ExpectedWorldSize() const {
  return launch_world_size_ != 0 ? launch_world_size_ : setup_.world_size;
}

void Job::FixLaunchWorldSize(int world_size, const std::string& reason) {
  launch_world_size_ = world_size;
  int before = history_.empty() ? 0 : history_.back().world_size;
  if (before == 0) before = setup_.world_size;  // no epoch yet, or a record from an older file
  if (world_size == before) return;
  const std::string change = "generation " + std::to_string(generation_) + " from epoch " +
                             std::to_string(next_epoch_ + 1) + ": " + std::to_string(world_size) +
                             " of " + std::to_string(setup_.world_size) + " ranks (was " +
                             std::to_string(before) + "; " + reason + ")";
  log::Warn("world size changes: " + change);
  world_size_changes_.push_back(change);
}

Status Job::Resize(int world_size, const std::string& reason) {
  const int min_size = MinWorldSize(setup_);
  if (world_size < min_size || world_size > setup_.world_size) {
    return InvalidArgument("resize to " + std::to_string(world_size) + " ranks: the job runs on " +
                           std::to_string(min_size) + " to " + std::to_string(setup_.world_size) +
                           " ranks");
  }
  if (phase_ != Phase::kRunning) {
    return FailedPrecondition(std::string("resize: the job is ") + PhaseName(phase_) +
                              " (a relaunch after a failure picks its size itself)");
  }
  if (world_size == launch_world_size_) {
    return InvalidArgument("resize: generation " + std::to_string(generation_) + " already has " +
                           std::to_string(world_size) + " ranks");
  }
  // Note [elastic world size]: only at an epoch boundary, so no decided epoch is trained again.
  if (last_checkpoint_.epoch != next_epoch_ - 1) {
    return FailedPrecondition("resize: epoch " + std::to_string(next_epoch_) +
                              " is decided but its checkpoint is not committed yet (last: " +
                              CkptText(last_checkpoint_) + "); ask again after the commit");
  }
  StartGeneration(generation_ + 1);
  FixLaunchWorldSize(world_size, reason);
  return Status::Ok();
}

void Job::RollBackTo(int epoch) {
  cached_plan_epoch_ = -1;
  while (!history_.empty() && history_.back().epoch > epoch) history_.pop_back();
  next_epoch_ = epoch + 1;
  early_stopping_ = job::EarlyStopping(setup_.config.early_stopping);
  if (!history_.empty()) early_stopping_.Restore(history_.back().early_stopping_after);
  if (best_checkpoint_.epoch > epoch) best_checkpoint_ = {};
}

Status Job::CheckMember(const WorkerInfo& w, bool allow_finished) const {
  if (w.generation < generation_) {
    return PermissionDenied("stale generation " + std::to_string(w.generation) +
                            ": the job is at generation " + std::to_string(generation_) +
                            " (a newer launch took over; this worker, " + w.Describe() +
                            ", belongs to an old launch)");
  }
  if (w.generation > generation_) {
    return FailedPrecondition("generation " + std::to_string(w.generation) +
                              " has not registered yet (the job is at " +
                              std::to_string(generation_) + "): call RegisterWorker first");
  }
  if (w.rank < 0 || w.rank >= ExpectedWorldSize()) {
    return InvalidArgument("rank " + std::to_string(w.rank) + " out of range [0, " +
                           std::to_string(ExpectedWorldSize()) + ")");
  }
  auto it = workers_.find(w.rank);
  if (it == workers_.end()) {
    return FailedPrecondition(w.Describe() + " is not registered in generation " +
                              std::to_string(generation_));
  }
  if (it->second.info.worker_id != w.worker_id) {
    return PermissionDenied("rank " + std::to_string(w.rank) + " belongs to another worker (" +
                            it->second.info.Describe() + ")");
  }
  if (phase_ == Phase::kFailed) {
    return Aborted("job failed in generation " + std::to_string(generation_) + ": " +
                   failure_reason_);
  }
  if (phase_ == Phase::kFinished && !allow_finished) {
    return FailedPrecondition("job already finished");
  }
  return Status::Ok();
}

Status Job::CheckJobConfig(const WorkerInfo& w, const std::string& job_yaml) const {
  if (job_yaml.empty()) return Status::Ok();
  auto theirs = train::ParseTrainConfig(job_yaml);
  if (!theirs.ok()) {
    return InvalidArgument(w.Describe() +
                           ": its job: section does not parse: " + theirs.status().ToString());
  }
  train::TrainConfig mine, worker;
  mine.job = setup_.config;
  worker.job = theirs->job;
  const auto diffs = train::RunDifferences(mine, worker);
  if (diffs.empty()) return Status::Ok();
  std::string text;
  for (const auto& d : diffs) text += (text.empty() ? "" : "; ") + d;
  return FailedPrecondition(
      w.Describe() + " was started with another job: section than the coordinator's (" + text +
      ", coordinator -> worker); the coordinator's config is the job's one source: give the "
      "workers the same --config and job.* settings as the coordinator (effnet-run does when "
      "job.* overrides go into the config file, not after '--')");
}

Status Job::Register(const WorkerInfo& w, Clock::time_point now) {
  const int min_size = MinWorldSize(setup_);
  if (w.world_size < min_size || w.world_size > setup_.world_size) {
    const std::string allowed = min_size == setup_.world_size
                                    ? std::to_string(setup_.world_size)
                                    : "between " + std::to_string(min_size) + " and " +
                                          std::to_string(setup_.world_size) +
                                          " (Note [elastic world size])";
    return InvalidArgument(w.Describe() + " says world size " + std::to_string(w.world_size) +
                           ", the job has " + allowed);
  }
  if (w.rank < 0 || w.rank >= w.world_size) {
    return InvalidArgument("rank " + std::to_string(w.rank) + " out of range [0, " +
                           std::to_string(w.world_size) + ")");
  }
  if (w.worker_id.empty()) return InvalidArgument("empty worker_id");
  if (w.generation < generation_) return CheckMember(w, true);
  if (w.generation > generation_) StartGeneration(w.generation);
  if (phase_ == Phase::kFailed) {
    return Aborted("job failed in generation " + std::to_string(generation_) + ": " +
                   failure_reason_ + " (a new launch must use generation " +
                   std::to_string(generation_ + 1) + ")");
  }
  if (launch_world_size_ != 0 && w.world_size != launch_world_size_) {
    return InvalidArgument(w.Describe() + " says world size " + std::to_string(w.world_size) +
                           ", but generation " + std::to_string(generation_) + " has " +
                           std::to_string(launch_world_size_) + " ranks");
  }
  auto it = workers_.find(w.rank);
  if (it != workers_.end()) {
    WorkerRecord& rec = it->second;
    if (rec.info.worker_id == w.worker_id) {  // a retry of the same process
      rec.last_seen = now;
      return Status::Ok();
    }
    return AlreadyExists("duplicate rank " + std::to_string(w.rank) + ": already registered by " +
                         rec.info.Describe() + " in generation " + std::to_string(generation_) +
                         "; refused " + w.Describe());
  }
  if (launch_world_size_ == 0 && phase_ != Phase::kFinished) {
    FixLaunchWorldSize(w.world_size, failures_.empty() ? "launched with fewer ranks"
                                                       : "after: " + failures_.back());
  }
  WorkerRecord rec;
  rec.info = w;
  rec.last_seen = now;
  rec.epoch = next_epoch_;
  workers_[w.rank] = rec;
  log::Info("registered " + w.Describe() + " device " + w.device + ", generation " +
            std::to_string(generation_) + " (" + std::to_string(registered()) + "/" +
            std::to_string(ExpectedWorldSize()) + ")");
  if (phase_ == Phase::kWaitingForWorkers && registered() == launch_world_size_) {
    phase_ = Phase::kRunning;
    log::Info("all " + std::to_string(launch_world_size_) +
              " ranks registered: running from epoch " + std::to_string(next_epoch_ + 1) + " (" +
              CkptText(last_checkpoint_) + ")");
  }
  Changed();
  return Status::Ok();
}

Result<job::EpochPlan> Job::Plan(const WorkerInfo& w, int epoch) {
  if (auto st = CheckMember(w, /*allow_finished=*/true); !st.ok()) return st;
  if (phase_ == Phase::kWaitingForWorkers) {
    return FailedPrecondition("the job is not running yet: " + std::to_string(registered()) + "/" +
                              std::to_string(ExpectedWorldSize()) + " ranks registered");
  }
  if (epoch < 0) {  // a malformed request: name the raw wire field (Note [epoch numbering])
    return InvalidArgument("epoch index " + std::to_string(epoch) + " < 0 (0-based on the wire)");
  }
  job::EpochPlan out;
  out.epoch = epoch;
  out.num_train_samples = static_cast<int64_t>(setup_.train_indices.size());
  const bool stopped = !history_.empty() && history_.back().decision.stop;
  // Only a job that decided to stop answers "stop": a plan for an epoch it has not reached (even
  // one past job.epochs) is refused below, not answered with "all epochs done".
  if (phase_ == Phase::kFinished || stopped) {
    out.stop = true;
    out.stop_reason = stopped ? history_.back().decision.reason
                              : "all " + std::to_string(setup_.config.epochs) + " epochs done";
    return out;
  }
  if (epoch != next_epoch_) {
    return FailedPrecondition("epoch " + std::to_string(epoch + 1) + " requested by " +
                              w.Describe() + ", but the job is at epoch " +
                              std::to_string(next_epoch_ + 1) + " (resume from " +
                              CkptText(last_checkpoint_) + ")");
  }
  if (cached_plan_epoch_ != epoch) {
    // Note [elastic world size]: the whole split over this generation's ranks.
    cached_plan_ =
        job::PlanShards(setup_.train_indices, setup_.config.seed, epoch, launch_world_size_);
    cached_plan_epoch_ = epoch;
  }
  out.stage = job::StageForEpoch(setup_.config.progressive, epoch, setup_.config.epochs);
  out.sample_indices = cached_plan_[static_cast<size_t>(w.rank)];
  return out;
}

Status Job::Report(const WorkerInfo& w, const job::RankMetrics& r, bool* decided) {
  *decided = false;
  if (r.epoch < next_epoch_ && Record(r.epoch) != nullptr) {
    // A retry after the decision (the coordinator answers it again, also when finished).
    if (auto st = CheckMember(w, true); !st.ok()) return st;
    *decided = true;
    return Status::Ok();
  }
  if (auto st = CheckMember(w, false); !st.ok()) return st;
  if (phase_ != Phase::kRunning) {
    return FailedPrecondition(std::string("the job is ") + PhaseName(phase_));
  }
  if (r.rank != w.rank) {
    return InvalidArgument(w.Describe() + " reported metrics of rank " + std::to_string(r.rank));
  }
  if (r.epoch != next_epoch_) {
    return FailedPrecondition(w.Describe() + " reported epoch " + std::to_string(r.epoch + 1) +
                              ", but the job is at epoch " + std::to_string(next_epoch_ + 1));
  }
  EFFNET_RETURN_IF_ERROR(CheckReport(
      w, r,
      job::ShardSize(static_cast<int64_t>(setup_.train_indices.size()), launch_world_size_, r.rank),
      job::StageForEpoch(setup_.config.progressive, r.epoch, setup_.config.epochs).image_size));
  pending_[r.rank] = r;
  Changed();
  if (static_cast<int>(pending_.size()) == launch_world_size_) {
    Decide();
    *decided = true;
  }
  return Status::Ok();
}

void Job::Decide() {
  EpochRecord rec;
  rec.epoch = next_epoch_;
  rec.generation = generation_;
  rec.world_size = launch_world_size_;
  rec.stage = job::StageForEpoch(setup_.config.progressive, rec.epoch, setup_.config.epochs);
  int64_t total = 0;
  for (const auto& [rank, r] : pending_) total += std::max<int64_t>(0, r.train_samples);
  for (const auto& [rank, r] : pending_) {
    // Note [metric weights]: train numbers are weighted by each rank's sample count (shards differ
    // by one sample); with no counts given every rank weighs the same.
    const double wgt = total > 0
                           ? static_cast<double>(std::max<int64_t>(0, r.train_samples)) / total
                           : 1.0 / static_cast<double>(pending_.size());
    rec.train_loss += wgt * r.train_loss;
    rec.train_accuracy += wgt * r.train_accuracy;
    rec.val_loss += wgt * r.val_loss;
    rec.val_accuracy += wgt * r.val_accuracy;
    rec.images_per_second += r.images_per_second;
    rec.ranks.push_back(r);
  }
  const bool last = rec.epoch + 1 >= setup_.config.epochs;
  const job::EpochDecision out =
      early_stopping_.Update(rec.epoch, rec.val_loss, rec.val_accuracy, last);
  rec.decision = out;
  rec.early_stopping_after = early_stopping_.state();
  rec.status_line =
      FormatStatusLine(rec, setup_.config.epochs, setup_.config.progressive.num_stages);
  log::Info(rec.status_line);
  history_.push_back(std::move(rec));
  pending_.clear();
  ++next_epoch_;
  if (out.stop) {
    phase_ = Phase::kFinished;
    log::Info("job finished after epoch " + std::to_string(next_epoch_) + ": " + out.reason +
              "; best epoch " + std::to_string(out.best_epoch + 1));
  }
  Changed();
}

Status Job::CheckCheckpointPath(const WorkerInfo& w, const std::string& path) const {
  if (path.empty()) return InvalidArgument(w.Describe() + ": empty checkpoint path");
  // A committed path is handed to every later launch to resume from: it must name a directory
  // directly inside the run's checkpoint folder (no "..", no other folder).
  const std::filesystem::path p = std::filesystem::path(path).lexically_normal();
  const std::string name = p.filename().string();
  if (name.empty() || name == "." || name == "..") {
    return InvalidArgument(w.Describe() + " committed checkpoint path '" + path +
                           "': no directory name");
  }
  if (!setup_.checkpoint_dir.empty()) {
    const auto dir = std::filesystem::path(setup_.checkpoint_dir).lexically_normal();
    if (std::filesystem::absolute(p.parent_path()).lexically_normal() !=
        std::filesystem::absolute(dir).lexically_normal()) {
      return InvalidArgument(w.Describe() + " committed checkpoint path '" + path +
                             "', which is not inside the run's checkpoint folder " +
                             setup_.checkpoint_dir);
    }
  } else if (std::any_of(p.begin(), p.end(), [](const auto& part) { return part == ".."; })) {
    return InvalidArgument(w.Describe() + " committed checkpoint path '" + path +
                           "': '..' is not allowed");
  }
  return Status::Ok();
}

Status Job::FallBack(const WorkerInfo& w, const std::string& unreadable_path,
                     const CheckpointRef& fallback, const std::string& reason) {
  EFFNET_RETURN_IF_ERROR(CheckMember(w, /*allow_finished=*/false));
  EFFNET_RETURN_IF_ERROR(CheckReportedText(w, "why a checkpoint is unreadable", reason));
  // Another rank (or a retry) already rolled the job back to this checkpoint.
  if (fallback.epoch == last_checkpoint_.epoch && fallback.path == last_checkpoint_.path) {
    return Status::Ok();
  }
  const std::string refused = w.Describe() + " cannot fall back from " + unreadable_path +
                              " to the checkpoint of epoch " + std::to_string(fallback.epoch + 1) +
                              " (" + fallback.path + "): ";
  if (unreadable_path != last_checkpoint_.path || last_checkpoint_.epoch < 0) {
    return FailedPrecondition(refused + "the job's last committed checkpoint is " +
                              CkptText(last_checkpoint_));
  }
  if (fallback.epoch < 0 || fallback.epoch >= last_checkpoint_.epoch ||
      Record(fallback.epoch) == nullptr) {
    return InvalidArgument(refused + "not an older decided epoch than " +
                           CkptText(last_checkpoint_));
  }
  EFFNET_RETURN_IF_ERROR(CheckCheckpointPath(w, fallback.path));
  if (!pending_.empty() || history_.back().generation == generation_) {
    return FailedPrecondition(refused + "generation " + std::to_string(generation_) +
                              " has already trained from " + CkptText(last_checkpoint_) +
                              " (a fallback is only accepted before a launch's first epoch)");
  }
  const std::string msg = "generation " + std::to_string(generation_) + ": " + w.Describe() +
                          " cannot read " + CkptText(last_checkpoint_) + ": " + reason +
                          "; the job falls back to " + CkptText(fallback) +
                          " and trains the epochs after it again";
  log::Warn(msg);
  failures_.push_back(msg);
  last_checkpoint_ = fallback;
  RollBackTo(fallback.epoch);
  Changed();
  return Status::Ok();
}

Status Job::Commit(const WorkerInfo& w, int epoch, const std::string& path, bool is_best) {
  if (auto st = CheckMember(w, true); !st.ok()) return st;
  EFFNET_RETURN_IF_ERROR(CheckCheckpointPath(w, path));
  if (Record(epoch) == nullptr) {
    return FailedPrecondition("checkpoint of epoch " + std::to_string(epoch + 1) + " (" + path +
                              ") committed before the epoch's decision (the job is at epoch " +
                              std::to_string(next_epoch_ + 1) + ")");
  }
  if (epoch < last_checkpoint_.epoch) {
    return FailedPrecondition("checkpoint of epoch " + std::to_string(epoch + 1) +
                              " is older than the last committed (" + CkptText(last_checkpoint_) +
                              ")");
  }
  // Of two files of one epoch (last + best), the plain one is the resume point.
  if (epoch > last_checkpoint_.epoch || !is_best) last_checkpoint_ = {epoch, path};
  if (is_best) best_checkpoint_ = {epoch, path};
  log::Info("committed checkpoint of epoch " + std::to_string(epoch + 1) + ": " + path +
            (is_best ? " (best)" : ""));
  Changed();
  return Status::Ok();
}

Status Job::Beat(const WorkerInfo& w, int epoch, int64_t step, Clock::time_point now) {
  if (auto st = CheckMember(w, true); !st.ok()) return st;
  // Note [reports are checked]: the live view shows these; -1 = before the first epoch.
  if (epoch < -1 || epoch > setup_.config.epochs || step < 0) {
    return InvalidArgument(w.Describe() + " heartbeat: epoch index " + std::to_string(epoch) +
                           " outside [-1, " + std::to_string(setup_.config.epochs) +
                           "] (0-based on the wire) or step " + std::to_string(step) + " < 0");
  }
  WorkerRecord& rec = workers_.at(w.rank);
  rec.last_seen = now;
  rec.disconnected_at.reset();
  rec.epoch = epoch;
  rec.step = step;
  if (rec.state == WorkerState::kRegistered) {
    rec.state = WorkerState::kAlive;
    Changed();
  }
  return Status::Ok();
}

void Job::Fail(const WorkerRecord& w, const std::string& what, const std::string& cause) {
  dead_ranks_.push_back(w.info.rank);
  const std::string msg = w.info.Describe() + " " + what + " at epoch " +
                          std::to_string(next_epoch_ + 1) + " of generation " +
                          std::to_string(generation_) + (cause.empty() ? "" : ": " + cause);
  if (phase_ == Phase::kFailed) {
    log::Warn("also lost: " + msg);
  } else {
    phase_ = Phase::kFailed;
    failure_reason_ = msg;
    failures_.push_back(msg);
    log::Error("worker lost: " + msg + "; job failed, awaiting a new launch (generation " +
               std::to_string(generation_ + 1) + ") to resume from " + CkptText(last_checkpoint_));
  }
  Changed();
}

Status Job::WorkerFailed(const WorkerInfo& w, const std::string& cause) {
  // The rank's own cause is recorded also when the job failed already (another rank first).
  if (Status st = CheckMember(w, /*allow_finished=*/true);
      !st.ok() && !(phase_ == Phase::kFailed && st.code() == StatusCode::kAborted)) {
    return st;
  }
  EFFNET_RETURN_IF_ERROR(CheckReportedText(w, "a failure cause", cause));
  WorkerRecord& rec = workers_.at(w.rank);
  if (!rec.failure.empty()) return Status::Ok();  // a retry: the first report stands
  rec.failure = cause;
  const WorkerState before = rec.state;
  rec.state = WorkerState::kLeft;
  if (phase_ == Phase::kFinished || before == WorkerState::kDead || before == WorkerState::kLeft) {
    log::Warn(w.Describe() + " failed after " +
              (phase_ == Phase::kFinished ? "the job finished" : "it was counted out") + ": " +
              cause);
    Changed();
  } else {
    Fail(rec, "failed", cause);
  }
  return Status::Ok();
}

bool Job::StreamEnded(const WorkerInfo& w, bool leaving, Clock::time_point now) {
  if (w.generation != generation_) return false;
  auto it = workers_.find(w.rank);
  if (it == workers_.end() || it->second.info.worker_id != w.worker_id) return false;
  WorkerRecord& rec = it->second;
  if (rec.state == WorkerState::kDead || rec.state == WorkerState::kLeft) return false;
  if (!leaving) {
    // Note [broken stream grace]: dead unless it reconnects within the grace (CheckDeadlines).
    if (!rec.disconnected_at) {
      rec.disconnected_at = now;
      log::Warn("heartbeat stream of " + rec.info.Describe() + " broke");
    }
    return false;
  }
  rec.state = WorkerState::kLeft;
  if (phase_ == Phase::kFailed) {
    log::Info(rec.info.Describe() + " left the failed job");
    Changed();
  } else if (phase_ == Phase::kRunning || phase_ == Phase::kWaitingForWorkers) {
    Fail(rec, "left before the job finished");
  } else {
    Changed();
  }
  return true;
}

bool Job::CheckDeadlines(Clock::time_point now, std::chrono::duration<double> timeout,
                         std::chrono::duration<double> reconnect_grace) {
  using Secs = std::chrono::duration<double>;
  bool changed = false;
  auto mark_dead = [&](WorkerRecord& rec, const std::string& what) {
    rec.state = WorkerState::kDead;
    changed = true;
    if (phase_ == Phase::kFinished) {
      Changed();
    } else {
      Fail(rec, what);
    }
  };
  // Broken streams first, oldest first: Note [broken stream] in server.cpp.
  std::vector<WorkerRecord*> broken;
  for (auto& [rank, rec] : workers_) {
    if ((rec.state == WorkerState::kRegistered || rec.state == WorkerState::kAlive) &&
        rec.disconnected_at && Secs(now - *rec.disconnected_at) > reconnect_grace) {
      broken.push_back(&rec);
    }
  }
  std::sort(broken.begin(), broken.end(), [](const WorkerRecord* a, const WorkerRecord* b) {
    return *a->disconnected_at < *b->disconnected_at;
  });
  for (WorkerRecord* rec : broken) {
    mark_dead(*rec, "lost its connection (process killed or crashed; not back within " +
                        Fixed(reconnect_grace.count(), 1) + " s)");
  }
  for (auto& [rank, rec] : workers_) {
    if (rec.state != WorkerState::kRegistered && rec.state != WorkerState::kAlive) continue;
    const Secs silent = now - rec.last_seen;
    if (silent <= timeout) continue;
    mark_dead(rec, "sent no heartbeat for " + Fixed(silent.count(), 1) + " s (timeout " +
                       Fixed(timeout.count(), 1) + " s)");
  }
  return changed;
}

}  // namespace effnet::coord
