// Wilson score interval (report.h): the one place the report's confidence intervals come from.
#include <algorithm>
#include <cmath>

#include "worker/report/report.h"

namespace effnet::report {

Interval WilsonInterval(int64_t successes, int64_t n, double z) {
  if (n <= 0) return {0, 1};
  const double nn = static_cast<double>(n);
  const double p = std::clamp(static_cast<double>(successes) / nn, 0.0, 1.0);
  const double z2 = z * z;
  const double centre = (p + z2 / (2 * nn)) / (1 + z2 / nn);
  const double half = z / (1 + z2 / nn) * std::sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn));
  // The bounds are exactly 0 (no successes) and 1 (all successes); rounding would miss them.
  return {successes <= 0 ? 0.0 : std::max(0.0, centre - half),
          successes >= n ? 1.0 : std::min(1.0, centre + half)};
}

}  // namespace effnet::report
