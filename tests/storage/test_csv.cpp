#include <gtest/gtest.h>

#include <fstream>

#include "common/utf8.h"
#include "storage/csv.h"
#include "tests/storage/temp_dir.h"

namespace effnet::storage {
namespace {

TEST(Csv, QuotedFieldsHoldCommasQuotesAndNewlines) {
  const std::string text =
      "id,name,desc\r\n"
      "1,\"a, b\",\"say \"\"hi\"\"\"\r\n"
      "2,plain,\"line one\nline two\"\n"
      "3,,\"\"\n";
  auto t = ParseCsv(text, "t.csv");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_EQ(t->header, (std::vector<std::string>{"id", "name", "desc"}));
  ASSERT_EQ(t->rows.size(), 3u);
  EXPECT_EQ(t->rows[0][1], "a, b");
  EXPECT_EQ(t->rows[0][2], "say \"hi\"");
  EXPECT_EQ(t->rows[1][2], "line one\nline two");
  EXPECT_EQ(t->rows[2][1], "");
  EXPECT_EQ(t->rows[2][2], "");
  // Rows start on lines 2, 3 and 5 (row 2 spans lines 3-4).
  EXPECT_EQ(t->row_lines, (std::vector<int64_t>{2, 3, 5}));
}

TEST(Csv, BomAndMissingFinalNewline) {
  auto t = ParseCsv(
      "\xEF\xBB\xBF"
      "a,b\n1,2",
      "t.csv");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->header[0], "a");
  ASSERT_EQ(t->rows.size(), 1u);
  EXPECT_EQ(t->rows[0][1], "2");
}

TEST(Csv, UnterminatedQuoteNamesItsLine) {
  auto t = ParseCsv("a,b\n1,2\n3,\"never closed\n4,5\n", "bad.csv");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("bad.csv:3:"), std::string::npos) << t.status().message();
  EXPECT_NE(t.status().message().find("unterminated"), std::string::npos);
}

TEST(Csv, WrongFieldCountNamesItsLine) {
  auto t = ParseCsv("a,b,c\n1,2,3\n\"x\ny\",2\n", "bad.csv");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("bad.csv:3:"), std::string::npos) << t.status().message();
  EXPECT_NE(t.status().message().find("2 fields"), std::string::npos);
}

TEST(Csv, GarbageAfterClosingQuoteIsAnError) {
  auto t = ParseCsv("a,b\n\"x\"y,2\n", "bad.csv");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("bad.csv:2:"), std::string::npos);
}

TEST(Csv, MissingColumnIsNamed) {
  auto t = ParseCsv("a,b\n1,2\n", "t.csv");
  ASSERT_TRUE(t.ok());
  auto c = t->Column("image");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kNotFound);
  EXPECT_NE(c.status().message().find("'image'"), std::string::npos);
  EXPECT_EQ(t->Column("b").value(), 1u);
}

TEST(Csv, RecordRoundTrip) {
  const std::vector<std::string> fields = {"plain", "a,b", "q\"uote", "multi\nline", ""};
  auto t = ParseCsv(CsvRecord({"1", "2", "3", "4", "5"}) + CsvRecord(fields), "rt");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->rows[0], fields);
}

TEST(Csv, FirstCategory) {
  EXPECT_EQ(FirstCategory("[\"Home Furnishing >> Bed Linen >> Blankets\"]"), "Home Furnishing");
  EXPECT_EQ(FirstCategory("[\"Watches\"]"), "Watches");
  EXPECT_EQ(FirstCategory("Baby Care >> Toys"), "Baby Care");
  EXPECT_EQ(FirstCategory("  Computers "), "Computers");
  EXPECT_EQ(FirstCategory("[\"\"]"), "");
  EXPECT_EQ(FirstCategory(""), "");
}

TEST(Csv, Latin1FileIsTranscodedToUtf8) {
  testing::TempDir dir;
  const std::string path = dir / "l1.csv";
  std::ofstream(path, std::ios::binary) << "name,image\nplain,a.jpg\nCaf\xe9,\xe9t\xe9.jpg\n";
  auto t = ReadCsvFile(path);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->latin1_from_line, 3);
  EXPECT_EQ(t->rows[1], (std::vector<std::string>{"Caf\xc3\xa9", "\xc3\xa9t\xc3\xa9.jpg"}));
  std::string back;
  ASSERT_TRUE(Utf8ToLatin1(t->rows[1][1], &back));
  EXPECT_EQ(back, "\xe9t\xe9.jpg");

  const std::string utf8 = dir / "u.csv";
  std::ofstream(utf8, std::ios::binary) << "name\nCaf\xc3\xa9\n";
  auto u = ReadCsvFile(utf8);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->latin1_from_line, 0);
  EXPECT_EQ(u->rows[0][0], "Caf\xc3\xa9");
}

TEST(Utf8, Validation) {
  EXPECT_TRUE(IsValidUtf8("plain \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xe9"));              // Latin-1
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xe2\x82"));          // cut short
  EXPECT_EQ(FirstInvalidUtf8("ab\xffc"), 2u);
  EXPECT_EQ(ToUtf8("\xff"), "\xc3\xbf");
  std::string out;
  EXPECT_FALSE(Utf8ToLatin1("\xe2\x82\xac", &out));  // the euro sign is not Latin-1
  // Cut at a character boundary, never inside the euro sign's three bytes.
  const std::string euros = "a\xe2\x82\xac\xe2\x82\xac";
  EXPECT_EQ(TruncateUtf8(euros, 7), euros);
  EXPECT_EQ(TruncateUtf8(euros, 6), "a\xe2\x82\xac");
  EXPECT_EQ(TruncateUtf8(euros, 4), "a\xe2\x82\xac");
  EXPECT_EQ(TruncateUtf8(euros, 3), "a");
  EXPECT_EQ(TruncateUtf8(euros, 0), "");
}

}  // namespace
}  // namespace effnet::storage
