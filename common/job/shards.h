// Per-epoch shard plans of the train split.
#pragma once

#include <cstdint>
#include <vector>

namespace effnet::job {

// Note [shard plan]: each epoch the train indices are permuted with a generator seeded by
// (seed, epoch) and dealt round-robin: rank r gets perm[r], perm[r+W], ... so every sample is in
// exactly one shard and shard sizes differ by at most one. Ranks with a shorter shard run the same
// number of steps (worker/train/trainer.cpp: zero-weight padding) so collectives stay matched.
std::vector<std::vector<int64_t>> PlanShards(const std::vector<int64_t>& train_indices,
                                             uint64_t seed, int epoch, int world_size);
// Shard size of `rank` without materialising the plan.
int64_t ShardSize(int64_t num_samples, int world_size, int rank);

}  // namespace effnet::job
