// report.html and what it is built from: the Wilson interval, per-class scores, the confusion
// matrix CSV read back, its PNG, epoch records with per-rank throughput, TensorBoard image and
// hparams events, and effnet-results --html. The browser and TensorBoard's own reader check the
// page and the event file of a real run in check_run_report.py.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "tests/report/test_util.h"
#include "worker/report/html_report.h"
#include "worker/report/report.h"
#include "worker/report/run_summary.h"
#include "worker/report/tfrecord.h"

namespace effnet::report {
namespace {

using testing::CountOf;
using testing::Slurp;
using testing::Spit;
using testing::TempDir;

TEST(WilsonInterval, KnownValues) {
  // Reference values: statsmodels proportion_confint(k, n, method="wilson").
  Interval a = WilsonInterval(8, 10);
  EXPECT_NEAR(a.lo, 0.4902, 1e-4);
  EXPECT_NEAR(a.hi, 0.9433, 1e-4);
  Interval zero = WilsonInterval(0, 10);
  EXPECT_DOUBLE_EQ(zero.lo, 0.0);
  EXPECT_NEAR(zero.hi, 0.2775, 1e-4);
  Interval all = WilsonInterval(10, 10);
  EXPECT_NEAR(all.lo, 0.7225, 1e-4);
  EXPECT_DOUBLE_EQ(all.hi, 1.0);
  Interval none = WilsonInterval(0, 0);
  EXPECT_DOUBLE_EQ(none.lo, 0.0);
  EXPECT_DOUBLE_EQ(none.hi, 1.0);
  // The study's test split (~158 images) at 80 %: about +-6 points.
  Interval study = WilsonInterval(126, 158);
  EXPECT_NEAR(study.hi - study.lo, 0.125, 0.01);
}

ConfusionMatrix Tricky() {
  ConfusionMatrix m;
  m.class_names = {"A, \"quoted\"", "<b>bold</b> & co", "never predicted"};
  m.counts = {{5, 1, 0}, {2, 6, 0}, {1, 1, 0}};
  return m;
}

TEST(ConfusionMatrix, PerClassScores) {
  const auto s = Tricky().PerClass();
  ASSERT_EQ(s.size(), 3u);
  EXPECT_DOUBLE_EQ(s[0].precision, 5.0 / 8);
  EXPECT_DOUBLE_EQ(s[0].recall, 5.0 / 6);
  EXPECT_NEAR(s[0].f1, 2 * (5.0 / 8) * (5.0 / 6) / (5.0 / 8 + 5.0 / 6), 1e-12);
  EXPECT_EQ(s[1].support, 8);
  EXPECT_EQ(s[1].predicted, 8);
  EXPECT_DOUBLE_EQ(s[2].precision, 0.0);  // never predicted: 0, not NaN
  EXPECT_DOUBLE_EQ(s[2].f1, 0.0);
  EXPECT_EQ(Tricky().Total(), 16);
  EXPECT_EQ(Tricky().Correct(), 11);
}

TEST(ConfusionMatrix, CsvRoundTripAndErrors) {
  TempDir tmp;
  ASSERT_TRUE(WriteConfusionMatrixCsv(Tricky(), tmp / "cm.csv").ok());
  auto back = ReadConfusionMatrixCsv(tmp / "cm.csv");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->class_names, Tricky().class_names);
  EXPECT_EQ(back->counts, Tricky().counts);

  Spit(tmp / "bad.csv", "true\\predicted,a,b\na,1,x\nb,0,1\n");
  auto bad = ReadConfusionMatrixCsv(tmp / "bad.csv");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("bad.csv:2"), std::string::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("'x'"), std::string::npos);
  Spit(tmp / "order.csv", "true\\predicted,a,b\nb,1,0\na,0,1\n");
  EXPECT_FALSE(ReadConfusionMatrixCsv(tmp / "order.csv").ok());
}

