// JobControl without a coordinator: every rank computes the same seeded plan (common/job/shards.h)
// and the same decision from the same reduced metrics (Note [same decisions on every rank]).
#pragma once

#include <string>
#include <vector>

#include "common/job/config.h"
#include "common/job/early_stopping.h"
#include "common/job/progressive.h"
#include "common/job/shards.h"
#include "worker/train/job_control.h"

namespace effnet::train {

class LocalJobControl final : public JobControl {
 public:
  // `train_indices`: the train split; `checkpoint_dir`: where LATEST (the directory name of the
  // last committed checkpoint, e.g. "epoch-0003") is kept, "" for none.
  LocalJobControl(job::JobConfig config, std::vector<int64_t> train_indices, int rank,
                  int world_size, std::string checkpoint_dir);

  Result<job::EpochPlan> PlanEpoch(int epoch) override;
  Result<job::EpochDecision> EndEpoch(const job::RankMetrics& metrics) override;
  Status CommitCheckpoint(int epoch, const std::string& path, bool is_best) override;
  Result<std::string> ResumeCheckpoint() override;
  std::string SaveDecisionState() const override;
  Status RestoreDecisionState(const std::string& state) override;

 private:
  job::JobConfig config_;
  std::vector<int64_t> train_indices_;
  int rank_, world_size_;
  std::string checkpoint_dir_;
  job::EarlyStopping early_stopping_;
  bool stopped_ = false;
};

}  // namespace effnet::train
