#include "common/job/shards.h"

#include <random>
#include <utility>

namespace effnet::job {

std::vector<std::vector<int64_t>> PlanShards(const std::vector<int64_t>& train_indices,
                                             uint64_t seed, int epoch, int world_size) {
  std::vector<int64_t> perm = train_indices;
  // std::mt19937_64 is specified by the standard, so the plan is the same on every platform.
  // std::shuffle's algorithm is not, so the Fisher-Yates loop is written out.
  std::mt19937_64 gen(seed * 1000003ULL + static_cast<uint64_t>(epoch));
  for (size_t i = perm.size(); i > 1; --i) {
    const uint64_t j = gen() % i;
    std::swap(perm[i - 1], perm[j]);
  }
  std::vector<std::vector<int64_t>> shards(static_cast<size_t>(world_size));
  for (size_t i = 0; i < perm.size(); ++i) shards[i % world_size].push_back(perm[i]);
  return shards;
}

int64_t ShardSize(int64_t n, int world_size, int rank) {
  return n / world_size + (rank < n % world_size ? 1 : 0);
}

}  // namespace effnet::job
