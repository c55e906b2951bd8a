// What the coordinator records about a job (coordinator/job.h keeps these, proto/convert.h gives
// their wire form): the job's phase, its workers, its decided epochs and its checkpoints. Plain
// C++ like common/job/types.h: no Torch, no gRPC.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/job/early_stopping.h"
#include "common/job/types.h"

namespace effnet::job {

using Clock = std::chrono::steady_clock;

// Note [job phases] in coordinator/job.h.
enum class Phase { kWaitingForWorkers, kRunning, kFinished, kFailed };
// "waiting_for_workers" | "running" | "finished" | "failed"
inline const char* PhaseName(Phase p) {
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

enum class WorkerState { kRegistered, kAlive, kDead, kLeft };
inline constexpr WorkerState kWorkerStates[] = {WorkerState::kRegistered, WorkerState::kAlive,
                                                WorkerState::kDead, WorkerState::kLeft};
// "registered" | "alive" | "dead" | "left"
inline const char* WorkerStateName(WorkerState s) {
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
// The state named `name` (as WorkerStateName writes it); nullopt for any other text.
inline std::optional<WorkerState> WorkerStateFromName(std::string_view name) {
  for (WorkerState s : kWorkerStates) {
    if (name == WorkerStateName(s)) return s;
  }
  return std::nullopt;
}

// Who calls: sent by the worker with every call.
struct WorkerInfo {
  int rank = 0;
  int world_size = 0;
  int64_t generation = 0;
  std::string worker_id;  // random per process
  std::string host;
  std::string device;
  int64_t pid = 0;
  // "rank 1 (host h, pid 42)"
  std::string Describe() const {
    return "rank " + std::to_string(rank) + " (host " + (host.empty() ? "?" : host) + ", pid " +
           std::to_string(pid) + ")";
  }
};

// Longest failure cause a worker may report (ReportFailure; Note [failure causes] in
// coordinator/job.h). The worker cuts a longer text to this; the coordinator refuses one above it.
inline constexpr size_t kMaxFailureCauseBytes = 2048;

struct WorkerRecord {
  WorkerInfo info;
  WorkerState state = WorkerState::kRegistered;
  Clock::time_point last_seen;  // not persisted; a restored coordinator restarts the clock
  std::optional<Clock::time_point> disconnected_at;  // its heartbeat stream broke (not persisted)
  int epoch = -1;
  int64_t step = 0;
  std::string failure;  // the error it ended on, as it reported it ("" when none)
};

// One decided epoch.
struct EpochRecord {
  int epoch = 0;
  Stage stage;
  double train_loss = 0, train_accuracy = 0, val_loss = 0, val_accuracy = 0;  // sample-weighted
  double images_per_second = 0;                                               // sum over ranks
  std::vector<RankMetrics> ranks;
  EpochDecision decision;
  EarlyStopping::State early_stopping_after;  // Note [no epoch twice] in coordinator/job.h
  std::string status_line;
  int64_t generation = 0;
  int world_size =
      0;  // ranks that trained the epoch (Note [elastic world size], coordinator/job.h)
};

struct CheckpointRef {
  int epoch = -1;  // -1: none
  std::string path;
};

}  // namespace effnet::job
