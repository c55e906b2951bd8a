// results.md (WriteResultsMarkdown), summary.json parsing and the effnet-results tool.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "tests/report/test_util.h"
#include "worker/report/report.h"
#include "worker/report/run_summary.h"

namespace effnet::report {
namespace {

using testing::CountOf;
using testing::Slurp;
using testing::Spit;
using testing::TempDir;

std::string Summary(const std::string& variant, double acc, const std::string& extra = "") {
  return R"({"model": "EfficientNetV2", "variant": ")" + variant +
         R"(", "batch_size": 32, "fit_time_s": 1234.5, "test_accuracy": )" + std::to_string(acc) +
         R"(, "world_size": 2, "device": "cpu")" + extra + "}";
}

TEST(ResultsMarkdown, TableWithoutStudyRows) {
  std::vector<ResultRow> rows = {
      {"EfficientNetV2-B0 (effnet-dist, 2 ranks cpu)", 32, 612.34, 0.81234, ""},
      {"Custom | pipe", 0, std::numeric_limits<double>::quiet_NaN(), 0.5, ""}};
  const std::string md = ResultsMarkdown(rows, false);
  EXPECT_EQ(md.rfind("| Model | B | Fit Time (s) | Accuracy |\n|---|---:|---:|---:|\n", 0), 0u)
      << md;
  EXPECT_NE(md.find("| EfficientNetV2-B0 (effnet-dist, 2 ranks cpu) | 32 | 612 | 0.8123 |\n"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| Custom \\| pipe | - | - | 0.5000 |\n"), std::string::npos) << md;
  EXPECT_EQ(md.find("(study, Keras, PC)"),
            md.find("\"(study, Keras, PC)\"") + 1);  // only the legend
  EXPECT_EQ(md.find("Compared with the study"), std::string::npos);
}

TEST(ResultsMarkdown, StudyRowsAndComparison) {
  std::vector<ResultRow> rows = {
      {"EfficientNetV2-B2 (effnet-dist, 4 ranks cuda)", 64, 95.31, 0.85, "r1"},
      {"EfficientNetV2-B0 (effnet-dist, 1 rank cpu)", 16, 4000, 0.79, "r2"}};
  const std::string md = ResultsMarkdown(rows, true);
  EXPECT_NE(md.find("| Model | B | Fit Time (s) | Accuracy | Note |\n"), std::string::npos);
  EXPECT_NE(md.find("| EfficientNetV2-B2 (effnet-dist, 4 ranks cuda) | 64 | 95.3 | 0.8500 | r1 |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| EfficientNetV2-B0 (effnet-dist, 1 rank cpu) | 16 | 4,000 | 0.7900 | r2 |"),
            std::string::npos);
  EXPECT_NE(md.find("| Random Forest (study, Keras, PC) | - | - | 0.8286 |"), std::string::npos);
  EXPECT_NE(md.find("| Random Forest, photos + text (study, Keras, PC) | - | - | 0.8381 |"),
            std::string::npos);
  EXPECT_NE(md.find("| Keras EfficientNetV2-B0 (study, Keras, PC) | 16 | 4,589 | 0.7975 |"),
            std::string::npos);
  EXPECT_NE(md.find("| Keras EfficientNetV2-B1 (study, Keras, PC) | 16 | 3,418 | 0.7911 |"),
            std::string::npos);
  EXPECT_NE(md.find("| Keras EfficientNetV2-B2 (study, Keras, PC) | 16 | 4,598 | 0.6962 |"),
            std::string::npos);
  EXPECT_NE(md.find("| plain CNN (study, Keras, PC) | - | - | 0.7129 |"), std::string::npos);
  // Our rows come first, then the six reference rows.
  EXPECT_LT(md.find("effnet-dist, 1 rank cpu"), md.find("Random Forest (study"));
  EXPECT_EQ(CountOf(md, "(study, Keras, PC) |"), 6);
  EXPECT_NE(md.find("- EfficientNetV2-B2 (effnet-dist, 4 ranks cuda): 0.8500 vs Random Forest "
                    "0.8286 (+0.0214, beats it); vs Keras EfficientNetV2-B2 0.6962 (+0.1538)"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("- EfficientNetV2-B0 (effnet-dist, 1 rank cpu): 0.7900 vs Random Forest "
                    "0.8286 (-0.0386, does not beat it); vs Keras EfficientNetV2-B0 0.7975 "
                    "(-0.0075)"),
            std::string::npos)
      << md;
}

TEST(ResultsMarkdown, FileLinksPicturesPresentNextToIt) {
  TempDir tmp;
  Spit(tmp / "confusion_matrix.svg", "<svg/>");
  Spit(tmp / "learning_curves.svg", "<svg/>");
  ASSERT_TRUE(
      WriteResultsMarkdown({{"m", 8, 10, 0.5, ""}}, tmp / "results.md", false, "## Extra\n\ntext")
          .ok());
  const std::string md = Slurp(tmp / "results.md");
  EXPECT_EQ(md.rfind("# Results\n\n| Model |", 0), 0u);
  EXPECT_NE(md.find("![Confusion matrix](confusion_matrix.svg)"), std::string::npos);
  EXPECT_NE(md.find("![Learning curves](learning_curves.svg)"), std::string::npos);
  EXPECT_EQ(md.find("confusion_matrix.csv"), std::string::npos);  // absent, so not linked
  EXPECT_NE(md.find("## Extra\n\ntext\n"), std::string::npos);
  Status s = WriteResultsMarkdown({}, tmp / "missing_dir/results.md", true);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("missing_dir/results.md"), std::string::npos) << s.message();
}

TEST(RunSummary, ParsesAndNamesTheRow) {
  auto s = ParseRunSummary(Summary("b2", 0.8412), "x/summary.json");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->batch_size, 32);
  EXPECT_EQ(s->world_size, 2);
  EXPECT_DOUBLE_EQ(s->fit_time_s, 1234.5);
  ResultRow row = ToResultRow(*s);
  EXPECT_EQ(row.model, "EfficientNetV2-B2 (effnet-dist, 2 ranks cpu)");
  EXPECT_DOUBLE_EQ(row.accuracy, 0.8412);
  s->model = "tf_efficientnetv2_b2";
  s->world_size = 1;
  EXPECT_EQ(ToResultRow(*s).model, "tf_efficientnetv2_b2 (effnet-dist, 1 rank cpu)");
  // Where the weights started is part of every row (and round-trips through summary.json).
  s->start = StartLabel("");
  EXPECT_EQ(ToResultRow(*s).model, "tf_efficientnetv2_b2 (effnet-dist, 1 rank cpu, from scratch)");
  s->start = StartLabel("/w/keras/efficientnetv2-b2.weights.h5");
  auto back = ParseRunSummary(RunSummaryToJson(*s), "y/summary.json");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(ToResultRow(*back).model,
            "tf_efficientnetv2_b2 (effnet-dist, 1 rank cpu, from efficientnetv2-b2.weights.h5)");
}

// Note [elastic world size]: a run whose ranks changed says so in its row; one size does not.
TEST(RunSummary, AnElasticRunNamesItsWorldSizes) {
  auto s = ParseRunSummary(Summary("b0", 0.9), "x/summary.json");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_TRUE(s->epoch_world_sizes.empty());  // older files have none
  s->epoch_world_sizes = {2, 2, 2};
  EXPECT_EQ(ToResultRow(*s).model, "EfficientNetV2-B0 (effnet-dist, 2 ranks cpu)");
  s->epoch_world_sizes = {3, 3, 2, 2, 3};
  s->world_size = 3;
  auto back = ParseRunSummary(RunSummaryToJson(*s), "y/summary.json");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->epoch_world_sizes, s->epoch_world_sizes);
  EXPECT_EQ(WorldSizesLabel(*back), "3 -> 2 -> 3");
  EXPECT_EQ(ToResultRow(*back).model, "EfficientNetV2-B0 (effnet-dist, 3 -> 2 -> 3 ranks cpu)");
  const std::string text = R"({"model":"m","variant":"b0","batch_size":8,"fit_time_s":1,)"
                           R"("test_accuracy":0.8,"world_size":1,"device":"cpu",)"
                           R"("epoch_world_sizes":[1,0]})";
  auto refused = ParseRunSummary(text, "x/summary.json");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find(
                "field \"epoch_world_sizes\": expected world sizes >= 1, found 0"),
            std::string::npos)
      << refused.status().message();
}

