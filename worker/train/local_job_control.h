// JobControl without a coordinator: every rank computes the same seeded plan (common/job_logic.h)
// and the same decision from the same reduced metrics (Note [same decisions on every rank]).
#pragma once

#include <string>
#include <vector>

#include "common/job_config.h"
#include "common/job_logic.h"
#include "worker/train/job_control.h"

namespace effnet::train {

class LocalJobControl final : public JobControl {
 public:
  // `train_indices`: the train split; `checkpoint_dir`: where LATEST (the last committed
  // checkpoint's file name) is kept, "" for none.
  LocalJobControl(job::JobConfig config, std::vector<int64_t> train_indices, int rank,
                  int world_size, std::string checkpoint_dir);

  Result<EpochPlan> PlanEpoch(int epoch) override;
  Result<EpochDecision> EndEpoch(const EpochMetrics& metrics) override;
  Status CommitCheckpoint(int epoch, const std::string& path, bool is_best) override;
  Result<std::string> ResumeCheckpoint() override;
  std::string SaveDecisionState() const override;
  Status RestoreDecisionState(const std::string& state) override;

  static StageParams ToStageParams(const job::Stage& s);

 private:
  job::JobConfig config_;
  std::vector<int64_t> train_indices_;
  int rank_, world_size_;
  std::string checkpoint_dir_;
  job::EarlyStopping early_stopping_;
  bool stopped_ = false;
};

}  // namespace effnet::train
