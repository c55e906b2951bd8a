#include "storage/splits.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <unordered_map>

namespace effnet::storage {

SplitCounts SplitTargets(int64_t n, const SplitConfig& config) {
  SplitCounts t;
  t.test = static_cast<int64_t>(std::llround(static_cast<double>(n) * config.test_fraction));
  t.test = std::clamp<int64_t>(t.test, 0, n);
  t.val = static_cast<int64_t>(std::llround(static_cast<double>(n - t.test) * config.val_fraction));
  t.val = std::clamp<int64_t>(t.val, 0, n - t.test);
  t.train = n - t.test - t.val;
  return t;
}

Result<std::vector<Split>> StratifiedSplit(const std::vector<int32_t>& labels,
                                           const std::vector<int64_t>& groups,
                                           const SplitConfig& config) {
  if (labels.size() != groups.size()) {
    return InvalidArgument("split: " + std::to_string(labels.size()) + " labels but " +
                           std::to_string(groups.size()) + " group ids");
  }
  if (!(config.test_fraction >= 0 && config.test_fraction < 1) ||
      !(config.val_fraction >= 0 && config.val_fraction < 1)) {
    return InvalidArgument("split fractions must lie in [0, 1): test " +
                           std::to_string(config.test_fraction) + ", val " +
                           std::to_string(config.val_fraction));
  }
  // Groups in order of first appearance, each with its members; class = first member's label.
  std::unordered_map<int64_t, size_t> slot;
  std::vector<std::vector<int64_t>> members;
  std::map<int32_t, std::vector<size_t>> class_groups;
  std::map<int32_t, int64_t> class_size;
  for (size_t i = 0; i < labels.size(); ++i) {
    auto [it, inserted] = slot.emplace(groups[i], members.size());
    if (inserted) {
      members.emplace_back();
      class_groups[labels[i]].push_back(it->second);
    }
    members[it->second].push_back(static_cast<int64_t>(i));
  }
  for (auto& [label, gs] : class_groups) {
    for (size_t g : gs) class_size[label] += static_cast<int64_t>(members[g].size());
  }

  std::vector<Split> out(labels.size(), Split::kTrain);
  for (auto& [label, gs] : class_groups) {
    SplitMix64 rng(config.seed * kGoldenGamma ^ (static_cast<uint64_t>(label) + 1));
    for (size_t i = gs.size(); i > 1; --i) {
      std::swap(gs[i - 1], gs[static_cast<size_t>(rng.Below(i))]);
    }
    std::stable_sort(gs.begin(), gs.end(),
                     [&](size_t a, size_t b) { return members[a].size() > members[b].size(); });
    const SplitCounts t = SplitTargets(class_size[label], config);
    int64_t room[3] = {t.train, t.val, t.test};
    for (size_t g : gs) {
      const int64_t size = static_cast<int64_t>(members[g].size());
      int best = 0;
      for (int s = 1; s < 3; ++s) {
        if (room[s] - size > room[best] - size) best = s;
      }
      room[best] -= size;
      for (int64_t m : members[g]) out[static_cast<size_t>(m)] = static_cast<Split>(best);
    }
  }
  return out;
}

}  // namespace effnet::storage
