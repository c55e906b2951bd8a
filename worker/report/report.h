// Run reports without LibTorch: TensorBoard event files, the study's results table, confusion
// matrix (CSV + SVG) and learning curves (SVG) from metrics.jsonl.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace effnet::report {

// Appends scalars to a TensorBoard event file "<dir>/events.out.tfevents.<time>.<host>" (TFRecord
// framing with masked CRC32C, Event protos with simple_value summaries), readable by TensorBoard.
class TensorBoardWriter {
 public:
  static Result<std::unique_ptr<TensorBoardWriter>> Create(const std::string& dir);
  virtual ~TensorBoardWriter() = default;
  virtual Status AddScalar(const std::string& tag, double value, int64_t step) = 0;
  virtual Status Flush() = 0;
  // The event file this writer appends to (empty for writers without a file, e.g. fakes).
  virtual std::string path() const { return {}; }
};

// File names inside a run directory (written by the trainer, read by effnet-results).
inline constexpr const char* kRunSummaryJson = "summary.json";
inline constexpr const char* kMetricsJsonl = "metrics.jsonl";
inline constexpr const char* kConfusionMatrixCsv = "confusion_matrix.csv";
inline constexpr const char* kConfusionMatrixSvg = "confusion_matrix.svg";
inline constexpr const char* kLearningCurvesSvg = "learning_curves.svg";

struct ConfusionMatrix {
  std::vector<std::string> class_names;
  std::vector<std::vector<int64_t>> counts;  // [true][predicted]
  // Trace over total; 0 for an empty matrix.
  double Accuracy() const;
};
// Both writers check the shape (N names, N x N non-negative counts) and write atomically.
Status WriteConfusionMatrixCsv(const ConfusionMatrix& m, const std::string& path);
Status WriteConfusionMatrixSvg(const ConfusionMatrix& m, const std::string& path,
                               const std::string& title);

// Reads "<run>/metrics.jsonl" (records with "kind":"epoch" carrying epoch, train_loss,
// train_accuracy, val_loss, val_accuracy, lr, image_size) and draws loss and accuracy curves.
// Missing or null metrics are skipped; epochs where image_size changes are marked. Errors name
// the file and line.
Status WriteLearningCurvesSvg(const std::string& metrics_jsonl, const std::string& svg_path,
                              const std::string& title);

// One row of the study's table: Model, B (batch size), Fit Time (s), Accuracy.
struct ResultRow {
  std::string model;      // "EfficientNetV2-B0 (effnet-dist, 2 ranks cpu)"
  int batch_size = 0;     // <= 0: unknown, shown as "-"
  double fit_time_s = 0;  // NaN or < 0: unknown, shown as "-"
  double accuracy = 0;    // test split, best checkpoint
  std::string note;
};
// results.md: the table (with the study's reported rows for comparison when `with_study_rows`),
// then links to the confusion matrix and curve pictures when present in the same directory.
Status WriteResultsMarkdown(const std::vector<ResultRow>& rows, const std::string& path,
                            bool with_study_rows, const std::string& extra_markdown = "");

// The study's reported results on the Flipkart data (test accuracy), marked
// "(study, Keras, PC)"; unknown batch sizes and fit times are "-".
std::vector<ResultRow> StudyReferenceRows();
// True when `class_names` are the study's 7 Flipkart categories (in any order): only then are
// the study's reported numbers a fair reference for a run on that data.
bool IsStudyDataset(const std::vector<std::string>& class_names);

// The table (and, with the study's rows, a comparison of each row with the study's best
// image-only result and with its Keras counterpart), without the picture links.
std::string ResultsMarkdown(const std::vector<ResultRow>& rows, bool with_study_rows);

}  // namespace effnet::report
