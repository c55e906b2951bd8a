#include "storage/synth.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "common/atomic_file.h"
#include "storage/csv.h"
#include "storage/splits.h"

namespace effnet::storage {
namespace fs = std::filesystem;

const std::vector<std::string>& SynthClassNames() {
  static const std::vector<std::string> names = {"Checkerboards",      "Circles", "Crosses",
                                                 "Horizontal Stripes", "Squares", "Triangles",
                                                 "Vertical Stripes"};
  return names;
}

namespace {

class Rand {
 public:
  explicit Rand(uint64_t seed) : g_(seed) {}
  double U(double lo, double hi) { return lo + (hi - lo) * g_.Uniform(); }
  int I(int lo, int hi) {
    return lo + static_cast<int>(g_.Below(static_cast<uint64_t>(hi - lo + 1)));
  }
  uint64_t Bits() { return g_.Next(); }
  cv::Scalar Colour() { return cv::Scalar(I(0, 255), I(0, 255), I(0, 255)); }

 private:
  SplitMix64 g_;
};

double ColourDistance(const cv::Scalar& a, const cv::Scalar& b) {
  double d = 0;
  for (int k = 0; k < 3; ++k) d += (a[k] - b[k]) * (a[k] - b[k]);
  return std::sqrt(d);
}

// Rotates `pts` by `deg` about `c`.
std::vector<cv::Point> Rotated(const std::vector<cv::Point2d>& pts, cv::Point2d c, double deg) {
  const double r = deg * CV_PI / 180.0, cs = std::cos(r), sn = std::sin(r);
  std::vector<cv::Point> out;
  for (const auto& p : pts) {
    const double x = p.x - c.x, y = p.y - c.y;
    out.emplace_back(static_cast<int>(std::lround(c.x + x * cs - y * sn)),
                     static_cast<int>(std::lround(c.y + x * sn + y * cs)));
  }
  return out;
}

// Stripes along x (horizontal bands when `horizontal`), slightly tilted, over the whole image.
void Stripes(cv::Mat& img, Rand& r, const cv::Scalar& fg, bool horizontal) {
  const int s = img.cols;
  const double period = r.U(s / 10.0, s / 4.0), duty = r.U(0.35, 0.65), tilt = r.U(-10, 10);
  const double phase = r.U(0, period);
  const cv::Point2d c(s / 2.0, s / 2.0);
  for (double y = -s + phase; y < 2 * s; y += period) {
    std::vector<cv::Point2d> band = {
        {-s * 1.0, y}, {2.0 * s, y}, {2.0 * s, y + period * duty}, {-s * 1.0, y + period * duty}};
    cv::fillConvexPoly(img, Rotated(band, c, tilt + (horizontal ? 0 : 90)), fg, cv::LINE_AA);
  }
}

cv::Mat Draw(int cls, int s, Rand& r) {
  const cv::Scalar bg = r.Colour();
  cv::Scalar fg = r.Colour();
  while (ColourDistance(fg, bg) < 120) fg = r.Colour();
  cv::Mat img(s, s, CV_8UC3, bg);
  // A soft gradient towards a second background colour.
  {
    const cv::Scalar bg2 = r.Colour();
    const double amount = r.U(0, 0.5);
    const bool vertical = r.I(0, 1) == 1;
    for (int y = 0; y < s; ++y) {
      for (int x = 0; x < s; ++x) {
        const double t = amount * (vertical ? y : x) / s;
        auto& px = img.at<cv::Vec3b>(y, x);
        for (int k = 0; k < 3; ++k) px[k] = cv::saturate_cast<uchar>(bg[k] * (1 - t) + bg2[k] * t);
      }
    }
  }
  const cv::Point2d c(r.U(0.3, 0.7) * s, r.U(0.3, 0.7) * s);
  const double scale = r.U(0.18, 0.32) * s;  // "radius" of the shape
  const double angle = r.U(-20, 20);
  const std::string& name = SynthClassNames()[static_cast<size_t>(cls)];
  if (name == "Circles") {
    cv::circle(img, cv::Point(static_cast<int>(c.x), static_cast<int>(c.y)),
               static_cast<int>(scale), fg, cv::FILLED, cv::LINE_AA);
  } else if (name == "Squares") {
    std::vector<cv::Point2d> sq = {{c.x - scale, c.y - scale},
                                   {c.x + scale, c.y - scale},
                                   {c.x + scale, c.y + scale},
                                   {c.x - scale, c.y + scale}};
    cv::fillConvexPoly(img, Rotated(sq, c, angle), fg, cv::LINE_AA);
  } else if (name == "Triangles") {
    std::vector<cv::Point2d> tri;
    for (int k = 0; k < 3; ++k) {
      const double a = -CV_PI / 2 + k * 2 * CV_PI / 3;
      tri.emplace_back(c.x + 1.2 * scale * std::cos(a), c.y + 1.2 * scale * std::sin(a));
    }
    cv::fillConvexPoly(img, Rotated(tri, c, angle), fg, cv::LINE_AA);
  } else if (name == "Crosses") {
    const double t = scale * r.U(0.25, 0.4);
    std::vector<cv::Point2d> h = {{c.x - scale * 1.3, c.y - t},
                                  {c.x + scale * 1.3, c.y - t},
                                  {c.x + scale * 1.3, c.y + t},
                                  {c.x - scale * 1.3, c.y + t}};
    std::vector<cv::Point2d> v = {{c.x - t, c.y - scale * 1.3},
                                  {c.x + t, c.y - scale * 1.3},
                                  {c.x + t, c.y + scale * 1.3},
                                  {c.x - t, c.y + scale * 1.3}};
    cv::fillConvexPoly(img, Rotated(h, c, angle), fg, cv::LINE_AA);
    cv::fillConvexPoly(img, Rotated(v, c, angle), fg, cv::LINE_AA);
  } else if (name == "Horizontal Stripes" || name == "Vertical Stripes") {
    Stripes(img, r, fg, name == "Horizontal Stripes");
  } else {  // Checkerboards
    const int cell = std::max(2, static_cast<int>(r.U(s / 10.0, s / 5.0)));
    const int ox = r.I(0, cell - 1), oy = r.I(0, cell - 1);
    for (int y = -oy; y < s; y += cell) {
      for (int x = -ox; x < s; x += cell) {
        if ((((x + ox) / cell) + ((y + oy) / cell)) % 2 == 0) {
          cv::rectangle(img, cv::Rect(x, y, cell, cell), fg, cv::FILLED);
        }
      }
    }
  }
  // Sensor-like noise so no two images are identical.
  cv::Mat noise(s, s, CV_16SC3);
  cv::RNG cvr(r.Bits());
  cvr.fill(noise, cv::RNG::NORMAL, cv::Scalar::all(0), cv::Scalar::all(r.U(2, 10)));
  cv::Mat img16;
  img.convertTo(img16, CV_16SC3);
  img16 += noise;
  img16.convertTo(img, CV_8UC3);
  return img;
}

}  // namespace

Result<SynthSummary> WriteSynthDataset(const SynthConfig& c) {
  if (c.out_dir.empty()) return InvalidArgument("--out is required");
  if (c.per_class < 1) return InvalidArgument("--per-class must be at least 1");
  if (c.size < 16 || c.size > 4096) return InvalidArgument("--size must lie in [16, 4096]");
  SynthSummary out;
  out.images_dir = (fs::path(c.out_dir) / "images").string();
  out.csv_path = (fs::path(c.out_dir) / "synth.csv").string();
  std::error_code ec;
  fs::create_directories(out.images_dir, ec);
  if (ec) return Internal("creating " + out.images_dir + ": " + ec.message());

  struct Row {
    std::vector<std::string> fields;
  };
  std::vector<Row> rows;
  Rand r(c.seed);
  const auto& names = SynthClassNames();
  for (int k = 0; k < c.per_class; ++k) {
    for (int cls = 0; cls < static_cast<int>(names.size()); ++cls) {
      Rand ri(r.Bits());
      char id[33];
      std::snprintf(id, sizeof(id), "%016llx%016llx", static_cast<unsigned long long>(ri.Bits()),
                    static_cast<unsigned long long>(ri.Bits()));
      cv::Mat rgb = Draw(cls, c.size, ri);
      cv::Mat bgr;
      cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
      const std::string file = std::string(id) + ".jpg";
      const std::string path = (fs::path(out.images_dir) / file).string();
      if (!cv::imwrite(path, bgr, {cv::IMWRITE_JPEG_QUALITY, c.jpeg_quality})) {
        return Internal("cannot write " + path);
      }
      const std::string item = names[cls] + " " + std::to_string(k + 1);
      rows.push_back({{id, "Synthetic " + item,
                       "[\"" + names[cls] + " >> Synthetic >> " + item + "\"]", file}});
      ++out.images;
    }
  }
  // Shuffle the row order (Fisher-Yates, our generator) so classes are interleaved.
  SplitMix64 g(c.seed ^ 0x5EEDULL);
  for (size_t i = rows.size(); i > 1; --i) std::swap(rows[i - 1], rows[g.Below(i)]);
  std::string text = CsvRecord({"uniq_id", "product_name", "product_category_tree", "image"});
  for (const auto& row : rows) text += CsvRecord(row.fields);
  EFFNET_RETURN_IF_ERROR(WriteFileAtomic(out.csv_path, text));
  return out;
}

}  // namespace effnet::storage
