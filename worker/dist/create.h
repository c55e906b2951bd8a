// Factory for the trainer's DataParallel (worker/train/data_parallel.h) over MPI + NCCL or MPI-CPU.
// No NCCL, MPI or CUDA headers here.
#pragma once

#include <memory>
#include <string>

#include "worker/train/data_parallel.h"

namespace effnet::dist {

// Every tunable of data parallelism with its default, in one place.
struct DistConfig {
  std::string backend = "auto";        // auto (nccl on CUDA tensors, else mpi) | nccl | mpi
  double first_bucket_mb = 1.0;        // the first bucket is small so communication starts early
  double bucket_cap_mb = 25.0;         // later buckets
  bool compress_bf16 = false;          // all-reduce gradients in bf16
  bool sync_batchnorm = false;         // cross-rank BatchNorm statistics
  double timeout_s = 120.0;            // deadline of every collective (NCCL watchdog / MPI poll)
  bool rebuild_buckets = true;         // rebuild once in the observed gradient-ready order
  double heartbeat_interval_s = 0.25;  // progress exchange between ranks (names missing ranks)
  double heartbeat_silence_s = 1.0;    // a peer silent this long is reported as dead/frozen
  bool record_events = true;           // reducer keeps the per-step event log (cheap)
};

// Initialises MPI if needed (rank, world size, local rank from the MPI environment) and returns
// the DataParallel for this process. World size 1 without mpirun works too.
std::unique_ptr<train::DataParallel> CreateDataParallel(const DistConfig& config);

// Rank / local rank / world size from MPI (initialising it if needed).
struct MpiWorld {
  int rank = 0, world_size = 1, local_rank = 0;
};
MpiWorld InitMpi();

}  // namespace effnet::dist