TEST(ConfusionMatrix, PngHasSignatureAndSize) {
  auto png = ConfusionMatrixPng(Tricky());
  ASSERT_TRUE(png.ok()) << png.status().ToString();
  ASSERT_GT(png->bytes.size(), 100u);
  EXPECT_EQ(png->bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(png->width, png->height);
  EXPECT_GT(png->width, 3 * 40);
  // IHDR carries the same size (big-endian width, height at bytes 16..23).
  auto be32 = [&](size_t at) {
    uint32_t v = 0;
    for (size_t i = 0; i < 4; ++i) v = v << 8 | static_cast<unsigned char>(png->bytes[at + i]);
    return static_cast<int>(v);
  };
  EXPECT_EQ(be32(16), png->width);
  EXPECT_EQ(be32(20), png->height);
  EXPECT_FALSE(ConfusionMatrixPng(ConfusionMatrix{}).ok());
}

TEST(TensorBoardEvents, ImageAndHparamsDecode) {
  auto img = DecodeEvent(
      EncodeImageEvent(1.7e9, 42, "test/confusion_matrix", "PNGBYTES", 10, 12, "rows: true"));
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  EXPECT_EQ(img->step, 42);
  EXPECT_TRUE(img->scalars.empty());
  ASSERT_EQ(img->image_tags.size(), 1u);
  EXPECT_EQ(img->image_tags[0], "test/confusion_matrix");

  const auto events = EncodeHparamsEvents(
      1.7e9, {{"lr", 0.01}, {"variant", std::string("b0")}, {"ft", true}}, {"test/accuracy"}, true);
  ASSERT_EQ(events.size(), 3u);
  std::vector<std::string> tags;
  for (const auto& e : events) {
    auto ev = DecodeEvent(e);
    ASSERT_TRUE(ev.ok()) << ev.status().ToString();
    ASSERT_EQ(ev->plugin_values.size(), 1u);
    EXPECT_EQ(ev->plugin_values[0].plugin_name, "hparams");
    tags.push_back(ev->plugin_values[0].tag);
    // HParamsPluginData starts with version = 0 (field 1, varint).
    EXPECT_EQ(ev->plugin_values[0].content.substr(0, 2), std::string("\x08\x00", 2));
  }
  EXPECT_EQ(tags, (std::vector<std::string>{"_hparams_/experiment", "_hparams_/session_start_info",
                                            "_hparams_/session_end_info"}));
}

TEST(EpochRecords, PerRankThroughputAndBestEpoch) {
  TempDir tmp;
  Spit(tmp / "metrics.jsonl",
       "{\"kind\":\"step\",\"step\":3}\n"
       "{\"kind\":\"epoch\",\"epoch\":0,\"step\":4,\"stage\":0,\"image_size\":32,"
       "\"train_loss\":2,\"val_accuracy\":0.3,\"img_per_s_global\":100,"
       "\"rank_img_per_s\":[50,50],\"is_best\":true,\"best_epoch\":0}\n"
       "{\"kind\":\"epoch\",\"epoch\":1,\"step\":8,\"stage\":1,\"image_size\":48,"
       "\"train_loss\":1,\"val_accuracy\":0.6,\"img_per_s_global\":80,"
       "\"rank_img_per_s\":[60,20],\"best_epoch\":1}\n");
  auto r = ReadEpochRecords(tmp / "metrics.jsonl");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[1].rank_img_per_s, (std::vector<double>{60, 20}));
  EXPECT_EQ((*r)[1].step, 8);
  EXPECT_TRUE((*r)[0].is_best);
  auto curves = LearningCurvesSvg(*r, "t");
  ASSERT_TRUE(curves.ok());
  EXPECT_EQ(testing::XmlProblem(*curves), "");
  EXPECT_EQ(CountOf(*curves, ">best</text>"), 2);  // both panels
  EXPECT_EQ(CountOf(*curves, ">48 px</text>"), 2);
  auto tp = ThroughputSvg(*r, "t");
  ASSERT_TRUE(tp.ok());
  EXPECT_EQ(testing::XmlProblem(*tp), "");
  EXPECT_EQ(CountOf(*tp, ">rank 1</text>"), 1);

  Spit(tmp / "bad.jsonl", "{\"kind\":\"epoch\",\"epoch\":0,\"rank_img_per_s\":\"fast\"}\n");
  auto bad = ReadEpochRecords(tmp / "bad.jsonl");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("bad.jsonl:1"), std::string::npos);
  EXPECT_NE(bad.status().message().find("rank_img_per_s"), std::string::npos);
}

