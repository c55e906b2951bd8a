// The trainer's view of the job's control plane: who trains on which samples in which stage, and
// who decides early stopping and which checkpoint is the best. Two implementations:
//  - LocalJobControl (worker/train): every rank computes the same seeded plan itself and decides
//    from reduced metrics (no coordinator).
//  - CoordinatorJobControl (worker/client): asks the gRPC coordinator.
// No Torch, no gRPC in this header.
#pragma once

#include <string>

#include "common/job/types.h"
#include "common/status.h"

namespace effnet::train {

class JobControl {
 public:
  virtual ~JobControl() = default;
  // The plan of `epoch` for this rank. Deterministic from the seed.
  virtual Result<job::EpochPlan> PlanEpoch(int epoch) = 0;
  // Reports this epoch's metrics and returns the decision (the same on every rank).
  virtual Result<job::EpochDecision> EndEpoch(const job::RankMetrics& metrics) = 0;
  // The checkpoint directory of `epoch` is complete on disk (worker/formats/checkpoint.h).
  virtual Status CommitCheckpoint(int epoch, const std::string& path, bool is_best) = 0;
  // Last committed checkpoint directory to resume from ("" when none).
  virtual Result<std::string> ResumeCheckpoint() = 0;
  // The checkpoint ResumeCheckpoint() named, `unreadable`, failed verification (`why`); this rank
  // resumed from the older checkpoint `path` of `epoch` instead, and the job's decisions must
  // roll back to that epoch. Local runs keep their decisions in the checkpoint (nothing to do);
  // the coordinator is told (Note [resume fallback under a coordinator] in coordinator/job.h).
  virtual Status ResumedFromOlder(const std::string& /*unreadable*/, int /*epoch*/,
                                  const std::string& /*path*/, const std::string& /*why*/) {
    return Status::Ok();
  }
  // Decision state (early stopping) to keep inside checkpoints, and to restore from one when a
  // run resumes. Implementations that keep this state elsewhere (the coordinator's state file)
  // keep the defaults: nothing to save, nothing to restore.
  virtual std::string SaveDecisionState() const { return ""; }
  virtual Status RestoreDecisionState(const std::string& /*state*/) { return Status::Ok(); }
  // This rank ends on `cause`, an error it caught: whoever runs the job learns why (the
  // coordinator records it: Note [failure causes] in coordinator/job.h). Called at most once, as
  // the last call; the process logs the error itself. Best effort: never fails.
  virtual void EndWithError(const std::string& /*cause*/) {}
};

}  // namespace effnet::train
