// effnet-prepare's <out>.duplicates.csv: capped at duplicates_report_limit groups and pairs, with
// a row counting what was left out (Note [capped report] in storage/prepare.cpp).
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>

#include "common/hash.h"
#include "storage/csv.h"
#include "storage/prepare.h"
#include "tests/storage/temp_dir.h"

namespace effnet::storage {
namespace {
namespace fs = std::filesystem;
using effnet::testing::TempDir;

// 16 near-identical gradients (one pixel differs: same dHash, distinct content) and 3 pairs of
// identical noise images, all in one class; half go to test, so many near pairs cross splits.
void MakeFolder(const std::string& root) {
  fs::create_directories(root + "/a");
  for (int k = 0; k < 16; ++k) {
    cv::Mat m(32, 32, CV_8UC3);
    for (int y = 0; y < 32; ++y) {
      for (int x = 0; x < 32; ++x) m.at<cv::Vec3b>(y, x) = cv::Vec3b(x * 8, y * 8, 100);
    }
    m.at<cv::Vec3b>(k, 31 - k) = cv::Vec3b(255, 0, static_cast<uint8_t>(k));
    ASSERT_TRUE(cv::imwrite(root + "/a/near" + std::to_string(100 + k) + ".png", m));
  }
  for (int g = 0; g < 3; ++g) {
    cv::Mat noise(32, 32, CV_8UC3);
    cv::theRNG().state = static_cast<uint64_t>(g + 1);
    cv::randu(noise, 0, 255);
    for (int copy = 0; copy < 2; ++copy) {
      ASSERT_TRUE(cv::imwrite(
          root + "/a/exact" + std::to_string(g) + "_" + std::to_string(copy) + ".png", noise));
    }
  }
}

std::map<std::string, std::vector<std::vector<std::string>>> RowsByKind(const std::string& path) {
  auto t = ReadCsvFile(path);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  std::map<std::string, std::vector<std::vector<std::string>>> out;
  if (t.ok()) {
    for (const auto& row : t->rows) out[row[0]].push_back(row);
  }
  return out;
}

TEST(DuplicatesReport, CappedWithACountOfWhatWasLeftOut) {
  TempDir dir;
  MakeFolder(dir / "f");
  PrepareConfig c;
  c.folders_dir = dir / "f";
  c.image_size = 32;
  c.progress_tty = 0;
  c.split.test_fraction = 0.5;
  c.split.val_fraction = 0;
  c.out_path = dir / "full.h5";
  auto full = RunPrepare(c);
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  EXPECT_EQ(full->exact_duplicate_groups, 3);
  ASSERT_GT(full->near_duplicate_pairs, 10);
  auto rows = RowsByKind(full->duplicates_csv);
  EXPECT_EQ(rows["exact"].size(), 6u);
  EXPECT_EQ(rows["near"].size(), 2 * static_cast<size_t>(full->near_duplicate_pairs));
  EXPECT_EQ(rows.count("near-omitted"), 0u);
  EXPECT_EQ(rows.count("exact-omitted"), 0u);

  c.out_path = dir / "capped.h5";
  c.duplicates_report_limit = 2;
  auto capped = RunPrepare(c);
  ASSERT_TRUE(capped.ok()) << capped.status().ToString();
  EXPECT_EQ(capped->near_duplicate_pairs, full->near_duplicate_pairs);  // the count is complete
  rows = RowsByKind(capped->duplicates_csv);
  EXPECT_EQ(rows["exact"].size(), 4u);  // 2 groups of 2
  EXPECT_EQ(rows["near"].size(), 4u);   // 2 pairs
  ASSERT_EQ(rows["exact-omitted"].size(), 1u);
  EXPECT_EQ(rows["exact-omitted"][0][1], "1");
  ASSERT_EQ(rows["near-omitted"].size(), 1u);
  EXPECT_EQ(rows["near-omitted"][0][1], std::to_string(full->near_duplicate_pairs - 2));
  // Closest pairs first.
  EXPECT_LE(std::stoi(rows["near"][0][6]), std::stoi(rows["near"][3][6]));
}

}  // namespace
}  // namespace effnet::storage
