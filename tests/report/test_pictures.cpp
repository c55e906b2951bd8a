// Confusion matrix (accuracy, CSV, SVG) and learning curves (SVG).
#include <gtest/gtest.h>

#include <string>

#include "tests/report/test_util.h"
#include "worker/report/report.h"

namespace effnet::report {
namespace {

using testing::CountOf;
using testing::Slurp;
using testing::Spit;
using testing::TempDir;
using testing::XmlProblem;

ConfusionMatrix ThreeClasses() {
  ConfusionMatrix m;
  m.class_names = {"Baby Care", "Home Decor & Festive Needs", "Watches, \"smart\""};
  m.counts = {{8, 1, 1}, {2, 5, 3}, {0, 0, 10}};
  return m;
}

TEST(XmlCheck, CatchesBrokenDocuments) {
  EXPECT_EQ(XmlProblem("<?xml version=\"1.0\"?>\n<svg a=\"1\"><g><t>x &amp; y</t></g></svg>"), "");
  EXPECT_NE(XmlProblem("<svg><g></svg>"), "");
  EXPECT_NE(XmlProblem("<svg>a & b</svg>"), "");
  EXPECT_NE(XmlProblem("<svg a=\"<\"/>"), "");
  EXPECT_NE(XmlProblem("<svg/><svg/>"), "");
  EXPECT_NE(XmlProblem("<svg>"), "");
}

TEST(ConfusionMatrix, Accuracy) {
  EXPECT_DOUBLE_EQ(ThreeClasses().Accuracy(), 23.0 / 30.0);
  EXPECT_DOUBLE_EQ(ConfusionMatrix{}.Accuracy(), 0.0);
  ConfusionMatrix perfect{{"a", "b"}, {{3, 0}, {0, 4}}};
  EXPECT_DOUBLE_EQ(perfect.Accuracy(), 1.0);
  ConfusionMatrix none{{"a", "b"}, {{0, 3}, {4, 0}}};
  EXPECT_DOUBLE_EQ(none.Accuracy(), 0.0);
}

TEST(ConfusionMatrix, Csv) {
  TempDir tmp;
  ASSERT_TRUE(WriteConfusionMatrixCsv(ThreeClasses(), tmp / "cm.csv").ok());
  EXPECT_EQ(Slurp(tmp / "cm.csv"),
            "true\\predicted,Baby Care,Home Decor & Festive Needs,\"Watches, \"\"smart\"\"\"\n"
            "Baby Care,8,1,1\n"
            "Home Decor & Festive Needs,2,5,3\n"
            "\"Watches, \"\"smart\"\"\",0,0,10\n");
}

TEST(ConfusionMatrix, ShapeErrorsNameTheProblem) {
  TempDir tmp;
  ConfusionMatrix ragged = ThreeClasses();
  ragged.counts[1].pop_back();
  Status s = WriteConfusionMatrixCsv(ragged, tmp / "cm.csv");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("row 1 ('Home Decor & Festive Needs') has 2 columns, expected 3"),
            std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("cm.csv"), std::string::npos);
  ConfusionMatrix negative = ThreeClasses();
  negative.counts[2][0] = -1;
  EXPECT_FALSE(WriteConfusionMatrixSvg(negative, tmp / "cm.svg", "t").ok());
  ConfusionMatrix rows{{"a"}, {{1}, {2}}};
  EXPECT_FALSE(WriteConfusionMatrixCsv(rows, tmp / "cm.csv").ok());
  EXPECT_FALSE(WriteConfusionMatrixSvg(ConfusionMatrix{}, tmp / "cm.svg", "t").ok());
  EXPECT_FALSE(std::filesystem::exists(tmp / "cm.csv"));
  EXPECT_FALSE(std::filesystem::exists(tmp / "cm.svg"));
}

TEST(ConfusionMatrix, SvgHasGridNamesAndCounts) {
  TempDir tmp;
  ASSERT_TRUE(WriteConfusionMatrixSvg(ThreeClasses(), tmp / "cm.svg", "B0 <test> & val").ok());
  const std::string svg = Slurp(tmp / "cm.svg");
  EXPECT_EQ(XmlProblem(svg), "");
  EXPECT_NE(svg.find("B0 &lt;test&gt; &amp; val"), std::string::npos);
  EXPECT_NE(svg.find("accuracy 0.7667 (n = 30)"), std::string::npos);
  // Each class name twice (row and column label), escaped.
  EXPECT_EQ(CountOf(svg, ">Home Decor &amp; Festive Needs</text>"), 2);
  EXPECT_EQ(CountOf(svg, ">Watches, &quot;smart&quot;</text>"), 2);
  EXPECT_EQ(CountOf(svg, "<rect"), 1 + 9 + 1);  // background, cells, frame
  for (const char* count : {">8</text>", ">5</text>", ">10</text>", ">3</text>"}) {
    EXPECT_NE(svg.find(count), std::string::npos) << count;
  }
  EXPECT_NE(svg.find(">Predicted class</text>"), std::string::npos);
  EXPECT_NE(svg.find(">True class</text>"), std::string::npos);
  // Row shares: 8 of 10 -> 80%, 10 of 10 -> 100%.
  EXPECT_NE(svg.find(">80%</text>"), std::string::npos);
  EXPECT_NE(svg.find(">100%</text>"), std::string::npos);
}

constexpr const char* kMetrics =
    R"({"kind":"run_start","world_size":2}
{"kind":"epoch","epoch":0,"train_loss":1.9,"train_accuracy":0.31,"val_loss":1.7,"val_accuracy":0.40,"lr":0.01,"image_size":128}
{"kind":"step","step":10,"loss":1.5}
{"kind":"epoch","epoch":1,"train_loss":1.2,"train_accuracy":0.55,"val_loss":1.3,"val_accuracy":0.52,"lr":0.01,"image_size":128}
{"kind":"epoch","epoch":2,"train_loss":0.9,"train_accuracy":0.68,"val_loss":null,"lr":0.01,"image_size":192}

{"kind":"epoch","epoch":2,"train_loss":0.8,"train_accuracy":0.70,"val_loss":1.0,"val_accuracy":0.66,"lr":0.01,"image_size":192}
{"kind":"epoch","epoch":3,"train_loss":0.6,"train_accuracy":0.79,"val_loss":0.9,"val_accuracy":0.71,"lr":0.005,"image_size":256}
)";

