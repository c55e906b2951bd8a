// Stratified, seeded train/val/test splits that keep groups (identical images) together.
#pragma once

#include <cstdint>
#include <vector>

#include "common/hash.h"  // SplitMix64, the generator of Note [split algorithm]
#include "common/status.h"
#include "storage/dataset_reader.h"

namespace effnet::storage {

struct SplitConfig {
  // The study's split: test_fraction of each class to test, then val_fraction of the rest to val.
  double test_fraction = 0.2;
  double val_fraction = 0.2;
  uint64_t seed = 42;
};

struct SplitCounts {
  int64_t train = 0, val = 0, test = 0;
};
// Per-class targets for a class of `n` items: test = round(n * test_fraction),
// val = round((n - test) * val_fraction), train = the rest.
SplitCounts SplitTargets(int64_t n, const SplitConfig& config);

// Assigns every item a split. `labels[i]` is the class of item i; `groups[i]` its group id (items
// with the same id always share a split; pass GroupByHash(content hashes), or 0..n-1 for none).
// A group counts towards the class of its first item.
//
// Note [split algorithm]: per class (ascending label), the class's groups are shuffled with a
// SplitMix64 generator seeded by (seed, label) - our own generator and Fisher-Yates, so the result
// is the same on every platform and standard library - then stably sorted by size, largest first,
// and each group goes to the split with the most room left (target minus assigned, minus the
// group's size; ties: train, val, test). Singletons therefore fill every split to its target
// exactly; only groups larger than one can move a split away from its target.
Result<std::vector<Split>> StratifiedSplit(const std::vector<int32_t>& labels,
                                           const std::vector<int64_t>& groups,
                                           const SplitConfig& config);

}  // namespace effnet::storage
