// Confusion matrix: accuracy, CSV and an SVG heat map.
#include <algorithm>
#include <cmath>

#include "common/atomic_file.h"
#include "worker/report/report.h"
#include "worker/report/svg.h"

namespace effnet::report {
namespace {

Status Validate(const ConfusionMatrix& m) {
  const size_t n = m.class_names.size();
  if (n == 0) return InvalidArgument("confusion matrix has no classes");
  if (m.counts.size() != n) {
    return InvalidArgument("confusion matrix has " + std::to_string(m.counts.size()) +
                           " rows for " + std::to_string(n) + " classes");
  }
  for (size_t t = 0; t < n; ++t) {
    if (m.counts[t].size() != n) {
      return InvalidArgument("confusion matrix row " + std::to_string(t) + " ('" +
                             m.class_names[t] + "') has " + std::to_string(m.counts[t].size()) +
                             " columns, expected " + std::to_string(n));
    }
    for (size_t p = 0; p < n; ++p) {
      if (m.counts[t][p] < 0) {
        return InvalidArgument("confusion matrix [" + m.class_names[t] + "][" + m.class_names[p] +
                               "] is negative: " + std::to_string(m.counts[t][p]));
      }
    }
  }
  return Status::Ok();
}

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// Blues, light to dark (ColorBrewer), interpolated linearly in RGB.
std::string BlueFor(double f) {
  static const int kStops[][3] = {
      {247, 251, 255}, {198, 219, 239}, {107, 174, 214}, {33, 113, 181}, {8, 48, 107}};
  f = std::clamp(std::isfinite(f) ? f : 0.0, 0.0, 1.0) * 4;
  const int i = std::min(3, static_cast<int>(f));
  const double w = f - i;
  char buf[8];
  int rgb[3];
  for (int k = 0; k < 3; ++k) {
    rgb[k] = static_cast<int>(std::lround(kStops[i][k] * (1 - w) + kStops[i + 1][k] * w));
  }
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
  return buf;
}

// Rough width of `s` in pixels at font size `size` (DejaVu Sans averages ~0.6 em per glyph).
double TextWidth(const std::string& s, double size) { return 0.6 * size * s.size(); }

}  // namespace

double ConfusionMatrix::Accuracy() const {
  int64_t correct = 0, total = 0;
  for (size_t t = 0; t < counts.size(); ++t) {
    for (size_t p = 0; p < counts[t].size(); ++p) {
      total += counts[t][p];
      if (p == t) correct += counts[t][p];
    }
  }
  return total > 0 ? static_cast<double>(correct) / static_cast<double>(total) : 0.0;
}

Status WriteConfusionMatrixCsv(const ConfusionMatrix& m, const std::string& path) {
  EFFNET_RETURN_IF_ERROR(Validate(m).WithContext("writing " + path));
  std::string out = "true\\predicted";
  for (const auto& name : m.class_names) out += "," + CsvField(name);
  out += "\n";
  for (size_t t = 0; t < m.counts.size(); ++t) {
    out += CsvField(m.class_names[t]);
    for (int64_t c : m.counts[t]) out += "," + std::to_string(c);
    out += "\n";
  }
  return WriteFileAtomic(path, out);
}

Status WriteConfusionMatrixSvg(const ConfusionMatrix& m, const std::string& path,
                               const std::string& title) {
  EFFNET_RETURN_IF_ERROR(Validate(m).WithContext("writing " + path));
  const size_t n = m.class_names.size();
  const double cell = std::clamp(560.0 / n, 40.0, 72.0);
  const double label_size = 12;
  double max_label = 0;
  for (const auto& name : m.class_names) max_label = std::max(max_label, TextWidth(name, 12));
  // Column labels are drawn below the grid, rotated by kAngle degrees.
  constexpr double kAngle = 35;
  const double rad = kAngle * M_PI / 180;
  const double left = std::max(max_label + 44, max_label * std::cos(rad) - cell / 2 + 20);
  const double top = 70;
  const double grid = cell * n;
  const double bottom = max_label * std::sin(rad) + label_size + 44;
  const double width = std::max(left + grid + 30, 420.0);
  const double height = top + grid + bottom;

  int64_t total = 0;
  std::vector<int64_t> row_total(n, 0);
  for (size_t t = 0; t < n; ++t) {
    for (int64_t c : m.counts[t]) row_total[t] += c;
    total += row_total[t];
  }

  svg::Document doc(width, height);
  doc.Text(width / 2, 26, title, 16, "middle", "font-weight=\"bold\"");
  doc.Text(width / 2, 48,
           "accuracy " + svg::Num(m.Accuracy(), 4) + " (n = " + std::to_string(total) +
               "); colour = share of the true class's row",
           12, "middle", "fill=\"#444\"");
  for (size_t t = 0; t < n; ++t) {
    const double y = top + t * cell;
    for (size_t p = 0; p < n; ++p) {
      const double x = left + p * cell;
      const double f = row_total[t] > 0 ? static_cast<double>(m.counts[t][p]) / row_total[t] : 0.0;
      doc.Rect(x, y, cell, cell, BlueFor(f), "stroke=\"#ffffff\" stroke-width=\"1\"");
      const std::string ink = f > 0.5 ? "#ffffff" : "#1a1a1a";
      const double count_size = std::min(16.0, cell * 0.3);
      doc.Text(x + cell / 2, y + cell / 2 + (cell >= 48 ? 0 : count_size * 0.35),
               std::to_string(m.counts[t][p]), count_size, "middle",
               "fill=\"" + ink + "\"" + (p == t ? " font-weight=\"bold\"" : ""));
      if (cell >= 48 && row_total[t] > 0) {
        doc.Text(x + cell / 2, y + cell / 2 + count_size, svg::Num(100 * f, 0) + "%", 10, "middle",
                 "fill=\"" + ink + "\"");
      }
    }
    doc.Text(left - 8, y + cell / 2 + 4, m.class_names[t], label_size, "end");
  }
  doc.Rect(left, top, grid, grid, "none", "stroke=\"#888\" stroke-width=\"1\"");
  for (size_t p = 0; p < n; ++p) {
    const double x = left + p * cell + cell / 2, y = top + grid + 14;
    doc.Text(x, y, m.class_names[p], label_size, "end",
             "transform=\"rotate(-" + svg::Num(kAngle, 0) + " " + svg::Num(x, 1) + " " +
                 svg::Num(y, 1) + ")\"");
  }
  doc.Text(left + grid / 2, height - 12, "Predicted class", 13, "middle", "font-weight=\"bold\"");
  const double ylab_x = 18, ylab_y = top + grid / 2;
  doc.Text(ylab_x, ylab_y, "True class", 13, "middle",
           "font-weight=\"bold\" transform=\"rotate(-90 " + svg::Num(ylab_x, 1) + " " +
               svg::Num(ylab_y, 1) + ")\"");
  return WriteFileAtomic(path, doc.Finish());
}

}  // namespace effnet::report
