#include "worker/report/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/text.h"

namespace effnet::report::svg {

std::string XmlEscape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        // Control characters other than tab/newline are not allowed in XML 1.0.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') {
          out += ' ';
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string Num(double v, int decimals) {
  if (!std::isfinite(v)) return "0";
  // "-0.00" reads badly on an axis: values that round to zero print as zero.
  if (std::abs(v) < 0.5 * std::pow(10.0, -decimals)) v = 0;
  return Fixed(v, decimals);
}

Ticks NiceTicks(double lo, double hi, int target, bool integer_steps) {
  Ticks t;
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  if (lo > hi) std::swap(lo, hi);
  if (hi - lo < 1e-12) {
    const double pad = std::max(std::abs(lo) * 0.1, integer_steps ? 1.0 : 0.1);
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  double step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
  if (integer_steps) step = std::max(1.0, std::round(step));
  t.step = step;
  t.lo = std::floor(lo / step + 1e-9) * step;
  t.hi = std::ceil(hi / step - 1e-9) * step;
  for (double v = t.lo; v <= t.hi + step * 1e-6; v += step) t.values.push_back(v);
  t.decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  return t;
}

Document::Document(double width, double height) : width_(width), height_(height) {}

void Document::Rect(double x, double y, double w, double h, const std::string& fill,
                    const std::string& extra) {
  body_ += "<rect x=\"" + Num(x, 1) + "\" y=\"" + Num(y, 1) + "\" width=\"" + Num(w, 1) +
           "\" height=\"" + Num(h, 1) + "\" fill=\"" + fill + "\"" +
           (extra.empty() ? "" : " " + extra) + "/>\n";
}

void Document::Line(double x1, double y1, double x2, double y2, const std::string& stroke,
                    double width, const std::string& extra) {
  body_ += "<line x1=\"" + Num(x1, 1) + "\" y1=\"" + Num(y1, 1) + "\" x2=\"" + Num(x2, 1) +
           "\" y2=\"" + Num(y2, 1) + "\" stroke=\"" + stroke + "\" stroke-width=\"" +
           Num(width, 1) + "\"" + (extra.empty() ? "" : " " + extra) + "/>\n";
}

void Document::Text(double x, double y, const std::string& text, double size,
                    const std::string& anchor, const std::string& extra) {
  body_ += "<text x=\"" + Num(x, 1) + "\" y=\"" + Num(y, 1) + "\" font-size=\"" + Num(size, 1) +
           "\" text-anchor=\"" + anchor + "\"" + (extra.empty() ? "" : " " + extra) + ">" +
           XmlEscape(text) + "</text>\n";
}

void Document::Polyline(const std::vector<std::pair<double, double>>& pts,
                        const std::string& stroke, double width, const std::string& extra) {
  if (pts.empty()) return;
  body_ += "<polyline fill=\"none\" stroke=\"" + stroke + "\" stroke-width=\"" + Num(width, 1) +
           "\"" + (extra.empty() ? "" : " " + extra) + " points=\"";
  for (size_t i = 0; i < pts.size(); ++i) {
    if (i) body_ += ' ';
    body_ += Num(pts[i].first, 1) + "," + Num(pts[i].second, 1);
  }
  body_ += "\"/>\n";
}

void Document::Circle(double cx, double cy, double r, const std::string& fill) {
  body_ += "<circle cx=\"" + Num(cx, 1) + "\" cy=\"" + Num(cy, 1) + "\" r=\"" + Num(r, 1) +
           "\" fill=\"" + fill + "\"/>\n";
}

std::string Document::Finish() const {
  const std::string w = Num(width_, 0), h = Num(height_, 0);
  return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
         "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
         w + "\" height=\"" + h + "\" viewBox=\"0 0 " + w + " " + h +
         "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
         "<rect x=\"0\" y=\"0\" width=\"" +
         w + "\" height=\"" + h + "\" fill=\"white\"/>\n" + body_ + "</svg>\n";
}

}  // namespace effnet::report::svg
