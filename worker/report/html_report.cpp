// report.html (html_report.h).
//
// Note [report sections]: the page has one <section> per topic, each with an id the browser test
// checks (results, accuracy, per-class, confusion, curves, throughput, config, explain); inside a
// section every run gets one card, side by side. Everything is built from the files of the run
// directory (summary.json, confusion_matrix.csv, metrics.jsonl, config.yaml, explain/), so the
// page written at the end of a run and the one effnet-results writes later agree. Text from files
// (class names come from user CSVs) is escaped; pictures are inline SVG or PNG data: URIs.
#include "worker/report/html_report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/atomic_file.h"
#include "storage/csv.h"
#include "worker/report/report.h"
#include "worker/report/run_summary.h"
#include "worker/report/svg.h"

namespace effnet::report {
namespace {

namespace fs = std::filesystem;

// Per run: at most this many gallery pictures and class means, each at most kMaxImageBytes and
// together at most kMaxEmbeddedBytes, so that the page stays a file one opens.
constexpr size_t kMaxGalleryImages = 16;
constexpr size_t kMaxClassMeans = 32;
constexpr uintmax_t kMaxImageBytes = 2u << 20;
constexpr size_t kMaxEmbeddedBytes = 16u << 20;
// A rank below this share of the epoch's fastest rank is marked as a straggler.
constexpr double kStragglerShare = 0.9;

std::string Esc(const std::string& s) { return svg::XmlEscape(s); }

// `r`, its error prefixed with `context`.
template <typename T>
Result<T> In(Result<T> r, const std::string& context) {
  if (!r.ok()) return r.status().WithContext(context);
  return r;
}

std::string Base64(const std::string& in) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (uint32_t{static_cast<unsigned char>(in[i])} << 16) |
                       (uint32_t{static_cast<unsigned char>(in[i + 1])} << 8) |
                       uint32_t{static_cast<unsigned char>(in[i + 2])};
    for (int k = 3; k >= 0; --k) out += kAlphabet[(v >> (6 * k)) & 63];
  }
  if (i < in.size()) {
    uint32_t v = uint32_t{static_cast<unsigned char>(in[i])} << 16;
    if (i + 1 < in.size()) v |= uint32_t{static_cast<unsigned char>(in[i + 1])} << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

// An SVG document as an inline element (without its XML declaration).
std::string InlineSvg(const std::string& doc) {
  const size_t at = doc.find("<svg");
  return at == std::string::npos ? doc : doc.substr(at);
}

std::string Percent(double v, int decimals = 1) { return svg::Num(100 * v, decimals) + " %"; }

struct GalleryImage {
  std::string caption, data_uri;
};

// One run directory, read once.
struct RunView {
  std::string dir, label;
  RunSummary summary;
  std::optional<ConfusionMatrix> cm;
  std::vector<EpochRecord> epochs;
  std::string config_yaml;
  std::vector<GalleryImage> class_means, gallery;
  std::string explain_note;  // why there are no galleries, or what they are
  size_t embedded_bytes = 0;
  int left_out = 0;  // pictures over the limits above

  // Adds a picture unless a limit is reached (then counts it in left_out).
  void Add(std::vector<GalleryImage>* list, size_t max_count, std::string caption,
           std::string uri) {
    if (list->size() >= max_count || embedded_bytes + uri.size() > kMaxEmbeddedBytes) {
      ++left_out;
      return;
    }
    embedded_bytes += uri.size();
    list->push_back({std::move(caption), std::move(uri)});
  }
};

bool Exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

// A PNG below `base` named by effnet-explain's files, as a data: URI; refuses paths leaving `base`
// and files that are not PNG or too large.
Result<std::string> PngDataUri(const fs::path& base, const std::string& rel) {
  const fs::path p = fs::path(rel).lexically_normal();
  if (rel.empty() || p.is_absolute() || (!p.empty() && *p.begin() == "..")) {
    return InvalidArgument((base / rel).string() + ": picture path outside " + base.string());
  }
  std::error_code ec;
  const uintmax_t size = fs::file_size(base / p, ec);
  if (ec) return NotFound((base / p).string() + ": " + ec.message());
  if (size > kMaxImageBytes) {
    return InvalidArgument((base / p).string() + ": " + std::to_string(size) +
                           " bytes, more than the report embeds");
  }
  EFFNET_ASSIGN_OR_RETURN(std::string bytes, ReadFile((base / p).string()));
  if (bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) {
    return InvalidArgument((base / p).string() + ": not a PNG file");
  }
  return "data:image/png;base64," + Base64(bytes);
}

// effnet-explain's class means and gallery (explain/summary.json, gallery.csv).
Status LoadExplain(RunView* v) {
  const fs::path dir = fs::path(v->dir) / kExplainDir;
  const fs::path summary_path = dir / "summary.json";
  if (!Exists(summary_path)) {
    v->explain_note = "No explanations: run effnet-explain " + v->dir +
                      "/checkpoints/best --data DATA.h5 --split test --out " + dir.string() +
                      " (it rewrites this page).";
    return Status::Ok();
  }
  EFFNET_ASSIGN_OR_RETURN(std::string text, ReadFile(summary_path.string()));
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgument(summary_path.string() + ": not a JSON object");
  }
  v->explain_note = "Grad-CAM of " + std::to_string(j.value("images", 0)) + " images (" +
                    j.value("split", std::string()) + " split, layer " +
                    j.value("layer", std::string("head")) + "), effnet-explain accuracy " +
                    svg::Num(j.value("accuracy", 0.0), 4) + ".";
  const auto files = j.find("files");
  if (files != j.end() && files->is_object()) {
    const auto means = files->find("class_mean_gradcam");
    if (means != files->end() && means->is_object()) {
      for (const auto& [name, entry] : means->items()) {
        if (!entry.is_object() || !entry.contains("png") || !entry["png"].is_string()) continue;
        EFFNET_ASSIGN_OR_RETURN(std::string uri, PngDataUri(dir, entry["png"].get<std::string>()));
        v->Add(&v->class_means, kMaxClassMeans, name + " (mean of correct)", std::move(uri));
      }
    }
  }
  const fs::path gallery = dir / "gallery.csv";
  if (!Exists(gallery)) return Status::Ok();
  EFFNET_ASSIGN_OR_RETURN(storage::CsvTable t, storage::ReadCsvFile(gallery.string()));
  EFFNET_ASSIGN_OR_RETURN(size_t kind, t.Column("kind"));
  EFFNET_ASSIGN_OR_RETURN(size_t truth, t.Column("true"));
  EFFNET_ASSIGN_OR_RETURN(size_t predicted, t.Column("predicted"));
  EFFNET_ASSIGN_OR_RETURN(size_t probability, t.Column("probability"));
  EFFNET_ASSIGN_OR_RETURN(size_t png, t.Column("gradcam_png"));
  for (const auto& row : t.rows) {
    if (row[png].empty()) continue;
    if (v->gallery.size() >= kMaxGalleryImages) {
      ++v->left_out;
      continue;
    }
    EFFNET_ASSIGN_OR_RETURN(std::string uri, PngDataUri(dir, row[png]));
    v->Add(&v->gallery, kMaxGalleryImages,
           row[kind] + ": true " + row[truth] + ", predicted " + row[predicted] + " (" +
               row[probability] + ")",
           std::move(uri));
  }
  if (v->left_out > 0) {
    v->explain_note += " " + std::to_string(v->left_out) +
                       " more pictures are in explain/ (left out to keep this page small).";
  }
  return Status::Ok();
}

Result<RunView> LoadRun(const std::string& dir) {
  RunView v;
  v.dir = dir;
  fs::path name = fs::path(dir).lexically_normal();
  if (!name.has_filename()) name = name.parent_path();  // "runs/a/" -> "runs/a"
  v.label = name.filename().empty() ? dir : name.filename().string();
  EFFNET_ASSIGN_OR_RETURN(v.summary, ReadRunSummary(dir));
  const fs::path base(dir);
  if (Exists(base / kConfusionMatrixCsv)) {
    EFFNET_ASSIGN_OR_RETURN(v.cm, ReadConfusionMatrixCsv((base / kConfusionMatrixCsv).string()));
  }
  if (Exists(base / kMetricsJsonl)) {
    EFFNET_ASSIGN_OR_RETURN(v.epochs, ReadEpochRecords((base / kMetricsJsonl).string()));
  }
  if (Exists(base / kConfigYaml)) {
    EFFNET_ASSIGN_OR_RETURN(v.config_yaml, ReadFile((base / kConfigYaml).string()));
  }
  EFFNET_RETURN_IF_ERROR(LoadExplain(&v));
  return v;
}

std::string Card(const RunView& v, const std::string& body) {
  return "<div class=\"card\"><h3>" + Esc(v.label) + "</h3>\n" + body + "</div>\n";
}

std::string Section(const std::string& id, const std::string& title, const std::string& intro,
                    const std::string& cards) {
  return "<section id=\"" + id + "\"><h2>" + Esc(title) + "</h2>\n" +
         (intro.empty() ? "" : "<p class=\"note\">" + intro + "</p>\n") +
         "<div class=\"cards\">\n" + cards + "</div></section>\n";
}

std::string Missing(const std::string& what) { return "<p class=\"note\">" + Esc(what) + "</p>\n"; }

std::string ResultsSection(const std::vector<RunView>& runs, bool with_study) {
  std::vector<ResultRow> rows;
  for (const auto& v : runs) {
    ResultRow row = ToResultRow(v.summary);
    row.note =
        v.label +
        (v.summary.best_epoch >= 0 ? ", best epoch " + std::to_string(v.summary.best_epoch + 1)
                                   : std::string()) +
        (v.summary.stop_reason.empty() ? "" : ", " + v.summary.stop_reason);
    rows.push_back(std::move(row));
  }
  const ResultsTable t = BuildResultsTable(rows, with_study);
  std::string h = "<table><tr><th>Model</th><th>B</th><th>Fit Time (s)</th><th>Accuracy</th>";
  h += t.has_notes ? "<th>Note</th></tr>\n" : "</tr>\n";
  for (size_t i = 0; i < t.rows.size(); ++i) {
    const ResultRow& r = t.rows[i];
    h += std::string(i >= runs.size() ? "<tr class=\"study\">" : "<tr>") + "<td>" + Esc(r.model) +
         "</td><td class=\"num\">" + BatchText(r.batch_size) + "</td><td class=\"num\">" +
         FitTimeText(r.fit_time_s) + "</td><td class=\"num\">" + AccuracyText(r.accuracy) +
         "</td>" + (t.has_notes ? "<td>" + Esc(r.note) + "</td>" : "") + "</tr>\n";
  }
  h += "</table>\n<p class=\"note\">" + Esc(t.footnote) + "</p>\n";
  if (!t.comparisons.empty()) {
    h += "<h3>Compared with the study</h3>\n<ul>\n";
    for (const auto& c : t.comparisons) h += "<li>" + Esc(c) + "</li>\n";
    h += "</ul>\n";
  }
  return "<section id=\"results\"><h2>Results</h2>\n" + h + "</section>\n";
}

std::string AccuracySection(const std::vector<RunView>& runs) {
  std::string h =
      "<table><tr><th>Run</th><th>Test accuracy</th><th>95 % interval (Wilson)</th>"
      "<th>Correct / images</th><th>Test loss</th></tr>\n";
  for (const auto& v : runs) {
    if (!v.summary.test_accuracy) {  // no test images: nothing measured, nothing shown as 0
      h += "<tr><td>" + Esc(v.label) +
           "</td><td colspan=\"4\">no test images: test metrics not computed</td></tr>\n";
      continue;
    }
    // The confusion matrix holds the exact counts; older runs without it fall back on
    // summary.json's accuracy and test_count.
    int64_t n = v.summary.test_count, k = std::llround(*v.summary.test_accuracy * n);
    if (v.cm) n = v.cm->Total(), k = v.cm->Correct();
    const Interval ci = WilsonInterval(k, n);
    const double acc = n > 0 ? static_cast<double>(k) / n : *v.summary.test_accuracy;
    h += "<tr><td>" + Esc(v.label) + "</td><td class=\"num big\">" + Percent(acc, 2) +
         "</td><td class=\"num\">" +
         (n > 0 ? Percent(ci.lo, 1) + " – " + Percent(ci.hi, 1) : std::string("unknown (n = 0)")) +
         "</td><td class=\"num\">" + std::to_string(k) + " / " + std::to_string(n) +
         "</td><td class=\"num\">" +
         (v.summary.test_loss ? svg::Num(*v.summary.test_loss, 4) : std::string("-")) +
         "</td></tr>\n";
  }
  h += "</table>\n<p class=\"note\">Test split, best checkpoint. The interval is the Wilson score "
       "interval for a binomial proportion: with few test images it is wide, and two runs whose "
       "intervals overlap much are not clearly different.</p>\n";
  return "<section id=\"accuracy\"><h2>Test accuracy</h2>\n" + h + "</section>\n";
}

std::string PerClassSection(const std::vector<RunView>& runs) {
  std::string cards;
  for (const auto& v : runs) {
    if (!v.cm) {
      cards += Card(v, Missing(std::string("no ") + kConfusionMatrixCsv));
      continue;
    }
    const auto scores = v.cm->PerClass();
    std::string t =
        "<table><tr><th>Class</th><th>Precision</th><th>Recall</th><th>F1</th>"
        "<th>Support</th></tr>\n";
    double mp = 0, mr = 0, mf = 0;
    int64_t support = 0;
    for (size_t c = 0; c < scores.size(); ++c) {
      const ClassScores& s = scores[c];
      mp += s.precision, mr += s.recall, mf += s.f1, support += s.support;
      t += "<tr><td>" + Esc(v.cm->class_names[c]) + "</td><td class=\"num\">" +
           svg::Num(s.precision, 3) + "</td><td class=\"num\">" + svg::Num(s.recall, 3) +
           "</td><td class=\"num\">" + svg::Num(s.f1, 3) + "</td><td class=\"num\">" +
           std::to_string(s.support) + "</td></tr>\n";
    }
    const double n = std::max<double>(1, scores.size());
    t += "<tr class=\"total\"><td>macro average</td><td class=\"num\">" + svg::Num(mp / n, 3) +
         "</td><td class=\"num\">" + svg::Num(mr / n, 3) + "</td><td class=\"num\">" +
         svg::Num(mf / n, 3) + "</td><td class=\"num\">" + std::to_string(support) +
         "</td></tr>\n</table>\n";
    cards += Card(v, t);
  }
  return Section("per-class", "Per-class precision, recall, F1",
                 "From the test split's confusion matrix; 0 where a class was never predicted.",
                 cards);
}

// One card per run: the figure `draw` makes from the run's `file` (its errors name that file),
// then what `below` adds; or, where the run lacks it (`has`), the note `missing`.
Result<std::string> FigureCards(const std::vector<RunView>& runs, const char* file,
                                const std::string& missing,
                                const std::function<bool(const RunView&)>& has,
                                const std::function<Result<std::string>(const RunView&)>& draw,
                                const std::function<std::string(const RunView&)>& below = nullptr) {
  std::string cards;
  for (const auto& v : runs) {
    if (!has(v)) {
      cards += Card(v, Missing(missing));
      continue;
    }
    EFFNET_ASSIGN_OR_RETURN(std::string doc, In(draw(v), v.dir + "/" + file));
    cards +=
        Card(v, "<div class=\"figure\">" + InlineSvg(doc) + "</div>" + (below ? below(v) : ""));
  }
  return cards;
}

// FigureCards for a figure drawn from the run's epoch records (metrics.jsonl).
Result<std::string> EpochFigureCards(
    const std::vector<RunView>& runs,
    const std::function<Result<std::string>(const RunView&)>& draw,
    const std::function<std::string(const RunView&)>& below = nullptr) {
  return FigureCards(
      runs, kMetricsJsonl, std::string("no epoch records in ") + kMetricsJsonl,
      [](const RunView& v) { return !v.epochs.empty(); }, draw, below);
}

Result<std::string> ConfusionSection(const std::vector<RunView>& runs) {
  EFFNET_ASSIGN_OR_RETURN(std::string cards,
                          FigureCards(
                              runs, kConfusionMatrixCsv, std::string("no ") + kConfusionMatrixCsv,
                              [](const RunView& v) { return v.cm.has_value(); },
                              [](const RunView& v) {
                                return ConfusionMatrixSvg(*v.cm, v.summary.model + " test split");
                              }));
  return Section("confusion", "Confusion matrix", "Rows: true class; columns: predicted class.",
                 cards);
}

Result<std::string> CurvesSection(const std::vector<RunView>& runs) {
  EFFNET_ASSIGN_OR_RETURN(std::string cards, EpochFigureCards(runs, [](const RunView& v) {
                            return LearningCurvesSvg(v.epochs,
                                                     v.summary.model + " learning curves");
                          }));
  return Section("curves", "Learning curves",
                 "Dotted grey lines: a new progressive-learning stage (its training image size). "
                 "Dashed green line: the best epoch, whose checkpoint was tested. Epochs count "
                 "from 1.",
                 cards);
}

// Per-epoch and per-rank throughput of one run, and which rank was the slowest.
std::string ThroughputTable(const RunView& v) {
  size_t ranks = 0;
  for (const auto& e : v.epochs) ranks = std::max(ranks, e.rank_img_per_s.size());
  std::string t =
      "<table><tr><th>Epoch</th><th>Size</th><th>Epoch time (s)</th>"
      "<th>All ranks (img/s)</th>";
  for (size_t r = 0; r < ranks; ++r) {
    t += "<th>Rank " + std::to_string(r) + " (wait)</th>";
  }
  t += "</tr>\n";
  std::vector<double> share_sum(ranks, 0.0);
  int share_epochs = 0;
  for (const auto& e : v.epochs) {
    // Note [epoch numbering]: shown from 1.
    t += "<tr><td class=\"num\">" + svg::Num(e.epoch + 1, 0) + "</td><td class=\"num\">" +
         (e.image_size ? std::to_string(*e.image_size) : std::string("-")) +
         "</td><td class=\"num\">" + (e.epoch_time_s ? svg::Num(*e.epoch_time_s, 1) : "-") +
         "</td><td class=\"num\">" + (e.img_per_s_global ? svg::Num(*e.img_per_s_global, 1) : "-") +
         "</td>";
    const double fastest = e.rank_img_per_s.empty() ? 0
                                                    : *std::max_element(e.rank_img_per_s.begin(),
                                                                        e.rank_img_per_s.end());
    for (size_t r = 0; r < ranks; ++r) {
      if (r >= e.rank_img_per_s.size()) {
        t += "<td class=\"num\">-</td>";
        continue;
      }
      const double x = e.rank_img_per_s[r];
      const bool slow = fastest > 0 && x < kStragglerShare * fastest;
      t += std::string("<td class=\"num") + (slow ? " slow" : "") + "\">" + svg::Num(x, 1) +
           (r < e.rank_wait_s.size() ? " (" + svg::Num(e.rank_wait_s[r], 1) + " s)" : "") + "</td>";
    }
    if (fastest > 0 && e.rank_img_per_s.size() == ranks) {
      for (size_t r = 0; r < ranks; ++r) share_sum[r] += e.rank_img_per_s[r] / fastest;
      ++share_epochs;
    }
    t += "</tr>\n";
  }
  t += "</table>\n";
  std::string verdict;
  if (ranks > 1 && share_epochs > 0) {
    const size_t slowest = std::min_element(share_sum.begin(), share_sum.end()) - share_sum.begin();
    const double share = share_sum[slowest] / share_epochs;
    verdict = "<p>Slowest rank: " + std::to_string(slowest) + ", on average " + Percent(share, 0) +
              " of the epoch's fastest rank" +
              (share < kStragglerShare ? " — a straggler: the others wait for it at every "
                                         "all-reduce."
                                       : " (no straggler).") +
              "</p>\n";
  } else if (ranks <= 1) {
    verdict = "<p class=\"note\">One rank (or per-rank throughput not recorded).</p>\n";
  }
  return verdict + t;
}

Result<std::string> ThroughputSection(const std::vector<RunView>& runs) {
  EFFNET_ASSIGN_OR_RETURN(std::string cards, EpochFigureCards(
                                                 runs,
                                                 [](const RunView& v) {
                                                   return ThroughputSvg(
                                                       v.epochs,
                                                       v.summary.model + " training throughput");
                                                 },
                                                 ThroughputTable));
  return Section("throughput", "Throughput per epoch and per rank",
                 "Training images per second (validation excluded). The whole job's is wall "
                 "clock; a rank's is its own pace, its images over its training time minus the "
                 "time it waited in collectives (in brackets): every rank waits for the slowest "
                 "at each all-reduce, so wall-clock rates are equal. Red cells: a rank below " +
                     Percent(kStragglerShare, 0) + " of that epoch's fastest rank.",
                 cards);
}

std::string ConfigSection(const std::vector<RunView>& runs) {
  std::string cards;
  for (const auto& v : runs) {
    cards +=
        Card(v, v.config_yaml.empty() ? Missing(std::string("no ") + kConfigYaml)
                                      : "<pre class=\"config\">" + Esc(v.config_yaml) + "</pre>\n");
  }
  return Section("config", "Configuration",
                 std::string("The resolved configuration the run used (") + kConfigYaml +
                     "; every field is documented in docs/config.md).",
                 cards);
}

std::string ExplainSection(const std::vector<RunView>& runs) {
  std::string cards;
  for (const auto& v : runs) {
    std::string body = "<p class=\"note\">" + Esc(v.explain_note) + "</p>\n";
    auto grid = [](const std::string& title, const std::vector<GalleryImage>& images) {
      if (images.empty()) return std::string();
      std::string g = "<h4>" + Esc(title) + "</h4><div class=\"gallery\">\n";
      for (const auto& im : images) {
        g += "<figure><img src=\"" + im.data_uri + "\" alt=\"" + Esc(im.caption) +
             "\"><figcaption>" + Esc(im.caption) + "</figcaption></figure>\n";
      }
      return g + "</div>\n";
    };
    body += grid("Mean Grad-CAM per class", v.class_means);
    body += grid("Most confident right and wrong predictions", v.gallery);
    cards += Card(v, body);
  }
  return Section("explain", "What the model looks at",
                 "Grad-CAM heat maps from effnet-explain, when its output is in the run's "
                 "explain/ folder.",
                 cards);
}

constexpr const char* kStyle = R"(
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 24px; color: #1a1a1a;
       background: #fafafa; }
h1 { font-size: 24px; margin-bottom: 4px; }
h2 { font-size: 19px; border-bottom: 2px solid #1f77b4; padding-bottom: 4px; margin-top: 32px; }
h3 { font-size: 15px; margin: 4px 0 8px 0; }
h4 { font-size: 13px; margin: 12px 0 6px 0; }
section { margin-bottom: 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.card { background: white; border: 1px solid #ddd; border-radius: 6px; padding: 12px;
        max-width: 100%; overflow-x: auto; }
.cards > .card:not(:only-child) { flex: 1 1 0; min-width: 380px; }  /* runs side by side */
.figure svg { max-width: 100%; height: auto; }
table { border-collapse: collapse; background: white; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; }
th { background: #f0f4f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.big { font-weight: bold; font-size: 15px; }
td.slow { background: #fde0dd; color: #a50f15; font-weight: bold; }
tr.study td { color: #555; font-style: italic; }
tr.total td { font-weight: bold; }
.note { color: #555; font-size: 13px; }
pre.config { font-size: 12px; max-height: 360px; overflow: auto; background: #f6f6f6;
             padding: 8px; margin: 0; }
.gallery { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; width: 150px; font-size: 11px; }
figure img { width: 150px; height: auto; image-rendering: pixelated; display: block; }
)";

}  // namespace

Result<std::string> RunsReportHtml(const std::vector<std::string>& run_dirs, bool with_study_rows) {
  if (run_dirs.empty()) return InvalidArgument("report.html: no run directories");
  std::vector<RunView> runs;
  for (const auto& dir : run_dirs) {
    EFFNET_ASSIGN_OR_RETURN(RunView v, In(LoadRun(dir), "run " + dir));
    runs.push_back(std::move(v));
  }
  std::string title = runs.size() == 1 ? runs[0].summary.model + " — " + runs[0].label
                                       : "Comparison of " + std::to_string(runs.size()) + " runs";
  std::string labels;
  for (const auto& v : runs) labels += (labels.empty() ? "" : ", ") + v.label;
  std::string h = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>" +
                  Esc(title) + "</title>\n<style>" + kStyle + "</style></head>\n<body>\n<h1>" +
                  Esc(title) + "</h1>\n<p class=\"note\">effnet-dist run report: " + Esc(labels) +
                  ". Self-contained: no scripts, no network.</p>\n";
  h += ResultsSection(runs, with_study_rows);
  h += AccuracySection(runs);
  h += PerClassSection(runs);
  EFFNET_ASSIGN_OR_RETURN(std::string confusion, ConfusionSection(runs));
  h += confusion;
  EFFNET_ASSIGN_OR_RETURN(std::string curves, CurvesSection(runs));
  h += curves;
  EFFNET_ASSIGN_OR_RETURN(std::string throughput, ThroughputSection(runs));
  h += throughput;
  h += ConfigSection(runs);
  h += ExplainSection(runs);
  return h + "</body></html>\n";
}

Status WriteRunsReportHtml(const std::vector<std::string>& run_dirs, const std::string& path,
                           bool with_study_rows) {
  EFFNET_ASSIGN_OR_RETURN(std::string html, RunsReportHtml(run_dirs, with_study_rows));
  return WriteFileAtomic(path, html).WithContext("writing " + path);
}

}  // namespace effnet::report
