#include "coordinator/job.h"

#include <algorithm>
#include <cstdio>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "common/log.h"
#include "worker/train/config.h"

namespace effnet::coord {
namespace {

using json = nlohmann::json;
constexpr int kStateFormat = 1;

std::string RandomId() {
  std::random_device rd;
  std::ostringstream ss;
  ss << std::hex << std::setfill('0') << std::setw(8) << rd() << std::setw(8) << rd();
  return ss.str();
}

std::string Fixed(double v, int digits) {
  std::ostringstream ss;
  ss << std::fixed << std::setprecision(digits) << v;
  return ss.str();
}

// Hash of the train split, so a restored state is not applied to another data set.
uint64_t HashIndices(const std::vector<int64_t>& v) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a over the values
  for (int64_t x : v) {
    for (int i = 0; i < 8; ++i) {
      h ^= static_cast<uint64_t>(x >> (8 * i)) & 0xffU;
      h *= 1099511628211ULL;
    }
  }
  return h;
}

json StageToJson(const job::Stage& s) {
  return {{"index", s.index},       {"image_size", s.image_size}, {"randaug", s.randaug_magnitude},
          {"mixup", s.mixup_alpha}, {"cutmix", s.cutmix_alpha},   {"dropout", s.dropout}};
}
job::Stage StageFromJson(const json& j) {
  job::Stage s;
  s.index = j.at("index");
  s.image_size = j.at("image_size");
  s.randaug_magnitude = j.at("randaug");
  s.mixup_alpha = j.at("mixup");
  s.cutmix_alpha = j.at("cutmix");
  s.dropout = j.at("dropout");
  return s;
}

json EsToJson(const job::EarlyStopping::State& s) {
  return {{"best_val_loss", s.best_val_loss},
          {"best_loss_epoch", s.best_loss_epoch},
          {"best_score", s.best_score},
          {"best_epoch", s.best_epoch},
          {"epochs_without_improvement", s.epochs_without_improvement}};
}
job::EarlyStopping::State EsFromJson(const json& j) {
  job::EarlyStopping::State s;
  s.best_val_loss = j.at("best_val_loss");
  s.best_loss_epoch = j.at("best_loss_epoch");
  s.best_score = j.at("best_score");
  s.best_epoch = j.at("best_epoch");
  s.epochs_without_improvement = j.at("epochs_without_improvement");
  return s;
}

json ReportToJson(const job::RankMetrics& r) {
  return {{"rank", r.rank},
          {"epoch", r.epoch},
          {"train_samples", r.train_samples},
          {"train_loss", r.train_loss},
          {"train_accuracy", r.train_accuracy},
          {"val_loss", r.val_loss},
          {"val_accuracy", r.val_accuracy},
          {"images_per_second", r.images_per_second},
          {"step_time_ms", r.step_time_ms},
          {"image_size", r.image_size},
          {"host", r.host}};
}
job::RankMetrics ReportFromJson(const json& j) {
  job::RankMetrics r;
  r.rank = j.at("rank");
  r.epoch = j.at("epoch");
  r.train_samples = j.at("train_samples");
  r.train_loss = j.at("train_loss");
  r.train_accuracy = j.at("train_accuracy");
  r.val_loss = j.at("val_loss");
  r.val_accuracy = j.at("val_accuracy");
  r.images_per_second = j.at("images_per_second");
  r.step_time_ms = j.at("step_time_ms");
  r.image_size = j.at("image_size");
  r.host = j.at("host");
  return r;
}

json CkptToJson(const CheckpointRef& c) { return {{"epoch", c.epoch}, {"path", c.path}}; }
CheckpointRef CkptFromJson(const json& j) { return {j.at("epoch"), j.at("path")}; }

Phase PhaseFromName(const std::string& s) {
  if (s == "running") return Phase::kRunning;
  if (s == "finished") return Phase::kFinished;
  if (s == "failed") return Phase::kFailed;
  return Phase::kWaitingForWorkers;
}
WorkerState WorkerStateFromName(const std::string& s) {
  if (s == "alive") return WorkerState::kAlive;
  if (s == "dead") return WorkerState::kDead;
  if (s == "left") return WorkerState::kLeft;
  return WorkerState::kRegistered;
}

std::string CkptText(const CheckpointRef& c) {
  return c.epoch < 0 ? "the start (no checkpoint committed)"
                     : "the checkpoint of epoch " + std::to_string(c.epoch) + " (" + c.path + ")";
}

}  // namespace

