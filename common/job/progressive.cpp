#include "common/job/progressive.h"

#include <algorithm>
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

}  // namespace effnet::job
