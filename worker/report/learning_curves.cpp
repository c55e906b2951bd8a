// Learning curves (loss and accuracy vs epoch, train and val) and throughput per epoch and rank,
// from the epoch records of metrics.jsonl.
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

Status OptionalInt(const nlohmann::json& rec, const char* field, const std::string& where,
                   std::optional<int64_t>* out) {
  std::optional<double> v;
  EFFNET_RETURN_IF_ERROR(OptionalNumber(rec, field, where, &v));
  if (v) *out = static_cast<int64_t>(std::llround(*v));
  return Status::Ok();
}

Status OptionalNumbers(const nlohmann::json& rec, const char* field, const std::string& where,
                       std::vector<double>* out) {
  auto it = rec.find(field);
  if (it == rec.end() || it->is_null()) return Status::Ok();
  if (!it->is_array()) {
    return InvalidArgument(where + ": field \"" + field + "\": expected an array, found " +
                           it->type_name());
  }
  for (const auto& v : *it) {
    if (!v.is_number()) {
      return InvalidArgument(where + ": field \"" + field + "\": expected numbers, found " +
                             v.type_name());
    }
    out->push_back(v.get<double>());
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<EpochRecord>> ReadEpochRecords(const std::string& path) {
  EFFNET_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  std::map<double, EpochRecord> by_epoch;
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
    EpochRecord p;
    std::optional<double> epoch;
    EFFNET_RETURN_IF_ERROR(OptionalNumber(rec, "epoch", where, &epoch));
    if (!epoch) return InvalidArgument(where + ": epoch record without field \"epoch\"");
    p.epoch = *epoch;
    EFFNET_RETURN_IF_ERROR(OptionalNumber(rec, "train_loss", where, &p.train_loss));
    EFFNET_RETURN_IF_ERROR(OptionalNumber(rec, "train_accuracy", where, &p.train_accuracy));
    EFFNET_RETURN_IF_ERROR(OptionalNumber(rec, "val_loss", where, &p.val_loss));
    EFFNET_RETURN_IF_ERROR(OptionalNumber(rec, "val_accuracy", where, &p.val_accuracy));
    EFFNET_RETURN_IF_ERROR(OptionalNumber(rec, "img_per_s_global", where, &p.img_per_s_global));
    EFFNET_RETURN_IF_ERROR(OptionalNumber(rec, "epoch_time_s", where, &p.epoch_time_s));
    EFFNET_RETURN_IF_ERROR(OptionalInt(rec, "step", where, &p.step));
    EFFNET_RETURN_IF_ERROR(OptionalInt(rec, "stage", where, &p.stage));
    EFFNET_RETURN_IF_ERROR(OptionalInt(rec, "image_size", where, &p.image_size));
    EFFNET_RETURN_IF_ERROR(OptionalInt(rec, "best_epoch", where, &p.best_epoch));
    EFFNET_RETURN_IF_ERROR(OptionalInt(rec, "world_size", where, &p.world_size));
    if (auto it = rec.find("is_best"); it != rec.end() && it->is_boolean()) {
      p.is_best = it->get<bool>();
    }
    EFFNET_RETURN_IF_ERROR(OptionalNumbers(rec, "rank_img_per_s", where, &p.rank_img_per_s));
    EFFNET_RETURN_IF_ERROR(OptionalNumbers(rec, "rank_wait_s", where, &p.rank_wait_s));
    by_epoch[p.epoch] = std::move(p);
  }
  std::vector<EpochRecord> out;
  for (auto& [e, p] : by_epoch) out.push_back(std::move(p));
  return out;
}

namespace {

constexpr const char* kTrainColor = "#1f77b4";
constexpr const char* kValColor = "#d62728";
constexpr const char* kBestColor = "#2ca02c";

using Getter = std::optional<double> EpochRecord::*;

struct Series {
  std::string label, color, dash;                 // dash: "" or an SVG stroke-dasharray value
  std::vector<std::pair<double, double>> points;  // (epoch, value)
};

struct Panel {
  double x0, y0, w, h;  // plot area
  std::string name, y_label;
};

// Axes, grid, progressive-stage marks, the best epoch, the series and their legend (above the
// plot area, right-aligned, so that it never hides a curve).
void DrawPanel(svg::Document* doc, const Panel& pn, const std::vector<EpochRecord>& pts,
               const std::vector<Series>& series, std::optional<double> best_epoch) {
  double ylo = std::numeric_limits<double>::infinity(), yhi = -ylo;
  for (const auto& s : series) {
    for (const auto& [e, v] : s.points) ylo = std::min(ylo, v), yhi = std::max(yhi, v);
  }
  const svg::Ticks yt = svg::NiceTicks(ylo, yhi, 5);
  // Note [epoch numbering] (common/job/types.h): the records count from 0, the axis from 1.
  const svg::Ticks xt =
      svg::NiceTicks(pts.front().epoch + 1, pts.back().epoch + 1, 8, /*integer_steps=*/true);
  auto XAxis = [&](double shown) { return pn.x0 + (shown - xt.lo) / (xt.hi - xt.lo) * pn.w; };
  auto X = [&](double e) { return XAxis(e + 1); };
  auto Y = [&](double v) { return pn.y0 + pn.h - (v - yt.lo) / (yt.hi - yt.lo) * pn.h; };

  doc->Text(pn.x0, pn.y0 - 14, pn.name, 14, "start", "font-weight=\"bold\"");
  double lx = pn.x0 + pn.w;
  for (auto it = series.rbegin(); it != series.rend(); ++it) {
    if (it->label.empty()) continue;
    lx -= 30 + 7.0 * static_cast<double>(it->label.size());
    const double ly = pn.y0 - 18;
    doc->Line(lx, ly, lx + 22, ly, it->color, 2,
              it->dash.empty() ? "" : "stroke-dasharray=\"" + it->dash + "\"");
    doc->Text(lx + 27, ly + 4, it->label, 11);
  }

  for (double v : yt.values) {
    doc->Line(pn.x0, Y(v), pn.x0 + pn.w, Y(v), "#e5e5e5", 1);
    doc->Line(pn.x0 - 5, Y(v), pn.x0, Y(v), "#333", 1);
    doc->Text(pn.x0 - 8, Y(v) + 4, svg::Num(v, yt.decimals), 11, "end");
  }
  for (double shown : xt.values) {
    doc->Line(XAxis(shown), pn.y0 + pn.h, XAxis(shown), pn.y0 + pn.h + 5, "#333", 1);
    doc->Text(XAxis(shown), pn.y0 + pn.h + 18, svg::Num(shown, 0), 11, "middle");
  }
  // Progressive learning: mark where the stage or the training image size changes, with the new
  // size, and name the first size.
  bool changes = false;
  for (size_t i = 1; i < pts.size(); ++i) {
    changes = changes || pts[i].stage != pts[i - 1].stage ||
              (pts[i].image_size && pts[i - 1].image_size &&
               *pts[i].image_size != *pts[i - 1].image_size);
  }
  auto size_label = [](const EpochRecord& p) {
    return p.image_size ? std::to_string(*p.image_size) + " px"
                        : "stage " + std::to_string(p.stage.value_or(0));
  };
  if (changes) {
    doc->Text(X(pts.front().epoch) + 3, pn.y0 + 12, size_label(pts.front()), 10, "start",
              "fill=\"#666\"");
  }
  for (size_t i = 1; i < pts.size(); ++i) {
    const bool stage_change =
        pts[i].stage && pts[i - 1].stage && *pts[i].stage != *pts[i - 1].stage;
    const bool size_change =
        pts[i].image_size && pts[i - 1].image_size && *pts[i].image_size != *pts[i - 1].image_size;
    if (stage_change || size_change) {
      const double x = X(pts[i].epoch);
      doc->Line(x, pn.y0, x, pn.y0 + pn.h, "#999", 1, "stroke-dasharray=\"2,3\"");
      // Near the right edge the label goes left of its line, inside the plot.
      const bool at_right = x + 45 > pn.x0 + pn.w;
      doc->Text(at_right ? x - 3 : x + 3, pn.y0 + 12, size_label(pts[i]), 10,
                at_right ? "end" : "start", "fill=\"#666\"");
    }
  }
  if (best_epoch) {
    const double x = X(*best_epoch);
    doc->Line(x, pn.y0, x, pn.y0 + pn.h, kBestColor, 1.5, "stroke-dasharray=\"5,2\"");
    const bool at_right = x + 35 > pn.x0 + pn.w;
    doc->Text(at_right ? x - 3 : x + 3, pn.y0 + pn.h - 6, "best", 10, at_right ? "end" : "start",
              "fill=\"" + std::string(kBestColor) + "\"");
  }
  doc->Rect(pn.x0, pn.y0, pn.w, pn.h, "none", "stroke=\"#333\" stroke-width=\"1\"");
  doc->Text(pn.x0 + pn.w / 2, pn.y0 + pn.h + 38, "epoch", 12, "middle");
  const double yl_x = pn.x0 - 48, yl_y = pn.y0 + pn.h / 2;
  doc->Text(yl_x, yl_y, pn.y_label, 12, "middle",
            "transform=\"rotate(-90 " + svg::Num(yl_x, 1) + " " + svg::Num(yl_y, 1) + ")\"");

  for (const auto& s : series) {
    std::vector<std::pair<double, double>> line;
    for (const auto& [e, v] : s.points) line.emplace_back(X(e), Y(v));
    doc->Polyline(line, s.color, 2, s.dash.empty() ? "" : "stroke-dasharray=\"" + s.dash + "\"");
    if (line.size() <= 60) {
      for (const auto& [x, y] : line) doc->Circle(x, y, 2.5, s.color);
    }
  }
}

Series Of(const std::vector<EpochRecord>& pts, Getter g, std::string label, std::string color,
          std::string dash) {
  Series s{std::move(label), std::move(color), std::move(dash), {}};
  for (const auto& p : pts) {
    if (p.*g) s.points.emplace_back(p.epoch, *(p.*g));
  }
  return s;
}

}  // namespace

Result<std::string> LearningCurvesSvg(const std::vector<EpochRecord>& pts,
                                      const std::string& title) {
  if (pts.empty()) return FailedPrecondition("no epoch records to draw");
  std::optional<double> best;
  if (pts.back().best_epoch && *pts.back().best_epoch >= 0) {
    best = static_cast<double>(*pts.back().best_epoch);
  }
  const double pw = 400, ph = 280, margin_l = 70, gap = 90, top = 84;
  const double width = margin_l + pw + gap + pw + 25, height = top + ph + 56;
  svg::Document doc(width, height);
  doc.Text(width / 2, 26, title, 16, "middle", "font-weight=\"bold\"");
  DrawPanel(&doc, {margin_l, top, pw, ph, "Loss", "loss"}, pts,
            {Of(pts, &EpochRecord::train_loss, "train", kTrainColor, ""),
             Of(pts, &EpochRecord::val_loss, "val", kValColor, "6,3")},
            best);
  DrawPanel(&doc, {margin_l + pw + gap, top, pw, ph, "Accuracy", "accuracy"}, pts,
            {Of(pts, &EpochRecord::train_accuracy, "train", kTrainColor, ""),
             Of(pts, &EpochRecord::val_accuracy, "val", kValColor, "6,3")},
            best);
  return doc.Finish();
}

Status WriteLearningCurvesSvg(const std::string& metrics_jsonl, const std::string& svg_path,
                              const std::string& title) {
  EFFNET_ASSIGN_OR_RETURN(std::vector<EpochRecord> pts, ReadEpochRecords(metrics_jsonl));
  if (pts.empty()) {
    return FailedPrecondition(metrics_jsonl + ": no records with \"kind\":\"epoch\"");
  }
  EFFNET_ASSIGN_OR_RETURN(std::string svg, LearningCurvesSvg(pts, title));
  return WriteFileAtomic(svg_path, svg);
}

Result<std::string> ThroughputSvg(const std::vector<EpochRecord>& pts, const std::string& title) {
  if (pts.empty()) return FailedPrecondition("no epoch records to draw");
  // Tableau 10 for the ranks (cycled); the job's total in black.
  static const char* kRankColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  size_t ranks = 0;
  for (const auto& p : pts) ranks = std::max(ranks, p.rank_img_per_s.size());
  std::vector<Series> per_rank;
  // A legend entry per rank fits up to 8 ranks; beyond, the lines stay unlabelled.
  for (size_t r = 0; r < ranks; ++r) {
    Series s{ranks <= 8 ? "rank " + std::to_string(r) : "", kRankColors[r % 10], "", {}};
    for (const auto& p : pts) {
      if (r < p.rank_img_per_s.size()) s.points.emplace_back(p.epoch, p.rank_img_per_s[r]);
    }
    per_rank.push_back(std::move(s));
  }
  const double pw = 400, ph = 240, margin_l = 70, gap = 90, top = 84;
  const double width = margin_l + pw + gap + pw + 25, height = top + ph + 56;
  svg::Document doc(width, height);
  doc.Text(width / 2, 26, title, 16, "middle", "font-weight=\"bold\"");
  DrawPanel(&doc, {margin_l, top, pw, ph, "Whole job (wall clock)", "images / s"}, pts,
            {Of(pts, &EpochRecord::img_per_s_global, "all ranks", "#222222", "")}, std::nullopt);
  if (!per_rank.empty()) {
    DrawPanel(&doc, {margin_l + pw + gap, top, pw, ph, "Per rank (own pace)", "images / s"}, pts,
              per_rank, std::nullopt);
  } else {
    doc.Text(margin_l + pw + gap + pw / 2, top + ph / 2, "per-rank throughput not recorded", 12,
             "middle", "fill=\"#666\"");
  }
  return doc.Finish();
}

}  // namespace effnet::report