// A run folder as the trainer leaves it, with hostile class names.
void WriteRun(const TempDir& tmp, const std::string& name, double accuracy) {
  RunSummary s;
  s.model = "EfficientNetV2-B0";
  s.variant = "b0";
  s.batch_size = 16;
  s.fit_time_s = 12.5;
  s.test_accuracy = accuracy;
  s.world_size = 2;
  s.device = "cpu";
  s.test_count = 16;
  s.best_epoch = 1;
  s.stop_reason = "last epoch";
  Spit(tmp / (name + "/summary.json"), RunSummaryToJson(s));
  ASSERT_TRUE(WriteConfusionMatrixCsv(Tricky(), tmp / (name + "/confusion_matrix.csv")).ok());
  Spit(tmp / (name + "/metrics.jsonl"),
       "{\"kind\":\"epoch\",\"epoch\":0,\"image_size\":32,\"train_loss\":2,\"val_loss\":2.1,"
       "\"train_accuracy\":0.2,\"val_accuracy\":0.3,\"img_per_s_global\":100,"
       "\"rank_img_per_s\":[50,50],\"best_epoch\":0,\"epoch_time_s\":3}\n"
       "{\"kind\":\"epoch\",\"epoch\":1,\"image_size\":48,\"train_loss\":1,\"val_loss\":1.2,"
       "\"train_accuracy\":0.5,\"val_accuracy\":0.6,\"img_per_s_global\":80,"
       "\"rank_img_per_s\":[60,20],\"rank_wait_s\":[2.5,0.1],\"best_epoch\":1,"
       "\"epoch_time_s\":4}\n");
  Spit(tmp / (name + "/config.yaml"), "model:\n  variant: b0  # <not a tag>\n");
}

TEST(ReportHtml, AllSectionsEscapedAndSelfContained) {
  TempDir tmp;
  WriteRun(tmp, "run", 11.0 / 16);
  auto html = RunsReportHtml({tmp / "run"}, false);
  ASSERT_TRUE(html.ok()) << html.status().ToString();
  for (const char* id : {"results", "accuracy", "per-class", "confusion", "curves", "throughput",
                         "config", "explain"}) {
    EXPECT_EQ(CountOf(*html, std::string("<section id=\"") + id + "\""), 1) << id;
  }
  EXPECT_EQ(html->find("<b>bold"), std::string::npos);  // class names escaped everywhere
  EXPECT_NE(html->find("&lt;b&gt;bold&lt;/b&gt; &amp; co"), std::string::npos);
  EXPECT_NE(html->find("# &lt;not a tag&gt;"), std::string::npos);
  EXPECT_EQ(html->find("<script"), std::string::npos);
  EXPECT_EQ(html->find("http://"), html->find("http://www.w3.org/2000/svg"));  // SVG namespace only
  EXPECT_EQ(html->find("<?xml"), std::string::npos);
  // 11 of 16 correct: 68.75 % with Wilson [44.4 %, 85.8 %].
  EXPECT_NE(html->find("68.75 %"), std::string::npos);
  EXPECT_NE(html->find("44.4 % – 85.8 %"), std::string::npos) << *html;
  // Rank 1 at 20 of 60 img/s in epoch 2 (record 1) is a straggler; epochs are shown from 1.
  EXPECT_EQ(CountOf(*html, "class=\"num slow\">20.0 (0.1 s)</td>"), 1);
  EXPECT_EQ(CountOf(*html, "<tr><td class=\"num\">1</td><td class=\"num\">32</td>"), 1);
  EXPECT_EQ(CountOf(*html, "<tr><td class=\"num\">2</td><td class=\"num\">48</td>"), 1);
  EXPECT_NE(html->find("Epochs count from 1."), std::string::npos);
  EXPECT_NE(html->find("Slowest rank: 1"), std::string::npos);
  EXPECT_NE(html->find("No explanations"), std::string::npos);

  auto missing = RunsReportHtml({tmp / "nothing"}, false);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("summary.json"), std::string::npos);
}