TEST(RunSummary, ErrorsNameSourceAndField) {
  struct Case {
    std::string json, expect;
  } cases[] = {
      {"{", "x/summary.json: not valid JSON"},
      {"[1]", "x/summary.json: expected a JSON object"},
      {R"({"variant":"b0"})", "x/summary.json: field \"model\": missing"},
      {R"({"model":"m","variant":"b0","batch_size":"32"})",
       "x/summary.json: field \"batch_size\": expected an integer, found string"},
      {R"({"model":"m","variant":"b0","batch_size":3.5})",
       "field \"batch_size\": expected an integer, found a fractional number"},
      {R"({"model":"m","variant":"b0","batch_size":0})", "field \"batch_size\": out of range: 0"},
      {R"({"model":"m","variant":"","batch_size":1})", "field \"variant\": empty"},
      {R"({"model":"m","variant":"b0","batch_size":8,"fit_time_s":-1})",
       "field \"fit_time_s\": negative"},
      {R"({"model":"m","variant":"b0","batch_size":8,"fit_time_s":1,"test_accuracy":83.1})",
       "field \"test_accuracy\": outside [0, 1]"},
      {R"({"model":"m","variant":"b0","batch_size":8,"fit_time_s":1,"test_accuracy":0.8})",
       "field \"world_size\": missing"},
      {R"({"model":"m","variant":"b0","batch_size":8,"fit_time_s":1,"test_accuracy":0.8,"world_size":1,"device":3})",
       "field \"device\": expected a string, found number"},
  };
  for (const auto& c : cases) {
    auto s = ParseRunSummary(c.json, "x/summary.json");
    ASSERT_FALSE(s.ok()) << c.json;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find(c.expect), std::string::npos)
        << c.json << " -> " << s.status().message();
  }
}

