// Learning curves (loss and accuracy vs epoch, train and val) from metrics.jsonl.
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "common/atomic_file.h"
#include "worker/report/report.h"
#include "worker/report/svg.h"

namespace effnet::report {
namespace {

struct EpochPoint {
  double epoch = 0;
  std::optional<double> train_loss, train_accuracy, val_loss, val_accuracy;
  std::optional<int64_t> image_size;
};

Status OptionalNumber(const nlohmann::json& rec, const char* field, const std::string& where,
                      std::optional<double>* out) {
  auto it = rec.find(field);
  if (it == rec.end() || it->is_null()) return Status::Ok();
  if (!it->is_number()) {
    return InvalidArgument(where + ": field \"" + field + "\": expected a number, found " +
                           it->type_name());
  }
  *out = it->get<double>();
  return Status::Ok();
}

// Note [metrics.jsonl epochs]: a run resumed from a checkpoint appends the epochs after the
// checkpoint again, so the last record of an epoch wins; records of other kinds (steps, events)
// are skipped.
Result<std::vector<EpochPoint>> ReadEpochs(const std::string& path) {
  EFFNET_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  std::map<double, EpochPoint> by_epoch;
  std::istringstream in(text);
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    const std::string where = path + ":" + std::to_string(line_no);
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json rec = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (rec.is_discarded()) return InvalidArgument(where + ": not valid JSON");
    if (!rec.is_object()) return InvalidArgument(where + ": expected a JSON object");
    auto kind = rec.find("kind");
    if (kind == rec.end() || !kind->is_string() || kind->get<std::string>() != "epoch") continue;
    EpochPoint p;
    std::optional<double> epoch;
    EFFNET_RETURN_IF_ERROR(OptionalNumber(rec, "epoch", where, &epoch));
    if (!epoch) return InvalidArgument(where + ": epoch record without field \"epoch\"");
    p.epoch = *epoch;
    EFFNET_RETURN_IF_ERROR(OptionalNumber(rec, "train_loss", where, &p.train_loss));
    EFFNET_RETURN_IF_ERROR(OptionalNumber(rec, "train_accuracy", where, &p.train_accuracy));
    EFFNET_RETURN_IF_ERROR(OptionalNumber(rec, "val_loss", where, &p.val_loss));
    EFFNET_RETURN_IF_ERROR(OptionalNumber(rec, "val_accuracy", where, &p.val_accuracy));
    std::optional<double> image_size;
    EFFNET_RETURN_IF_ERROR(OptionalNumber(rec, "image_size", where, &image_size));
    if (image_size) p.image_size = static_cast<int64_t>(std::lround(*image_size));
    by_epoch[p.epoch] = p;
  }
  std::vector<EpochPoint> out;
  for (auto& [e, p] : by_epoch) out.push_back(p);
  return out;
}

constexpr const char* kTrainColor = "#1f77b4";
constexpr const char* kValColor = "#d62728";

using Getter = std::optional<double> EpochPoint::*;

struct Panel {
  double x0, y0, w, h;  // plot area
  std::string name, y_label;
  Getter train, val;
};

void DrawPanel(svg::Document* doc, const Panel& pn, const std::vector<EpochPoint>& pts) {
  double ylo = std::numeric_limits<double>::infinity(), yhi = -ylo;
  for (const auto& p : pts) {
    for (Getter g : {pn.train, pn.val}) {
      if (p.*g) ylo = std::min(ylo, *(p.*g)), yhi = std::max(yhi, *(p.*g));
    }
  }
  const svg::Ticks yt = svg::NiceTicks(ylo, yhi, 5);
  const svg::Ticks xt =
      svg::NiceTicks(pts.front().epoch, pts.back().epoch, 8, /*integer_steps=*/true);
  auto X = [&](double e) { return pn.x0 + (e - xt.lo) / (xt.hi - xt.lo) * pn.w; };
  auto Y = [&](double v) { return pn.y0 + pn.h - (v - yt.lo) / (yt.hi - yt.lo) * pn.h; };

  doc->Text(pn.x0, pn.y0 - 14, pn.name, 14, "start", "font-weight=\"bold\"");
  // Legend above the plot area, right-aligned, so that it never hides a curve.
  const double lx = pn.x0 + pn.w - 150, ly = pn.y0 - 18;
  doc->Line(lx, ly, lx + 22, ly, kTrainColor, 2);
  doc->Text(lx + 27, ly + 4, "train", 11);
  doc->Line(lx + 75, ly, lx + 97, ly, kValColor, 2, "stroke-dasharray=\"6,3\"");
  doc->Text(lx + 102, ly + 4, "val", 11);

  for (double v : yt.values) {
    doc->Line(pn.x0, Y(v), pn.x0 + pn.w, Y(v), "#e5e5e5", 1);
    doc->Line(pn.x0 - 5, Y(v), pn.x0, Y(v), "#333", 1);
    doc->Text(pn.x0 - 8, Y(v) + 4, svg::Num(v, yt.decimals), 11, "end");
  }
  for (double e : xt.values) {
    doc->Line(X(e), pn.y0 + pn.h, X(e), pn.y0 + pn.h + 5, "#333", 1);
    doc->Text(X(e), pn.y0 + pn.h + 18, svg::Num(e, 0), 11, "middle");
  }
  // Progressive learning: mark where the training image size changes, and name the first size.
  std::optional<int64_t> prev_size;
  bool changes = false;
  for (size_t i = 1; i < pts.size(); ++i) {
    changes = changes || (pts[i].image_size && pts[i - 1].image_size &&
                          *pts[i].image_size != *pts[i - 1].image_size);
  }
  if (changes && pts.front().image_size) {
    doc->Text(X(pts.front().epoch) + 3, pn.y0 + 12, std::to_string(*pts.front().image_size) + " px",
              10, "start", "fill=\"#666\"");
  }
  for (const auto& p : pts) {
    if (p.image_size && prev_size && *p.image_size != *prev_size) {
      doc->Line(X(p.epoch), pn.y0, X(p.epoch), pn.y0 + pn.h, "#999", 1, "stroke-dasharray=\"2,3\"");
      doc->Text(X(p.epoch) + 3, pn.y0 + 12, std::to_string(*p.image_size) + " px", 10, "start",
                "fill=\"#666\"");
    }
    if (p.image_size) prev_size = p.image_size;
  }
  doc->Rect(pn.x0, pn.y0, pn.w, pn.h, "none", "stroke=\"#333\" stroke-width=\"1\"");
  doc->Text(pn.x0 + pn.w / 2, pn.y0 + pn.h + 38, "epoch", 12, "middle");
  const double yl_x = pn.x0 - 48, yl_y = pn.y0 + pn.h / 2;
  doc->Text(yl_x, yl_y, pn.y_label, 12, "middle",
            "transform=\"rotate(-90 " + svg::Num(yl_x, 1) + " " + svg::Num(yl_y, 1) + ")\"");

  for (auto [g, color, dash] : {std::make_tuple(pn.train, kTrainColor, ""),
                                std::make_tuple(pn.val, kValColor, "stroke-dasharray=\"6,3\"")}) {
    std::vector<std::pair<double, double>> line;
    for (const auto& p : pts) {
      if (p.*g) line.emplace_back(X(p.epoch), Y(*(p.*g)));
    }
    doc->Polyline(line, color, 2, dash);
    if (line.size() <= 60) {
      for (const auto& [x, y] : line) doc->Circle(x, y, 2.5, color);
    }
  }
}

}  // namespace

Status WriteLearningCurvesSvg(const std::string& metrics_jsonl, const std::string& svg_path,
                              const std::string& title) {
  EFFNET_ASSIGN_OR_RETURN(std::vector<EpochPoint> pts, ReadEpochs(metrics_jsonl));
  if (pts.empty()) {
    return FailedPrecondition(metrics_jsonl + ": no records with \"kind\":\"epoch\"");
  }
  const double pw = 400, ph = 280, margin_l = 70, gap = 90, top = 84;
  const double width = margin_l + pw + gap + pw + 25, height = top + ph + 56;
  svg::Document doc(width, height);
  doc.Text(width / 2, 26, title, 16, "middle", "font-weight=\"bold\"");
  DrawPanel(&doc,
            {margin_l, top, pw, ph, "Loss", "loss", &EpochPoint::train_loss, &EpochPoint::val_loss},
            pts);
  DrawPanel(&doc,
            {margin_l + pw + gap, top, pw, ph, "Accuracy", "accuracy", &EpochPoint::train_accuracy,
             &EpochPoint::val_accuracy},
            pts);
  return WriteFileAtomic(svg_path, doc.Finish());
}

}  // namespace effnet::report