TEST(LearningCurves, TwoPanelsWithCurvesTicksAndLegend) {
  TempDir tmp;
  Spit(tmp / "metrics.jsonl", kMetrics);
  Status s = WriteLearningCurvesSvg(tmp / "metrics.jsonl", tmp / "curves.svg", "B0 on Flipkart");
  ASSERT_TRUE(s.ok()) << s.ToString();
  const std::string svg = Slurp(tmp / "curves.svg");
  EXPECT_EQ(XmlProblem(svg), "");
  EXPECT_NE(svg.find(">B0 on Flipkart</text>"), std::string::npos);
  EXPECT_NE(svg.find(">Loss</text>"), std::string::npos);
  EXPECT_NE(svg.find(">Accuracy</text>"), std::string::npos);
  EXPECT_EQ(CountOf(svg, ">epoch</text>"), 2);
  EXPECT_EQ(CountOf(svg, ">train</text>"), 2);  // a legend per panel
  EXPECT_EQ(CountOf(svg, ">val</text>"), 2);
  EXPECT_EQ(CountOf(svg, "<polyline"), 4);  // train and val, two panels
  // Epoch 3 (record 2) appears once (the later record wins): 4 points per curve, 16 markers.
  EXPECT_EQ(CountOf(svg, "<circle"), 16);
  // Image size changes at epochs 3 and 4 are marked in both panels.
  EXPECT_EQ(CountOf(svg, ">128 px</text>"), 2);  // the first stage, named at its start
  EXPECT_EQ(CountOf(svg, ">192 px</text>"), 2);
  EXPECT_EQ(CountOf(svg, ">256 px</text>"), 2);
  // Integer epoch ticks 1..4: the records' epochs 0..3 counted from 1 (Note [epoch numbering]).
  for (const char* tick : {">1</text>", ">2</text>", ">3</text>", ">4</text>"}) {
    EXPECT_GE(CountOf(svg, tick), 2) << tick;
  }
}

TEST(LearningCurves, ErrorsNameFileLineAndField) {
  TempDir tmp;
  Spit(tmp / "m1.jsonl", "{\"kind\":\"epoch\",\"epoch\":1,\"train_loss\":1}\n{not json\n");
  Status s = WriteLearningCurvesSvg(tmp / "m1.jsonl", tmp / "c.svg", "t");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("m1.jsonl:2: not valid JSON"), std::string::npos) << s.message();

  Spit(tmp / "m2.jsonl", "{\"kind\":\"epoch\",\"epoch\":1,\"val_accuracy\":\"high\"}\n");
  s = WriteLearningCurvesSvg(tmp / "m2.jsonl", tmp / "c.svg", "t");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("m2.jsonl:1: field \"val_accuracy\": expected a number, found string"),
            std::string::npos)
      << s.message();

  Spit(tmp / "m3.jsonl", "{\"kind\":\"epoch\",\"train_loss\":1}\n");
  s = WriteLearningCurvesSvg(tmp / "m3.jsonl", tmp / "c.svg", "t");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("m3.jsonl:1: epoch record without field \"epoch\""),
            std::string::npos);

  Spit(tmp / "m4.jsonl", "{\"kind\":\"step\",\"step\":1}\n");
  s = WriteLearningCurvesSvg(tmp / "m4.jsonl", tmp / "c.svg", "t");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);

  s = WriteLearningCurvesSvg(tmp / "absent.jsonl", tmp / "c.svg", "t");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find("absent.jsonl"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(tmp / "c.svg"));
}

TEST(LearningCurves, SingleEpochAndMissingValidationStillDraw) {
  TempDir tmp;
  Spit(tmp / "m.jsonl",
       "{\"kind\":\"epoch\",\"epoch\":0,\"train_loss\":2.0,\"train_accuracy\":0.2}\n");
  ASSERT_TRUE(WriteLearningCurvesSvg(tmp / "m.jsonl", tmp / "c.svg", "one").ok());
  const std::string svg = Slurp(tmp / "c.svg");
  EXPECT_EQ(XmlProblem(svg), "");
  EXPECT_EQ(CountOf(svg, "<polyline"), 2);               // train only
  EXPECT_EQ(svg.find(" px</text>"), std::string::npos);  // no image size, no stage marks
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);
}

}  // namespace
}  // namespace effnet::report
