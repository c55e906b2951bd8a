// Run reports without LibTorch: TensorBoard event files, the study's results table, confusion
// matrix (CSV + SVG) and learning curves (SVG) from metrics.jsonl.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/status.h"

namespace effnet::report {

// One hyper-parameter of a run for TensorBoard's hparams plugin.
struct HParam {
  std::string name;
  std::variant<double, std::string, bool> value;
};

// Appends to a TensorBoard event file "<dir>/events.out.tfevents.<time>.<host>" (TFRecord framing
// with masked CRC32C, hand-encoded Event protos), readable by TensorBoard: scalars, PNG images,
// and the hparams plugin's records.
class TensorBoardWriter {
 public:
  static Result<std::unique_ptr<TensorBoardWriter>> Create(const std::string& dir);
  virtual ~TensorBoardWriter() = default;
  virtual Status AddScalar(const std::string& tag, double value, int64_t step) = 0;
  // An image summary (the images plugin's form) of PNG bytes; `description` shows with it.
  virtual Status AddImage(const std::string& tag, const std::string& png, int width, int height,
                          int64_t step, const std::string& description) = 0;
  // The hparams plugin's three records for this run (one "session"): the experiment (the
  // hyper-parameters and the scalar tags to show as metrics), the session's start with the values,
  // and its end (success or failure).
  virtual Status AddHparams(const std::vector<HParam>& hparams,
                            const std::vector<std::string>& metric_tags, bool success) = 0;
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
inline constexpr const char* kReportHtml = "report.html";
inline constexpr const char* kConfigYaml = "config.yaml";
// effnet-explain's output inside a run directory, when the user wrote it there.
inline constexpr const char* kExplainDir = "explain";

// Precision, recall and F1 of one class (0 where undefined: nothing predicted or no support).
struct ClassScores {
  double precision = 0, recall = 0, f1 = 0;
  int64_t support = 0;    // true instances (row sum)
  int64_t predicted = 0;  // predicted instances (column sum)
};

struct ConfusionMatrix {
  std::vector<std::string> class_names;
  std::vector<std::vector<int64_t>> counts;  // [true][predicted]
  // Trace over total; 0 for an empty matrix.
  double Accuracy() const;
  int64_t Total() const;
  int64_t Correct() const;
  // One entry per class, in class order.
  std::vector<ClassScores> PerClass() const;
};
// Shape check: N names, N x N non-negative counts.
Status ValidateConfusionMatrix(const ConfusionMatrix& m);
// Both writers validate and write atomically.
Status WriteConfusionMatrixCsv(const ConfusionMatrix& m, const std::string& path);
Status WriteConfusionMatrixSvg(const ConfusionMatrix& m, const std::string& path,
                               const std::string& title);
// The SVG document WriteConfusionMatrixSvg writes.
Result<std::string> ConfusionMatrixSvg(const ConfusionMatrix& m, const std::string& title);
// Reads what WriteConfusionMatrixCsv wrote; errors name the file and line.
Result<ConfusionMatrix> ReadConfusionMatrixCsv(const std::string& path);

// A PNG picture of the matrix for TensorBoard: cells coloured by the share of their row, counts
// drawn in a small bitmap font, class indices on the axes (names go in the image's description).
struct PngImage {
  std::string bytes;
  int width = 0, height = 0;
};
Result<PngImage> ConfusionMatrixPng(const ConfusionMatrix& m);

// Wilson score interval of a binomial proportion (successes of n), by default 95 %
// (z = 1.96). Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 and
// n successes. n == 0 gives [0, 1].
struct Interval {
  double lo = 0, hi = 1;
};
Interval WilsonInterval(int64_t successes, int64_t n, double z = 1.959963984540054);

// One "kind":"epoch" record of metrics.jsonl (written by the trainer, rank 0). Optional fields
// are absent in older files or null.
struct EpochRecord {
  double epoch = 0;  // 0-based as the trainer writes it (Note [epoch numbering])
  std::optional<int64_t> step, stage, image_size, best_epoch;
  std::optional<int64_t> world_size;  // ranks that trained the epoch
  std::optional<double> train_loss, train_accuracy, val_loss, val_accuracy;
  std::optional<double> img_per_s_global, epoch_time_s;
  // One per rank, empty in older files: the rank's own pace (img/s outside collective waits) and
  // the seconds it was blocked in collectives (Note [rank throughput] in worker/train/trainer.cpp).
  std::vector<double> rank_img_per_s, rank_wait_s;
  bool is_best = false;
};
// Note [metrics.jsonl epochs]: a resumed run appends the epochs after its checkpoint again, so the
// last record of an epoch wins; records of other kinds are skipped. Sorted by epoch. Errors name
// the file and line.
Result<std::vector<EpochRecord>> ReadEpochRecords(const std::string& metrics_jsonl);

// Loss and accuracy curves (train and val) from the epoch records: progressive-stage changes
// (stage or image size) are marked with the new size, and the best epoch (the last record's
// best_epoch) with a vertical line. Missing metrics are skipped. The axis counts from 1.
Result<std::string> LearningCurvesSvg(const std::vector<EpochRecord>& epochs,
                                      const std::string& title);
// Reads metrics.jsonl and writes LearningCurvesSvg atomically.
Status WriteLearningCurvesSvg(const std::string& metrics_jsonl, const std::string& svg_path,
                              const std::string& title);
// Training throughput per epoch: the whole job's images/s and, when recorded, one line per rank
// with its own pace (a straggler is the line below the others).
Result<std::string> ThroughputSvg(const std::vector<EpochRecord>& epochs, const std::string& title);

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

// The results table's one model, rendered as Markdown (results.md) and HTML (report.html):
// the rows (with the study's rows appended when asked), whether a Note column is needed, the
// footnote, and with the study's rows one comparison sentence per run.
struct ResultsTable {
  std::vector<ResultRow> rows;
  bool has_notes = false;
  std::string footnote;
  std::vector<std::string> comparisons;  // plain text
};
ResultsTable BuildResultsTable(const std::vector<ResultRow>& rows, bool with_study_rows);
// Cell texts shared by both renderings: "-" for unknown values.
std::string BatchText(int batch_size);
std::string FitTimeText(double seconds);  // "4,589" at 100 s and more, "12.3" below
std::string AccuracyText(double accuracy);

// The table (and, with the study's rows, a comparison of each row with the study's best
// image-only result and with its Keras counterpart), without the picture links.
std::string ResultsMarkdown(const std::vector<ResultRow>& rows, bool with_study_rows);

}  // namespace effnet::report
