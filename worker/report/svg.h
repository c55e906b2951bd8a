// A minimal SVG builder for the report pictures: escaped text, fixed number formatting, and
// "nice" axis ticks. Internal to effnet_report.
#pragma once

#include <string>
#include <vector>

namespace effnet::report::svg {

// Escapes &, <, >, ", ' for XML text and attribute values (and HTML: report.html uses it too).
std::string XmlEscape(const std::string& s);

// `v` with `decimals` digits after the point, locale-independent ("0.83", "-1.5").
std::string Num(double v, int decimals = 2);

// Axis range [lo, hi] widened to multiples of a 1-2-5 step, with about `target` ticks.
// A degenerate or non-finite input range is widened around its value.
struct Ticks {
  double lo = 0, hi = 1, step = 0.2;
  std::vector<double> values;
  int decimals = 1;  // enough to tell adjacent ticks apart
};
Ticks NiceTicks(double lo, double hi, int target = 5, bool integer_steps = false);

class Document {
 public:
  Document(double width, double height);
  // Appends raw SVG elements (already escaped).
  void Raw(const std::string& s) { body_ += s; }
  void Rect(double x, double y, double w, double h, const std::string& fill,
            const std::string& extra = "");
  void Line(double x1, double y1, double x2, double y2, const std::string& stroke, double width = 1,
            const std::string& extra = "");
  // anchor: start|middle|end. `text` is escaped here.
  void Text(double x, double y, const std::string& text, double size = 12,
            const std::string& anchor = "start", const std::string& extra = "");
  void Polyline(const std::vector<std::pair<double, double>>& pts, const std::string& stroke,
                double width, const std::string& extra = "");
  void Circle(double cx, double cy, double r, const std::string& fill);
  std::string Finish() const;

 private:
  double width_, height_;
  std::string body_;
};

}  // namespace effnet::report::svg
