// results.md: the study's table (Model, B, Fit Time (s), Accuracy) for effnet-dist runs, with
// the study's own numbers as reference rows.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <limits>
#include <optional>

#include "common/atomic_file.h"
#include "worker/report/report.h"
#include "worker/report/svg.h"

namespace effnet::report {
namespace {

constexpr const char* kStudyMark = " (study, Keras, PC)";
constexpr double kUnknown = std::numeric_limits<double>::quiet_NaN();

std::string Cell(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += '\\';
    out += (c == '\n' || c == '\r') ? ' ' : c;
  }
  return out;
}

std::string Signed(double d) { return (d >= 0 ? "+" : "") + svg::Num(d, 4); }

// "B2" from "EfficientNetV2-B2 (...)"; empty when the name carries no variant.
std::string VariantOf(const std::string& model) {
  for (size_t i = 0; i + 1 < model.size(); ++i) {
    const bool boundary = i == 0 || !std::isalnum(static_cast<unsigned char>(model[i - 1]));
    if (boundary && (model[i] == 'B' || model[i] == 'b') &&
        std::isdigit(static_cast<unsigned char>(model[i + 1])) &&
        (i + 2 == model.size() || !std::isalnum(static_cast<unsigned char>(model[i + 2])))) {
      return std::string("B") + model[i + 1];
    }
  }
  return "";
}

}  // namespace

bool IsStudyDataset(const std::vector<std::string>& class_names) {
  std::vector<std::string> have = class_names;
  std::vector<std::string> want = {
      "Baby Care",       "Beauty and Personal Care", "Computers", "Home Decor & Festive Needs",
      "Home Furnishing", "Kitchen & Dining",         "Watches"};
  std::sort(have.begin(), have.end());
  return have == want;
}

std::vector<ResultRow> StudyReferenceRows() {
  // Note [study rows]: the numbers the study reported on the Flipkart data (test accuracy, images
  // only unless noted; ../shared/data/flipkart/README.md). They are reference data to compare
  // against, not results of this project. Batch 16 for the Keras EfficientNets; unknown elsewhere.
  const std::string m = kStudyMark;
  return {
      {"Random Forest" + m, 0, kUnknown, 0.8286, "images only"},
      {"Random Forest, photos + text" + m, 0, kUnknown, 0.8381, "photos and text features"},
      {"Keras EfficientNetV2-B0" + m, 16, 4589, 0.7975, "ImageNet weights"},
      {"Keras EfficientNetV2-B1" + m, 16, 3418, 0.7911, "ImageNet weights"},
      {"Keras EfficientNetV2-B2" + m, 16, 4598, 0.6962, "ImageNet weights"},
      {"plain CNN" + m, 0, kUnknown, 0.7129, ""},
  };
}

std::string BatchText(int batch_size) {
  return batch_size > 0 ? std::to_string(batch_size) : std::string("-");
}

std::string FitTimeText(double s) {
  if (!std::isfinite(s) || s < 0) return "-";
  if (s < 100) return svg::Num(s, 1);
  std::string digits = std::to_string(static_cast<long long>(std::llround(s)));
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string AccuracyText(double accuracy) {
  return std::isfinite(accuracy) ? svg::Num(accuracy, 4) : std::string("-");
}

ResultsTable BuildResultsTable(const std::vector<ResultRow>& rows, bool with_study_rows) {
  ResultsTable t;
  t.rows = rows;
  const std::vector<ResultRow> study = StudyReferenceRows();
  if (with_study_rows) t.rows.insert(t.rows.end(), study.begin(), study.end());
  for (const auto& r : t.rows) t.has_notes = t.has_notes || !r.note.empty();
  t.footnote =
      "Accuracy: test split. B: batch size (global, per optimizer step). Rows marked \"(study, "
      "Keras, PC)\" are the numbers the study reported on the same Flipkart data, for reference; "
      "they were not measured by effnet-dist.";
  if (!with_study_rows) return t;
  const ResultRow& rf = study[0];  // the study's best images-only result
  for (const auto& r : rows) {
    if (!std::isfinite(r.accuracy)) {
      t.comparisons.push_back(r.model + ": no test accuracy (no test images), not compared");
      continue;
    }
    std::string line = r.model + ": " + svg::Num(r.accuracy, 4) + " vs Random Forest " +
                       svg::Num(rf.accuracy, 4) + " (" + Signed(r.accuracy - rf.accuracy) + ", " +
                       (r.accuracy > rf.accuracy ? "beats it" : "does not beat it") + ")";
    const std::string v = VariantOf(r.model);
    for (const auto& s : study) {
      if (!v.empty() && VariantOf(s.model) == v) {
        line += "; vs Keras EfficientNetV2-" + v + " " + svg::Num(s.accuracy, 4) + " (" +
                Signed(r.accuracy - s.accuracy) + ")";
      }
    }
    t.comparisons.push_back(std::move(line));
  }
  return t;
}

std::string ResultsMarkdown(const std::vector<ResultRow>& rows, bool with_study_rows) {
  const ResultsTable t = BuildResultsTable(rows, with_study_rows);
  std::string md = "| Model | B | Fit Time (s) | Accuracy |";
  md += t.has_notes ? " Note |\n|---|---:|---:|---:|---|\n" : "\n|---|---:|---:|---:|\n";
  for (const auto& r : t.rows) {
    md += "| " + Cell(r.model) + " | " + BatchText(r.batch_size) + " | " +
          FitTimeText(r.fit_time_s) + " | " + AccuracyText(r.accuracy) + " |";
    md += t.has_notes ? " " + Cell(r.note) + " |\n" : "\n";
  }
  md += "\n" + t.footnote + "\n";
  if (!t.comparisons.empty()) {
    md += "\n### Compared with the study\n\n";
    for (const auto& line : t.comparisons) md += "- " + Cell(line) + "\n";
  }
  return md;
}

Status WriteResultsMarkdown(const std::vector<ResultRow>& rows, const std::string& path,
                            bool with_study_rows, const std::string& extra_markdown) {
  std::string md = "# Results\n\n" + ResultsMarkdown(rows, with_study_rows);
  // Pictures written next to results.md by the trainer (single-run reports).
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  std::string links;
  std::error_code ec;
  if (std::filesystem::exists(dir / kConfusionMatrixSvg, ec)) {
    links += std::string("![Confusion matrix](") + kConfusionMatrixSvg + ")\n\n";
  }
  if (std::filesystem::exists(dir / kConfusionMatrixCsv, ec)) {
    links += std::string("Confusion matrix counts: [") + kConfusionMatrixCsv + "](" +
             kConfusionMatrixCsv + ")\n\n";
  }
  if (std::filesystem::exists(dir / kLearningCurvesSvg, ec)) {
    links += std::string("![Learning curves](") + kLearningCurvesSvg + ")\n\n";
  }
  if (!links.empty()) md += "\n## Pictures\n\n" + links;
  if (!extra_markdown.empty())
    md += "\n" + extra_markdown + (extra_markdown.back() == '\n' ? "" : "\n");
  return WriteFileAtomic(path, md).WithContext("writing results table");
}

}  // namespace effnet::report
