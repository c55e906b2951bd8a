// report.html: one self-contained page (SVG inline, PNGs as data: URIs, no script, no network)
// for one finished run or several side by side (effnet-results --html).
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace effnet::report {

// The page for the run directories (each needs summary.json; the rest is shown when present):
// the study-style results table, test accuracy with its 95 % Wilson interval, per-class
// precision/recall/F1, the confusion matrix, learning curves (stages and best epoch marked),
// throughput per epoch and per rank, the resolved config, and effnet-explain's galleries from
// "<run>/explain" (Note [report sections] in html_report.cpp). Errors name the run and the file.
Result<std::string> RunsReportHtml(const std::vector<std::string>& run_dirs, bool with_study_rows);
// Writes RunsReportHtml atomically to `path`.
Status WriteRunsReportHtml(const std::vector<std::string>& run_dirs, const std::string& path,
                           bool with_study_rows);

}  // namespace effnet::report
