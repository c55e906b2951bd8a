#include "storage/splits.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>
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

std::vector<std::string> SplitWarnings(const std::vector<std::string>& class_names,
                                       const std::vector<std::array<int64_t, 3>>& counts,
                                       const SplitConfig& config) {
  std::vector<std::string> out;
  const bool wanted[3] = {true, config.val_fraction > 0, config.test_fraction > 0};
  int64_t total[3] = {0, 0, 0};
  for (const auto& c : counts) {
    for (int s = 0; s < 3; ++s) total[s] += c[s];
  }
  const int64_t n = total[0] + total[1] + total[2];
  if (wanted[1] && total[1] == 0) {
    std::ostringstream ss;
    ss << "the val split is empty (" << n << " images, val_fraction " << config.val_fraction
       << "): training refuses this store, since validation loss, early stopping and the best "
          "checkpoint need validation images; add images or raise --val-fraction";
    out.push_back(ss.str());
  }
  if (wanted[2] && total[2] == 0) {
    std::ostringstream ss;
    ss << "the test split is empty (" << n << " images, test_fraction " << config.test_fraction
       << "): no test metrics will be computed; add images or raise --test-fraction";
    out.push_back(ss.str());
  }
  for (size_t c = 0; c < counts.size(); ++c) {
    std::vector<std::string> missing;
    for (int s = 0; s < 3; ++s) {
      if (wanted[s] && counts[c][s] == 0 && total[s] > 0) {
        missing.push_back(SplitName(static_cast<Split>(s)));
      }
    }
    if (missing.empty()) continue;
    const std::string name = c < class_names.size() ? class_names[c] : std::to_string(c);
    std::ostringstream ss;
    ss << "class '" << name << "' has " << (counts[c][0] + counts[c][1] + counts[c][2])
       << " images, too few for the splits (train " << counts[c][0] << ", val " << counts[c][1]
       << ", test " << counts[c][2] << "): none in ";
    for (size_t k = 0; k < missing.size(); ++k) ss << (k ? " and " : "") << missing[k];
    ss << (counts[c][0] == 0 ? ", so the model never learns it"
                             : ", so it is never measured there");
    out.push_back(ss.str());
  }
  return out;
}

}  // namespace effnet::storage
