// Factory for the trainer's DataParallel (worker/train/data_parallel.h) over MPI + NCCL or MPI-CPU.
// No NCCL, MPI or CUDA headers here. The tunables and their defaults: dist_config.h.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "worker/dist/dist_config.h"
#include "worker/train/data_parallel.h"

namespace effnet::dist {

// Validates `config`, initialises MPI if needed (rank, world size, local rank from the MPI
// environment) and returns the DataParallel for this process. World size 1 without mpirun works
// too.
Result<std::unique_ptr<train::DataParallel>> CreateDataParallel(const DistConfig& config);

// Rank / local rank / world size from MPI (initialising it if needed).
struct MpiWorld {
  int rank = 0, world_size = 1, local_rank = 0;
};
MpiWorld InitMpi();

}  // namespace effnet::dist
