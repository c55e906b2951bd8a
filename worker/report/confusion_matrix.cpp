// Confusion matrix: accuracy and per-class scores, CSV (written and read back), an SVG heat map
// and a PNG picture for TensorBoard.
#include <algorithm>
#include <array>
#include <cmath>

#include "common/atomic_file.h"
#include "storage/csv.h"
#include "worker/report/png.h"
#include "worker/report/report.h"
#include "worker/report/svg.h"

namespace effnet::report {
namespace {}  // namespace

Status ValidateConfusionMatrix(const ConfusionMatrix& m) {
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

namespace {

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
std::array<uint8_t, 3> BlueRgb(double f) {
  static const int kStops[][3] = {
      {247, 251, 255}, {198, 219, 239}, {107, 174, 214}, {33, 113, 181}, {8, 48, 107}};
  f = std::clamp(std::isfinite(f) ? f : 0.0, 0.0, 1.0) * 4;
  const int i = std::min(3, static_cast<int>(f));
  const double w = f - i;
  std::array<uint8_t, 3> rgb;
  for (int k = 0; k < 3; ++k) {
    rgb[k] = static_cast<uint8_t>(std::lround(kStops[i][k] * (1 - w) + kStops[i + 1][k] * w));
  }
  return rgb;
}

std::string BlueFor(double f) {
  const auto rgb = BlueRgb(f);
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
  return buf;
}

// Rough width of `s` in pixels at font size `size` (DejaVu Sans averages ~0.6 em per glyph).
double TextWidth(const std::string& s, double size) { return 0.6 * size * s.size(); }

}  // namespace

int64_t ConfusionMatrix::Total() const {
  int64_t total = 0;
  for (const auto& row : counts) {
    for (int64_t c : row) total += c;
  }
  return total;
}

int64_t ConfusionMatrix::Correct() const {
  int64_t correct = 0;
  for (size_t t = 0; t < counts.size(); ++t) {
    if (t < counts[t].size()) correct += counts[t][t];
  }
  return correct;
}

double ConfusionMatrix::Accuracy() const {
  const int64_t total = Total();
  return total > 0 ? static_cast<double>(Correct()) / static_cast<double>(total) : 0.0;
}

std::vector<ClassScores> ConfusionMatrix::PerClass() const {
  const size_t n = counts.size();
  std::vector<ClassScores> out(n);
  for (size_t t = 0; t < n; ++t) {
    for (size_t p = 0; p < counts[t].size() && p < n; ++p) {
      out[t].support += counts[t][p];
      out[p].predicted += counts[t][p];
    }
  }
  for (size_t c = 0; c < n; ++c) {
    ClassScores& s = out[c];
    const double tp = c < counts[c].size() ? static_cast<double>(counts[c][c]) : 0.0;
    s.precision = s.predicted > 0 ? tp / static_cast<double>(s.predicted) : 0.0;
    s.recall = s.support > 0 ? tp / static_cast<double>(s.support) : 0.0;
    s.f1 = s.precision + s.recall > 0 ? 2 * s.precision * s.recall / (s.precision + s.recall) : 0.0;
  }
  return out;
}

Status WriteConfusionMatrixCsv(const ConfusionMatrix& m, const std::string& path) {
  EFFNET_RETURN_IF_ERROR(ValidateConfusionMatrix(m).WithContext("writing " + path));
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

Result<ConfusionMatrix> ReadConfusionMatrixCsv(const std::string& path) {
  EFFNET_ASSIGN_OR_RETURN(storage::CsvTable t, storage::ReadCsvFile(path));
  ConfusionMatrix m;
  if (t.header.size() < 2) return InvalidArgument(path + ": header has no class columns");
  m.class_names.assign(t.header.begin() + 1, t.header.end());
  if (t.rows.size() != m.class_names.size()) {
    return InvalidArgument(path + ": " + std::to_string(t.rows.size()) + " rows for " +
                           std::to_string(m.class_names.size()) + " classes");
  }
  for (size_t r = 0; r < t.rows.size(); ++r) {
    const std::string where = path + ":" + std::to_string(t.row_lines[r]);
    if (t.rows[r][0] != m.class_names[r]) {
      return InvalidArgument(where + ": row class '" + t.rows[r][0] + "', expected '" +
                             m.class_names[r] + "' (rows in the columns' order)");
    }
    std::vector<int64_t> row;
    for (size_t c = 1; c < t.rows[r].size(); ++c) {
      const std::string& f = t.rows[r][c];
      size_t used = 0;
      long long v = -1;
      try {
        v = std::stoll(f, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != f.size() || f.empty() || v < 0) {
        return InvalidArgument(where + ": column '" + t.header[c] +
                               "': expected a non-negative count, found '" + f + "'");
      }
      row.push_back(v);
    }
    m.counts.push_back(std::move(row));
  }
  EFFNET_RETURN_IF_ERROR(ValidateConfusionMatrix(m).WithContext(path));
  return m;
}

Status WriteConfusionMatrixSvg(const ConfusionMatrix& m, const std::string& path,
                               const std::string& title) {
  auto svg = ConfusionMatrixSvg(m, title);
  if (!svg.ok()) return svg.status().WithContext("writing " + path);
  return WriteFileAtomic(path, *svg);
}

Result<std::string> ConfusionMatrixSvg(const ConfusionMatrix& m, const std::string& title) {
  EFFNET_RETURN_IF_ERROR(ValidateConfusionMatrix(m));
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
  return doc.Finish();
}

namespace {

// 3x5 bitmap digits, one row of 3 bits per entry, most significant bit on the left.
constexpr uint8_t kDigits[10][5] = {
    {7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {7, 1, 7, 4, 7}, {7, 1, 7, 1, 7}, {5, 5, 7, 1, 1},
    {7, 4, 7, 1, 7}, {7, 4, 7, 5, 7}, {7, 1, 1, 1, 1}, {7, 5, 7, 5, 7}, {7, 5, 7, 1, 7}};

struct Canvas {
  int w, h;
  std::vector<uint8_t> rgb;
  Canvas(int w_, int h_) : w(w_), h(h_), rgb(static_cast<size_t>(w_) * h_ * 3, 255) {}
  void Fill(int x0, int y0, int cw, int ch, std::array<uint8_t, 3> c) {
    for (int y = std::max(0, y0); y < std::min(h, y0 + ch); ++y) {
      for (int x = std::max(0, x0); x < std::min(w, x0 + cw); ++x) {
        std::copy(c.begin(), c.end(), rgb.begin() + (static_cast<size_t>(y) * w + x) * 3);
      }
    }
  }
  // `text` (digits only) centred on (cx, cy), `scale` pixels per font pixel.
  void Digits(const std::string& text, int cx, int cy, int scale, std::array<uint8_t, 3> c) {
    const int tw = static_cast<int>(text.size()) * 4 * scale - scale;
    int x = cx - tw / 2;
    const int y = cy - 5 * scale / 2;
    for (char ch : text) {
      const auto* g = kDigits[ch - '0'];
      for (int r = 0; r < 5; ++r) {
        for (int b = 0; b < 3; ++b) {
          if (g[r] & (4 >> b)) Fill(x + b * scale, y + r * scale, scale, scale, c);
        }
      }
      x += 4 * scale;
    }
  }
};

}  // namespace

Result<PngImage> ConfusionMatrixPng(const ConfusionMatrix& m) {
  EFFNET_RETURN_IF_ERROR(ValidateConfusionMatrix(m).WithContext("confusion matrix picture"));
  const int n = static_cast<int>(m.class_names.size());
  const int cell = std::clamp(480 / n, 12, 48);
  const int margin = 24;  // class indices on the left and on top
  Canvas cv(margin + n * cell + 4, margin + n * cell + 4);
  int64_t max_count = 0;
  for (const auto& row : m.counts) {
    for (int64_t c : row) max_count = std::max(max_count, c);
  }
  const int digits_max = static_cast<int>(std::to_string(max_count).size());
  // Largest font scale whose widest count fits the cell with a pixel to spare.
  const int scale = std::clamp((cell - 2) / std::max(1, 4 * digits_max), 1, 3);
  const std::array<uint8_t, 3> dark = {26, 26, 26}, light = {255, 255, 255};
  for (int t = 0; t < n; ++t) {
    int64_t row_total = 0;
    for (int64_t c : m.counts[t]) row_total += c;
    for (int p = 0; p < n; ++p) {
      const double f = row_total > 0 ? static_cast<double>(m.counts[t][p]) / row_total : 0.0;
      const int x = margin + p * cell, y = margin + t * cell;
      cv.Fill(x, y, cell, cell, BlueRgb(f));
      cv.Fill(x, y, cell, 1, light);
      cv.Fill(x, y, 1, cell, light);
      if (cell >= 4 * scale * digits_max) {
        cv.Digits(std::to_string(m.counts[t][p]), x + cell / 2, y + cell / 2, scale,
                  f > 0.5 ? light : dark);
      }
    }
    const std::string idx = std::to_string(t);
    const int iscale = cell >= 16 ? 2 : 1;
    cv.Digits(idx, margin / 2, margin + t * cell + cell / 2, iscale, dark);
    cv.Digits(idx, margin + t * cell + cell / 2, margin / 2, iscale, dark);
  }
  PngImage img;
  img.width = cv.w;
  img.height = cv.h;
  EFFNET_ASSIGN_OR_RETURN(img.bytes, EncodePngRgb(cv.rgb, cv.w, cv.h));
  return img;
}

}  // namespace effnet::report
