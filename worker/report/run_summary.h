// summary.json of a finished run (written by the trainer) and its row in the results table.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/report/report.h"

namespace effnet::report {

// summary.json's one schema: written by RunSummaryToJson (effnet-train/-worker), read by
// ParseRunSummary (effnet-results).
struct RunSummary {
  std::string model;    // "EfficientNetV2-B2" (older files: "EfficientNetV2")
  std::string variant;  // "b2"
  int batch_size = 0;   // global batch per step
  double fit_time_s = 0;
  // Test metrics; nullopt (JSON null) when the test split had no images (test_count 0).
  std::optional<double> test_accuracy;
  int world_size = 1;
  std::string device;  // "cpu", "cuda"
  // Optional when reading (older files lack them).
  std::optional<double> test_loss;
  int64_t test_count = 0;
  int best_epoch = -1;  // 0-based
  std::string stop_reason;
  bool reduced = false;  // a reduced test model (model.extra_width/extra_depth != 1)
  std::string start;     // StartLabel of the run's weights; "" in older files (unknown)
  // Ranks that trained each epoch (index = 0-based epoch), from metrics.jsonl: they differ when an
  // elastic job lost or regained ranks (Note [elastic world size] in coordinator/job.h); world_size
  // is the last launch's. Empty in older files.
  std::vector<int> epoch_world_sizes;
};

// "3" or, for an elastic run, "3 -> 2 -> 3": the world size of each run of epochs.
std::string WorldSizesLabel(const RunSummary& s);

// Where a run's weights started, as every table shows it: "from scratch" (random weights) or
// "from <file name>" (model.pretrained).
std::string StartLabel(const std::string& pretrained_path);

// The JSON text of summary.json (pretty-printed, trailing newline).
std::string RunSummaryToJson(const RunSummary& s);

// Parses summary.json text; every field is required and type-checked. Errors name `source` and
// the field: "runs/a/summary.json: field \"test_accuracy\": expected a number, found string".
Result<RunSummary> ParseRunSummary(const std::string& json_text, const std::string& source);
// Reads "<run_dir>/summary.json".
Result<RunSummary> ReadRunSummary(const std::string& run_dir);

// "EfficientNetV2-B2 (effnet-dist, 2 ranks cpu, from scratch)"; the model name gets the variant
// appended unless it already names it.
ResultRow ToResultRow(const RunSummary& s);

}  // namespace effnet::report
