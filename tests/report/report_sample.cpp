// report_sample OUT_DIR: writes one of each report artefact (TensorBoard events, confusion matrix
// CSV + SVG for the Flipkart classes, metrics.jsonl + learning curves, results.md) from a fixed
// synthetic run, for check_report_files.py to decode with Python and for looking at by eye.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "common/atomic_file.h"
#include "worker/report/report.h"

using namespace effnet;
using namespace effnet::report;

namespace {

// The values check_report_files.py expects; keep the two in step.
double LossAt(int step) { return 2.0 / (1.0 + 0.1 * step); }
double AccAt(int step) { return 0.1 + 0.01 * step; }

Status Run(const std::string& out) {
  EFFNET_ASSIGN_OR_RETURN(auto tb, TensorBoardWriter::Create(out + "/tb"));
  for (int step = 0; step < 40; ++step) {
    EFFNET_RETURN_IF_ERROR(tb->AddScalar("train/loss", LossAt(step), step));
    if (step % 10 == 9) EFFNET_RETURN_IF_ERROR(tb->AddScalar("val/accuracy", AccAt(step), step));
  }
  EFFNET_RETURN_IF_ERROR(tb->Flush());

  ConfusionMatrix m;
  m.class_names = {
      "Baby Care",       "Beauty and Personal Care", "Computers", "Home Decor & Festive Needs",
      "Home Furnishing", "Kitchen & Dining",         "Watches"};
  const size_t n = m.class_names.size();
  m.counts.assign(n, std::vector<int64_t>(n, 0));
  for (size_t t = 0; t < n; ++t) {
    for (size_t p = 0; p < n; ++p) m.counts[t][p] = t == p ? 15 + 2 * t : (t * 3 + p * 5) % 4;
  }
  EFFNET_RETURN_IF_ERROR(WriteConfusionMatrixCsv(m, out + "/" + kConfusionMatrixCsv));
  EFFNET_RETURN_IF_ERROR(WriteConfusionMatrixSvg(m, out + "/" + kConfusionMatrixSvg,
                                                 "EfficientNetV2-B0, Flipkart test split"));

  std::string jsonl = "{\"kind\":\"run_start\",\"world_size\":2}\n";
  for (int e = 1; e <= 30; ++e) {
    const int size = e <= 10 ? 128 : e <= 20 ? 192 : 256;
    char line[256];
    std::snprintf(line, sizeof line,
                  "{\"kind\":\"epoch\",\"epoch\":%d,\"train_loss\":%.4f,\"train_accuracy\":%.4f,"
                  "\"val_loss\":%.4f,\"val_accuracy\":%.4f,\"lr\":0.01,\"image_size\":%d}\n",
                  e, 1.9 * std::exp(-0.09 * e) + 0.05, 0.95 - 0.8 * std::exp(-0.12 * e),
                  1.5 * std::exp(-0.06 * e) + 0.35 + 0.02 * std::sin(e),
                  0.84 - 0.6 * std::exp(-0.1 * e) + 0.01 * std::cos(e), size);
    jsonl += line;
  }
  EFFNET_RETURN_IF_ERROR(WriteFileAtomic(out + "/" + kMetricsJsonl, jsonl));
  EFFNET_RETURN_IF_ERROR(WriteLearningCurvesSvg(out + "/" + kMetricsJsonl,
                                                out + "/" + kLearningCurvesSvg,
                                                "EfficientNetV2-B0 on Flipkart (2 ranks, cpu)"));
  return WriteResultsMarkdown(
      {{"EfficientNetV2-B0 (effnet-dist, 2 ranks cpu)", 32, 812.5, m.Accuracy(), "sample"}},
      out + "/results.md", true);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: report_sample OUT_DIR\n");
    return 2;
  }
  std::filesystem::create_directories(argv[1]);
  Status s = Run(argv[1]);
  if (!s.ok()) {
    std::fprintf(stderr, "report_sample: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
