// Stratified, seeded train/val/test splits that keep groups (identical images) together.
#pragma once

#include <array>
#include <cstdint>
#include <string>
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

// Note [short splits]: what a split too small costs, said once at effnet-prepare. `counts[c][s]`
// is the number of images of class c in split s (Split's value). One line per problem:
// - a split whose fraction is > 0 but holds no image at all (val: training refuses the store,
//   since validation loss, early stopping and the best checkpoint need it; test: no test
//   metrics are computed);
// - a class with fewer images than the splits need (it is missing from a split whose fraction is
//   > 0, or from train), naming the class, its count per split and the consequence.
// A fraction of 0 is the user's choice and not reported.
std::vector<std::string> SplitWarnings(const std::vector<std::string>& class_names,
                                       const std::vector<std::array<int64_t, 3>>& counts,
                                       const SplitConfig& config);

}  // namespace effnet::storage
