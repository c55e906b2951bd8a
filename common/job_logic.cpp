#include "common/job_logic.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <sstream>

namespace effnet::job {
namespace {

double Lerp(double lo, double hi, double t) { return lo + (hi - lo) * t; }

}  // namespace

Status Validate(const ProgressiveConfig& c) {
  if (c.num_stages < 1) {
    return InvalidArgument("progressive.num_stages: must be >= 1, got " +
                           std::to_string(c.num_stages));
  }
  if (c.min_image_size < 32 || c.max_image_size < c.min_image_size) {
    return InvalidArgument(
        "progressive.min_image_size/max_image_size: need 32 <= min <= max, got " +
        std::to_string(c.min_image_size) + " and " + std::to_string(c.max_image_size));
  }
  if (c.size_multiple < 1) return InvalidArgument("progressive.size_multiple: must be >= 1");
  auto check = [](const char* name, double lo, double hi, double upper) -> Status {
    if (lo < 0 || hi < lo || hi > upper) {
      std::ostringstream ss;
      ss << "progressive." << name << ": need 0 <= min <= max <= " << upper << ", got " << lo
         << " and " << hi;
      return InvalidArgument(ss.str());
    }
    return Status::Ok();
  };
  EFFNET_RETURN_IF_ERROR(check("randaug", c.min_randaug, c.max_randaug, 30.0));
  EFFNET_RETURN_IF_ERROR(check("mixup", c.min_mixup, c.max_mixup, 10.0));
  EFFNET_RETURN_IF_ERROR(check("cutmix", c.min_cutmix, c.max_cutmix, 10.0));
  EFFNET_RETURN_IF_ERROR(check("dropout", c.min_dropout, c.max_dropout, 0.95));
  return Status::Ok();
}

Stage StageAt(const ProgressiveConfig& c, int i) {
  const int m = c.num_stages;
  i = std::clamp(i, 0, m - 1);
  // Regularisers: linspace(min, max, M) in both formulas (paper eq. and official np.linspace).
  const double t_reg = m == 1 ? 1.0 : static_cast<double>(i) / (m - 1);
  double t_size = t_reg;
  if (c.formula == ScheduleFormula::kOfficial) t_size = static_cast<double>(i + 1) / m;
  Stage s;
  s.index = i;
  int size = static_cast<int>(Lerp(c.min_image_size, c.max_image_size, t_size));
  size = std::max(c.size_multiple, size / c.size_multiple * c.size_multiple);
  s.image_size = size;
  s.randaug_magnitude = Lerp(c.min_randaug, c.max_randaug, t_reg);
  s.mixup_alpha = Lerp(c.min_mixup, c.max_mixup, t_reg);
  s.cutmix_alpha = Lerp(c.min_cutmix, c.max_cutmix, t_reg);
  s.dropout = Lerp(c.min_dropout, c.max_dropout, t_reg);
  return s;
}

Stage StageForEpoch(const ProgressiveConfig& c, int epoch, int total_epochs) {
  const int m = c.num_stages;
  // Stage i ends at int((i + 1) / M * total) epochs (official boundaries).
  for (int i = 0; i < m; ++i) {
    const int end = static_cast<int>(static_cast<double>(i + 1) / m * total_epochs);
    if (epoch < end) return StageAt(c, i);
  }
  return StageAt(c, m - 1);
}

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

EpochOutcome EarlyStopping::Update(int epoch, double val_loss, double val_accuracy,
                                   bool last_epoch) {
  EpochOutcome out;
  // Best checkpoint by the configured metric.
  const double score = config_.best_metric == "val_loss" ? -val_loss : val_accuracy;
  if (score > state_.best_score) {
    state_.best_score = score;
    state_.best_epoch = epoch;
    out.is_best = true;
  }
  // Early stopping watches val_loss (Keras EarlyStopping(monitor="val_loss")).
  if (val_loss < state_.best_val_loss - config_.min_delta) {
    state_.best_val_loss = val_loss;
    state_.best_loss_epoch = epoch;
    state_.epochs_without_improvement = 0;
  } else {
    state_.epochs_without_improvement++;
  }
  out.best_epoch = state_.best_epoch;
  if (config_.patience > 0 && state_.epochs_without_improvement >= config_.patience) {
    out.stop = true;
    out.reason = "early stop: val_loss did not improve for " +
                 std::to_string(state_.epochs_without_improvement) + " epochs (best at epoch " +
                 std::to_string(state_.best_loss_epoch) + ")";
  } else if (last_epoch) {
    out.stop = true;
    out.reason = "last epoch reached";
  }
  return out;
}

}  // namespace effnet::job