// Runs effnet-results with `args`; returns the exit code, stderr in *err.
int RunTool(const TempDir& tmp, const std::string& args, std::string* err) {
  // ctest sets EFFNET_BIN_DIR; run by hand, the tool is in ../bin next to tests/.
  const char* bin = std::getenv("EFFNET_BIN_DIR");
  const std::string dir =
      bin ? std::string(bin)
          : (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "../bin").string();
  const std::string tool = dir + "/effnet-results";
  const std::string cmd =
      "'" + tool + "' " + args + " 2> '" + (tmp / "stderr.txt") + "' > /dev/null";
  const int rc = std::system(cmd.c_str());
  *err = Slurp(tmp / "stderr.txt");
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

TEST(EffnetResults, ComparesRunsWithTheStudy) {
  TempDir tmp;
  Spit(tmp / "runs/b0/summary.json", Summary("b0", 0.8012));
  Spit(tmp / "runs/b2/summary.json", Summary("B2", 0.8433));
  Spit(tmp / "runs/b2/learning_curves.svg", "<svg/>");
  std::string err;
  const std::string out = tmp / "out/results.md";
  std::filesystem::create_directories(tmp / "out");
  ASSERT_EQ(RunTool(tmp,
                    "'" + (tmp / "runs/b0") + "' '" + (tmp / "runs/b2/") + "' --out '" + out +
                        "' --with-study",
                    &err),
            0)
      << err;
  const std::string md = Slurp(out);
  EXPECT_NE(md.find("| EfficientNetV2-B0 (effnet-dist, 2 ranks cpu) | 32 | 1,235 | 0.8012 | b0 |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| EfficientNetV2-B2 (effnet-dist, 2 ranks cpu) | 32 | 1,235 | 0.8433 | b2 |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| Keras EfficientNetV2-B2 (study, Keras, PC) | 16 | 4,598 | 0.6962 |"),
            std::string::npos);
  EXPECT_NE(md.find("0.8433 vs Random Forest 0.8286 (+0.0147, beats it)"), std::string::npos);
  EXPECT_NE(md.find("[learning curves](../runs/b2/learning_curves.svg)"), std::string::npos) << md;

  // Without --with-study: no reference rows.
  ASSERT_EQ(RunTool(tmp, "'" + (tmp / "runs/b0") + "' -o '" + out + "'", &err), 0) << err;
  EXPECT_EQ(Slurp(out).find("Random Forest"), std::string::npos);
}

TEST(EffnetResults, BadRunDirectoriesAreNamed) {
  TempDir tmp;
  Spit(tmp / "good/summary.json", Summary("b0", 0.8));
  Spit(tmp / "badfield/summary.json",
       Summary("b0", 0.8).replace(Summary("b0", 0.8).find("\"world_size\": 2"),
                                  std::string("\"world_size\": 2").size(),
                                  "\"world_size\": \"two\""));
  Spit(tmp / "badjson/summary.json", "{\"model\": ");
  std::filesystem::create_directories(tmp / "empty");
  const std::string out = tmp / "results.md";
  std::string err;

  EXPECT_EQ(RunTool(tmp, "'" + (tmp / "empty") + "' --out '" + out + "'", &err), 1);
  EXPECT_NE(err.find((tmp / "empty") + "/summary.json"), std::string::npos) << err;
  EXPECT_NE(err.find("cannot open"), std::string::npos) << err;

  EXPECT_EQ(
      RunTool(tmp, "'" + (tmp / "good") + "' '" + (tmp / "badfield") + "' --out '" + out + "'",
              &err),
      1);
  EXPECT_NE(err.find((tmp / "badfield") +
                     "/summary.json: field \"world_size\": expected an integer, found string"),
            std::string::npos)
      << err;

  EXPECT_EQ(
      RunTool(tmp, "'" + (tmp / "badjson") + "' '" + (tmp / "empty") + "' --out '" + out + "'",
              &err),
      1);
  EXPECT_NE(err.find((tmp / "badjson") + "/summary.json: not valid JSON"), std::string::npos)
      << err;
  EXPECT_NE(err.find("2 of 2 run directories unusable"), std::string::npos) << err;

  EXPECT_FALSE(std::filesystem::exists(out));               // nothing written on error
  EXPECT_NE(RunTool(tmp, "--out '" + out + "'", &err), 0);  // no run directory
  EXPECT_NE(RunTool(tmp, "'" + (tmp / "good") + "' --bogus", &err), 0);
  EXPECT_FALSE(std::filesystem::exists(out));
}

}  // namespace
}  // namespace effnet::report

namespace effnet::report {
namespace {

TEST(ResultsMarkdown, StudyRowsOnlyForTheStudysClasses) {
  EXPECT_TRUE(
      IsStudyDataset({"Watches", "Computers", "Baby Care", "Home Furnishing", "Kitchen & Dining",
                      "Home Decor & Festive Needs", "Beauty and Personal Care"}));
  EXPECT_FALSE(IsStudyDataset({"Checkerboards", "Circles", "Crosses", "Horizontal Stripes",
                               "Squares", "Triangles", "Vertical Stripes"}));
  EXPECT_FALSE(IsStudyDataset({"Watches", "Computers"}));
}

}  // namespace
}  // namespace effnet::report
