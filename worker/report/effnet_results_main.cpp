// effnet-results RUN_DIR... [--out results.md] [--html report.html] [--with-study]
// One table comparing finished runs (their summary.json), optionally with the study's numbers;
// --html also writes the runs' report page side by side (html_report.h).
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "common/log.h"
#include "common/text.h"
#include "worker/report/html_report.h"
#include "worker/report/report.h"
#include "worker/report/run_summary.h"

namespace fs = std::filesystem;
using namespace effnet;

namespace {

// Markdown link target for `file` inside `run_dir`, relative to the results file's directory.
std::string LinkTo(const std::string& run_dir, const char* file, const fs::path& out_dir) {
  std::error_code ec;
  const fs::path target = fs::absolute(fs::path(run_dir) / file, ec);
  const fs::path base = fs::absolute(out_dir.empty() ? fs::path(".") : out_dir, ec);
  fs::path rel = fs::relative(target, base, ec);
  return (ec || rel.empty() ? target : rel).generic_string();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Writes one Markdown table comparing training runs (from each RUN_DIR/summary.json)"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  std::vector<std::string> run_dirs;
  std::string out = "results.md", html;
  bool with_study = false;
  app.add_option("run_dirs", run_dirs, "run directories, each with a summary.json")->required();
  app.add_option("--out,-o", out, "the Markdown file to write")->capture_default_str();
  app.add_option("--html", html,
                 "also write a self-contained HTML page comparing the runs side by side");
  app.add_flag("--with-study", with_study,
               "add the study's reported Flipkart results as reference rows");
  CLI11_PARSE(app, argc, argv);

  std::vector<report::ResultRow> rows;
  std::string runs_md = "## Runs\n\n";
  const fs::path out_dir = fs::path(out).parent_path();
  int errors = 0;
  for (const auto& dir : run_dirs) {
    auto summary = report::ReadRunSummary(dir);
    if (!summary.ok()) {
      log::Error(summary.status().ToString());
      ++errors;
      continue;
    }
    report::ResultRow row = report::ToResultRow(*summary);
    fs::path name = fs::path(dir).lexically_normal();
    if (!name.has_filename()) name = name.parent_path();  // "runs/a/" -> "runs/a"
    row.note = name.filename().empty() ? dir : name.filename().string();
    runs_md += "- `" + dir + "`: " + row.model + ", batch " + std::to_string(row.batch_size) +
               ", test accuracy " +
               (std::isfinite(row.accuracy) ? Fixed(row.accuracy, 4)
                                            : std::string("not computed (no test images)"));
    std::error_code ec;
    for (const auto& [file, label] :
         {std::pair{report::kLearningCurvesSvg, "learning curves"},
          std::pair{report::kConfusionMatrixSvg, "confusion matrix"},
          std::pair{report::kConfusionMatrixCsv, "confusion matrix CSV"}}) {
      if (fs::exists(fs::path(dir) / file, ec)) {
        runs_md += std::string("; [") + label + "](" + LinkTo(dir, file, out_dir) + ")";
      }
    }
    runs_md += "\n";
    rows.push_back(std::move(row));
  }
  if (errors > 0) {
    log::Error("effnet-results: " + std::to_string(errors) + " of " +
               std::to_string(run_dirs.size()) + " run directories unusable; nothing written");
    return 1;
  }
  Status st = report::WriteResultsMarkdown(rows, out, with_study, runs_md);
  if (!st.ok()) {
    log::Error(st.ToString());
    return 1;
  }
  log::Info("wrote " + out + " (" + std::to_string(rows.size()) + " runs" +
            (with_study ? ", with the study's rows)" : ")"));
  if (!html.empty()) {
    st = report::WriteRunsReportHtml(run_dirs, html, with_study);
    if (!st.ok()) {
      log::Error(st.ToString());
      return 1;
    }
    log::Info("wrote " + html);
  }
  return 0;
}