TEST(ReportHtml, ExplainGalleryEmbeddedAndPathsConfined) {
  TempDir tmp;
  WriteRun(tmp, "run", 0.5);
  auto png = ConfusionMatrixPng(Tricky());
  ASSERT_TRUE(png.ok());
  Spit(tmp / "run/explain/images/a_gradcam.png", png->bytes);
  Spit(tmp / "run/explain/class_mean_gradcam/A.png", png->bytes);
  Spit(tmp / "run/explain/summary.json",
       R"({"images": 2, "split": "test", "layer": "head", "accuracy": 0.5,
           "files": {"gallery": "gallery.csv",
                     "class_mean_gradcam": {"A": {"png": "class_mean_gradcam/A.png"}}}})");
  Spit(tmp / "run/explain/gallery.csv",
       "kind,rank,file,true,predicted,probability,gradcam_png,occlusion_png\n"
       "right,1,x.jpg,A,A,0.9,images/a_gradcam.png,\n");
  auto html = RunsReportHtml({tmp / "run"}, false);
  ASSERT_TRUE(html.ok()) << html.status().ToString();
  EXPECT_EQ(CountOf(*html, "<img src=\"data:image/png;base64,iVBORw0KGgo"), 2);

  // A long gallery is cut at 16 pictures, and the page says so.
  std::string rows = "kind,rank,file,true,predicted,probability,gradcam_png,occlusion_png\n";
  for (int i = 0; i < 20; ++i) rows += "right,1,x.jpg,A,A,0.9,images/a_gradcam.png,\n";
  Spit(tmp / "run/explain/gallery.csv", rows);
  auto cut = RunsReportHtml({tmp / "run"}, false);
  ASSERT_TRUE(cut.ok()) << cut.status().ToString();
  EXPECT_EQ(CountOf(*cut, "<img src="), 1 + 16);
  EXPECT_NE(cut->find("4 more pictures are in explain/"), std::string::npos);

  Spit(tmp / "run/explain/gallery.csv",
       "kind,rank,file,true,predicted,probability,gradcam_png,occlusion_png\n"
       "right,1,x.jpg,A,A,0.9,../../secret.png,\n");
  auto escape = RunsReportHtml({tmp / "run"}, false);
  ASSERT_FALSE(escape.ok());
  EXPECT_NE(escape.status().message().find("outside"), std::string::npos);
}

int RunResults(const TempDir& tmp, const std::string& args) {
  const char* bin = std::getenv("EFFNET_BIN_DIR");
  const std::string dir =
      bin ? std::string(bin)
          : (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "../bin").string();
  const std::string cmd =
      "'" + dir + "/effnet-results' " + args + " > '" + (tmp / "log.txt") + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

TEST(EffnetResults, HtmlComparesRunsSideBySide) {
  TempDir tmp;
  WriteRun(tmp, "b0", 0.6875);
  WriteRun(tmp, "b2", 0.5);
  ASSERT_EQ(RunResults(tmp, "'" + (tmp / "b0") + "' '" + (tmp / "b2") + "' --out '" +
                                (tmp / "r.md") + "' --html '" + (tmp / "r.html") + "'"),
            0)
      << Slurp(tmp / "log.txt");
  const std::string html = Slurp(tmp / "r.html");
  EXPECT_NE(html.find("Comparison of 2 runs"), std::string::npos);
  EXPECT_EQ(CountOf(html, "<h3>b0</h3>"), 6);  // one card per run in six sections
  EXPECT_EQ(CountOf(html, "<h3>b2</h3>"), 6);
}

}  // namespace
}  // namespace effnet::report