const char* PhaseName(Phase p) {
  switch (p) {
    case Phase::kWaitingForWorkers:
      return "waiting_for_workers";
    case Phase::kRunning:
      return "running";
    case Phase::kFinished:
      return "finished";
    case Phase::kFailed:
      return "failed";
  }
  return "unknown";
}

const char* WorkerStateName(WorkerState s) {
  switch (s) {
    case WorkerState::kRegistered:
      return "registered";
    case WorkerState::kAlive:
      return "alive";
    case WorkerState::kDead:
      return "dead";
    case WorkerState::kLeft:
      return "left";
  }
  return "unknown";
}

std::string WorkerInfo::Describe() const {
  return "rank " + std::to_string(rank) + " (host " + (host.empty() ? "?" : host) + ", pid " +
         std::to_string(pid) + ")";
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
      job_id_(RandomId()),
      generation_(generation),
      early_stopping_(setup_.config.early_stopping) {}

Result<Job> Job::Restore(const std::string& text, JobSetup setup, int64_t generation,
                         Clock::time_point now) {
  Job job(std::move(setup), generation);
  const auto& s = job.setup_;
  try {
    const json j = json::parse(text);
    if (j.at("format").get<int>() != kStateFormat) {
      return InvalidArgument("state format " + j.at("format").dump() + " is not " +
                             std::to_string(kStateFormat));
    }
    auto mismatch = [](const std::string& what, const std::string& stored,
                       const std::string& now_value) {
      return FailedPrecondition("the state belongs to a job with " + what + " " + stored +
                                ", this coordinator was started with " + now_value +
                                " (use another --state-dir for a new job)");
    };
    if (j.at("world_size").get<int>() != s.world_size) {
      return mismatch("world size", j.at("world_size").dump(), std::to_string(s.world_size));
    }
    if (j.at("seed").get<uint64_t>() != s.config.seed) {
      return mismatch("seed", j.at("seed").dump(), std::to_string(s.config.seed));
    }
    if (j.at("epochs").get<int>() != s.config.epochs) {
      return mismatch("epochs", j.at("epochs").dump(), std::to_string(s.config.epochs));
    }
    if (j.at("train_hash").get<uint64_t>() != HashIndices(s.train_indices) ||
        j.at("num_train").get<int64_t>() != static_cast<int64_t>(s.train_indices.size())) {
      return mismatch(
          "a train split of",
          j.at("num_train").dump() + " samples (data " + j.at("data").get<std::string>() + ")",
          "another one (" + s.data_path + ")");
    }
    job.job_id_ = j.at("job_id");
    job.generation_ = j.at("generation");
    job.phase_ = PhaseFromName(j.at("phase"));
    job.next_epoch_ = j.at("next_epoch");
    job.early_stopping_.Restore(EsFromJson(j.at("early_stopping")));
    job.last_checkpoint_ = CkptFromJson(j.at("last_checkpoint"));
    job.best_checkpoint_ = CkptFromJson(j.at("best_checkpoint"));
    job.failure_reason_ = j.at("failure_reason");
    job.dead_ranks_ = j.at("dead_ranks").get<std::vector<int>>();
    job.failures_ = j.at("failures").get<std::vector<std::string>>();
    job.version_ = j.at("version").get<int64_t>() + 1;
    for (const auto& e : j.at("history")) {
      EpochRecord r;
      r.epoch = e.at("epoch");
      r.stage = StageFromJson(e.at("stage"));
      r.train_loss = e.at("train_loss");
      r.train_accuracy = e.at("train_accuracy");
      r.val_loss = e.at("val_loss");
      r.val_accuracy = e.at("val_accuracy");
      r.images_per_second = e.at("images_per_second");
      for (const auto& k : e.at("ranks")) r.ranks.push_back(ReportFromJson(k));
      const auto& d = e.at("decision");
      r.decision = {d.at("is_best"), d.at("stop"), d.at("best_epoch"), d.at("reason")};
      r.early_stopping_after = EsFromJson(e.at("early_stopping_after"));
      r.status_line = e.at("status_line");
      r.generation = e.at("generation");
      job.history_.push_back(std::move(r));
    }
    for (const auto& p : j.at("pending")) {
      job::RankMetrics r = ReportFromJson(p);
      job.pending_[r.rank] = r;
    }
    for (const auto& w : j.at("workers")) {
      WorkerRecord rec;
      rec.info.rank = w.at("rank");
      rec.info.world_size = s.world_size;
      rec.info.generation = job.generation_;
      rec.info.worker_id = w.at("worker_id");
      rec.info.host = w.at("host");
      rec.info.device = w.at("device");
      rec.info.pid = w.at("pid");
      rec.state = WorkerStateFromName(w.at("state"));
      rec.epoch = w.at("epoch");
      rec.step = w.at("step");
      // Note [restored deadlines]: the workers could not reach a dead coordinator; their
      // heartbeat clocks restart now, so they get one full timeout to reconnect.
      rec.last_seen = now;
      job.workers_[rec.info.rank] = rec;
    }
  } catch (const json::exception& e) {
    return DataLoss(std::string("malformed state: ") + e.what());
  }
  if (generation > job.generation_) job.StartGeneration(generation);
  return job;
}

std::string Job::ToJson() const {
  json j;
  j["format"] = kStateFormat;
  j["job_id"] = job_id_;
  j["data"] = setup_.data_path;
  j["world_size"] = setup_.world_size;
  j["seed"] = setup_.config.seed;
  j["epochs"] = setup_.config.epochs;
  j["num_train"] = setup_.train_indices.size();
  j["train_hash"] = HashIndices(setup_.train_indices);
  j["job_config"] = train::JobConfigToYaml(setup_.config);
  j["generation"] = generation_;
  j["phase"] = PhaseName(phase_);
  j["next_epoch"] = next_epoch_;
  j["early_stopping"] = EsToJson(early_stopping_.state());
  j["last_checkpoint"] = CkptToJson(last_checkpoint_);
  j["best_checkpoint"] = CkptToJson(best_checkpoint_);
  j["failure_reason"] = failure_reason_;
  j["dead_ranks"] = dead_ranks_;
  j["failures"] = failures_;
  j["version"] = version_;
  j["status_line"] = StatusLine();
  json hist = json::array();
  for (const auto& r : history_) {
    json ranks = json::array();
    for (const auto& k : r.ranks) ranks.push_back(ReportToJson(k));
    hist.push_back({{"epoch", r.epoch},
                    {"stage", StageToJson(r.stage)},
                    {"train_loss", r.train_loss},
                    {"train_accuracy", r.train_accuracy},
                    {"val_loss", r.val_loss},
                    {"val_accuracy", r.val_accuracy},
                    {"images_per_second", r.images_per_second},
                    {"ranks", ranks},
                    {"decision",
                     {{"is_best", r.decision.is_best},
                      {"stop", r.decision.stop},
                      {"best_epoch", r.decision.best_epoch},
                      {"reason", r.decision.reason}}},
                    {"early_stopping_after", EsToJson(r.early_stopping_after)},
                    {"status_line", r.status_line},
                    {"generation", r.generation}});
  }
  j["history"] = hist;
  json pending = json::array();
  for (const auto& [rank, r] : pending_) pending.push_back(ReportToJson(r));
  j["pending"] = pending;
  json workers = json::array();
  for (const auto& [rank, w] : workers_) {
    workers.push_back({{"rank", rank},
                       {"worker_id", w.info.worker_id},
                       {"host", w.info.host},
                       {"device", w.info.device},
                       {"pid", w.info.pid},
                       {"state", WorkerStateName(w.state)},
                       {"epoch", w.epoch},
                       {"step", w.step}});
  }
  j["workers"] = workers;
  return j.dump(1);
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
  for (int r = 0; r < setup_.world_size; ++r) {
    if (!pending_.count(r)) missing.push_back(r);
  }
  return missing;
}

std::string Job::StatusLine() const {
  switch (phase_) {
    case Phase::kWaitingForWorkers:
      return "generation " + std::to_string(generation_) + ": waiting for workers (" +
             std::to_string(registered()) + "/" + std::to_string(setup_.world_size) +
             " registered), next epoch " + std::to_string(next_epoch_);
    case Phase::kFailed:
      return "failed: " + failure_reason_;
    case Phase::kFinished:
      return "finished: " +
             (history_.empty() ? std::string("no epoch trained") : history_.back().status_line) +
             " | best epoch " + std::to_string(best_epoch());
    case Phase::kRunning:
      if (history_.empty()) {
        return "running epoch " + std::to_string(next_epoch_) + ", generation " +
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
  cached_plan_epoch_ = -1;
  // Note [no epoch twice]: drop the decisions after the last committed checkpoint.
  const int keep_until = last_checkpoint_.epoch;
  while (!history_.empty() && history_.back().epoch > keep_until) history_.pop_back();
  next_epoch_ = keep_until + 1;
  early_stopping_ = job::EarlyStopping(setup_.config.early_stopping);
  if (!history_.empty()) early_stopping_.Restore(history_.back().early_stopping_after);
  if (best_checkpoint_.epoch > keep_until) best_checkpoint_ = {};
  const bool done = !history_.empty() && history_.back().decision.stop;
  phase_ = done ? Phase::kFinished : Phase::kWaitingForWorkers;
  Changed();
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
  if (w.rank < 0 || w.rank >= setup_.world_size) {
    return InvalidArgument("rank " + std::to_string(w.rank) + " out of range [0, " +
                           std::to_string(setup_.world_size) + ")");
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

Status Job::Register(const WorkerInfo& w, Clock::time_point now) {
  if (w.world_size != setup_.world_size) {
    return InvalidArgument(w.Describe() + " says world size " + std::to_string(w.world_size) +
                           ", the job has " + std::to_string(setup_.world_size));
  }
  if (w.rank < 0 || w.rank >= setup_.world_size) {
    return InvalidArgument("rank " + std::to_string(w.rank) + " out of range [0, " +
                           std::to_string(setup_.world_size) + ")");
  }
  if (w.worker_id.empty()) return InvalidArgument("empty worker_id");
  if (w.generation < generation_) return CheckMember(w, true);
  if (w.generation > generation_) StartGeneration(w.generation);
  if (phase_ == Phase::kFailed) {
    return Aborted("job failed in generation " + std::to_string(generation_) + ": " +
                   failure_reason_ + " (a new launch must use generation " +
                   std::to_string(generation_ + 1) + ")");
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
  WorkerRecord rec;
  rec.info = w;
  rec.last_seen = now;
  rec.epoch = next_epoch_;
  workers_[w.rank] = rec;
  log::Info("registered " + w.Describe() + " device " + w.device + ", generation " +
            std::to_string(generation_) + " (" + std::to_string(registered()) + "/" +
            std::to_string(setup_.world_size) + ")");
  if (phase_ == Phase::kWaitingForWorkers && registered() == setup_.world_size) {
    phase_ = Phase::kRunning;
    log::Info("all " + std::to_string(setup_.world_size) +
              " ranks registered: running from epoch " + std::to_string(next_epoch_) + " (" +
              CkptText(last_checkpoint_) + ")");
  }
  Changed();
  return Status::Ok();
}

Result<job::EpochPlan> Job::Plan(const WorkerInfo& w, int epoch) {
  if (auto st = CheckMember(w, /*allow_finished=*/true); !st.ok()) return st;
  if (phase_ == Phase::kWaitingForWorkers) {
    return FailedPrecondition("the job is not running yet: " + std::to_string(registered()) + "/" +
                              std::to_string(setup_.world_size) + " ranks registered");
  }
  if (epoch < 0) return InvalidArgument("epoch " + std::to_string(epoch) + " < 0");
  job::EpochPlan out;
  out.epoch = epoch;
  out.num_train_samples = static_cast<int64_t>(setup_.train_indices.size());
  const bool stopped = !history_.empty() && history_.back().decision.stop;
  if (phase_ == Phase::kFinished || stopped || epoch >= setup_.config.epochs) {
    out.stop = true;
    out.stop_reason = stopped ? history_.back().decision.reason
                              : "all " + std::to_string(setup_.config.epochs) + " epochs done";
    return out;
  }
  if (epoch != next_epoch_) {
    return FailedPrecondition("epoch " + std::to_string(epoch) + " requested by " + w.Describe() +
                              ", but the job is at epoch " + std::to_string(next_epoch_) +
                              " (resume from " + CkptText(last_checkpoint_) + ")");
  }
  if (cached_plan_epoch_ != epoch) {
    cached_plan_ =
        job::PlanShards(setup_.train_indices, setup_.config.seed, epoch, setup_.world_size);
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
    return FailedPrecondition(w.Describe() + " reported epoch " + std::to_string(r.epoch) +
                              ", but the job is at epoch " + std::to_string(next_epoch_));
  }
  pending_[r.rank] = r;
  Changed();
  if (static_cast<int>(pending_.size()) == setup_.world_size) {
    Decide();
    *decided = true;
  }
  return Status::Ok();
}

void Job::Decide() {
  EpochRecord rec;
  rec.epoch = next_epoch_;
  rec.generation = generation_;
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
    log::Info("job finished after epoch " + std::to_string(next_epoch_ - 1) + ": " + out.reason +
              "; best epoch " + std::to_string(out.best_epoch));
  }
  Changed();
}

Status Job::Commit(const WorkerInfo& w, int epoch, const std::string& path, bool is_best) {
  if (auto st = CheckMember(w, true); !st.ok()) return st;
  if (path.empty()) return InvalidArgument("empty checkpoint path");
  if (Record(epoch) == nullptr) {
    return FailedPrecondition("checkpoint of epoch " + std::to_string(epoch) + " (" + path +
                              ") committed before the epoch's decision (the job is at epoch " +
                              std::to_string(next_epoch_) + ")");
  }
  if (epoch < last_checkpoint_.epoch) {
    return FailedPrecondition("checkpoint of epoch " + std::to_string(epoch) +
                              " is older than the last committed (" + CkptText(last_checkpoint_) +
                              ")");
  }
  // Of two files of one epoch (last + best), the plain one is the resume point.
  if (epoch > last_checkpoint_.epoch || !is_best) last_checkpoint_ = {epoch, path};
  if (is_best) best_checkpoint_ = {epoch, path};
  log::Info("committed checkpoint of epoch " + std::to_string(epoch) + ": " + path +
            (is_best ? " (best)" : ""));
  Changed();
  return Status::Ok();
}

Status Job::Beat(const WorkerInfo& w, int epoch, int64_t step, Clock::time_point now) {
  if (auto st = CheckMember(w, true); !st.ok()) return st;
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

void Job::Fail(const WorkerRecord& w, const std::string& what) {
  dead_ranks_.push_back(w.info.rank);
  const std::string msg = w.info.Describe() + " " + what + " at epoch " +
                          std::to_string(next_epoch_) + " of generation " +
                          std::to_string(generation_);
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
