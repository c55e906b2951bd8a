#include "worker/train/local_job_control.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/atomic_file.h"

namespace effnet::train {

LocalJobControl::LocalJobControl(job::JobConfig config, std::vector<int64_t> train_indices,
                                 int rank, int world_size, std::string checkpoint_dir)
    : config_(std::move(config)),
      train_indices_(std::move(train_indices)),
      rank_(rank),
      world_size_(world_size),
      checkpoint_dir_(std::move(checkpoint_dir)),
      early_stopping_(config_.early_stopping) {}

Result<job::EpochPlan> LocalJobControl::PlanEpoch(int epoch) {
  job::EpochPlan plan;
  plan.epoch = epoch;
  if (stopped_ || epoch >= config_.epochs) {
    plan.stop = true;
    return plan;
  }
  plan.stage = job::StageForEpoch(config_.progressive, epoch, config_.epochs);
  plan.num_train_samples = static_cast<int64_t>(train_indices_.size());
  auto shards = job::PlanShards(train_indices_, config_.seed, epoch, world_size_);
  plan.sample_indices = std::move(shards[static_cast<size_t>(rank_)]);
  return plan;
}

Result<job::EpochDecision> LocalJobControl::EndEpoch(const job::RankMetrics& m) {
  const bool last = m.epoch + 1 >= config_.epochs;
  job::EpochDecision d = early_stopping_.Update(m.epoch, m.val_loss, m.val_accuracy, last);
  stopped_ = d.stop;
  return d;
}

Status LocalJobControl::CommitCheckpoint(int epoch, const std::string& path, bool is_best) {
  if (checkpoint_dir_.empty() || rank_ != 0) return Status::Ok();
  nlohmann::json j = {{"epoch", epoch},
                      {"path", std::filesystem::path(path).filename().string()},
                      {"is_best", is_best}};
  return WriteFileAtomic(checkpoint_dir_ + "/LATEST", j.dump() + "\n")
      .WithContext("committing checkpoint of epoch " + std::to_string(epoch + 1));
}

Result<std::string> LocalJobControl::ResumeCheckpoint() {
  if (checkpoint_dir_.empty()) return std::string();
  const std::string latest = checkpoint_dir_ + "/LATEST";
  if (!std::filesystem::exists(latest)) return std::string();
  auto text = ReadFile(latest);
  if (!text.ok()) return text.status();
  try {
    auto j = nlohmann::json::parse(*text);
    return checkpoint_dir_ + "/" + j.at("path").get<std::string>();
  } catch (const std::exception& e) {
    return DataLoss(latest + ": " + e.what());
  }
}

std::string LocalJobControl::SaveDecisionState() const {
  const auto& s = early_stopping_.state();
  nlohmann::json j = {{"best_val_loss", s.best_val_loss},
                      {"best_loss_epoch", s.best_loss_epoch},
                      {"best_score", s.best_score},
                      {"best_epoch", s.best_epoch},
                      {"epochs_without_improvement", s.epochs_without_improvement},
                      {"stopped", stopped_}};
  return j.dump();
}

Status LocalJobControl::RestoreDecisionState(const std::string& state) {
  if (state.empty()) return Status::Ok();
  try {
    auto j = nlohmann::json::parse(state);
    job::EarlyStopping::State s;
    s.best_val_loss = j.at("best_val_loss").get<double>();
    s.best_loss_epoch = j.at("best_loss_epoch").get<int>();
    s.best_score = j.at("best_score").get<double>();
    s.best_epoch = j.at("best_epoch").get<int>();
    s.epochs_without_improvement = j.at("epochs_without_improvement").get<int>();
    early_stopping_.Restore(s);
    stopped_ = j.value("stopped", false);
  } catch (const std::exception& e) {
    return DataLoss(std::string("early-stopping state in checkpoint: ") + e.what());
  }
  return Status::Ok();
}

}  // namespace effnet::train
