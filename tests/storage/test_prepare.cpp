// effnet-prepare end to end on generated images (PNG/JPEG written here with OpenCV).
#include <gtest/gtest.h>
#include <hdf5.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>
#include <tuple>

#include "common/atomic_file.h"
#include "storage/csv.h"
#include "storage/dataset_reader.h"
#include "storage/inspect.h"
#include "storage/prepare.h"
#include "storage/splits.h"
#include "tests/storage/temp_dir.h"

namespace effnet::storage {
namespace {
namespace fs = std::filesystem;
using effnet::testing::TempDir;

// A distinct RGB image: blocks and gradients from a seed.
cv::Mat MakeRgb(uint64_t seed, int w, int h) {
  SplitMix64 g(seed);
  cv::Mat m(h, w, CV_8UC3);
  const int a = static_cast<int>(g.Below(256)), b = static_cast<int>(g.Below(7)) + 1;
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      m.at<cv::Vec3b>(y, x) =
          cv::Vec3b(static_cast<uint8_t>(a + x * b), static_cast<uint8_t>(y * 5 + a),
                    static_cast<uint8_t>(g.Below(256)));
    }
  }
  return m;
}

void WriteImage(const std::string& path, const cv::Mat& rgb) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  ASSERT_TRUE(cv::imwrite(path, bgr)) << path;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A study-format CSV with extra columns (commas, quotes, newlines in descriptions).
struct CsvSet {
  std::string csv, images;
  std::vector<std::string> files;  // per row
  std::vector<std::string> classes;
};

CsvSet MakeCsvSet(const TempDir& dir, int per_class, int size, int num_classes = 3) {
  CsvSet s;
  s.images = dir / "images";
  fs::create_directories(s.images);
  s.csv = dir / "table.csv";
  std::string text =
      CsvRecord({"uniq_id", "product_name", "product_category_tree", "image", "description"});
  for (int k = 0; k < per_class; ++k) {
    for (int c = 0; c < num_classes; ++c) {
      const std::string cls = "Class " + std::string(1, static_cast<char>('A' + c));
      const std::string file = "img_" + std::to_string(c) + "_" + std::to_string(k) + ".png";
      WriteImage(s.images + "/" + file, MakeRgb(static_cast<uint64_t>(c * 1000 + k), size, size));
      text += CsvRecord({std::to_string(c * 1000 + k), "Item, \"nice\"",
                         "[\"" + cls + " >> Sub >> Item " + std::to_string(k) + "\"]", file,
                         "line one\nline two, with comma"});
      s.files.push_back(file);
    }
  }
  for (int c = 0; c < num_classes; ++c) {
    s.classes.push_back("Class " + std::string(1, static_cast<char>('A' + c)));
  }
  std::ofstream(s.csv) << text;
  return s;
}

PrepareConfig CsvConfig(const CsvSet& s, const std::string& out, int size) {
  PrepareConfig c;
  c.csv_path = s.csv;
  c.images_dir = s.images;
  c.out_path = out;
  c.image_size = size;
  c.threads = 2;
  c.progress_tty = 0;
  return c;
}

std::vector<uint8_t> ReadOne(DatasetReader& r, int64_t i) {
  std::vector<uint8_t> buf(r.image_bytes());
  EXPECT_TRUE(r.ReadImages({i}, buf.data()).ok());
  return buf;
}

std::vector<uint8_t> Bytes(const cv::Mat& m) {
  cv::Mat c = m.isContinuous() ? m : m.clone();
  return std::vector<uint8_t>(c.datastart, c.dataend);
}

bool HasTempFiles(const std::string& dir) {
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().find(".tmp.") != std::string::npos) return true;
  }
  return false;
}

TEST(Prepare, CsvInputStoresTheDecodedPixels) {
  TempDir dir;
  CsvSet s = MakeCsvSet(dir, 8, 32);
  const std::string out = dir / "out.h5";
  auto sum = RunPrepare(CsvConfig(s, out, 32));
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(sum->candidates, 24);
  EXPECT_EQ(sum->stored_originals, 24);
  EXPECT_TRUE(sum->rejections.empty());
  EXPECT_EQ(sum->class_names, s.classes);

  auto r = DatasetReader::Open(out);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const DatasetInfo& info = (*r)->info();
  ASSERT_EQ(info.num_images, 24);
  EXPECT_EQ(info.class_names, s.classes);
  // Stored size = source size: the store holds exactly the decoded RGB pixels.
  std::vector<int64_t> all(24);
  for (int64_t i = 0; i < 24; ++i) all[i] = 23 - i;
  std::vector<uint8_t> batch(24 * (*r)->image_bytes());
  ASSERT_TRUE((*r)->ReadImages(all, batch.data()).ok());
  for (int64_t k = 0; k < 24; ++k) {
    const int64_t i = all[k];
    EXPECT_EQ(info.source_paths[i], (fs::path(s.images) / s.files[i]).string());
    cv::Mat bgr = cv::imread(info.source_paths[i], cv::IMREAD_COLOR), rgb;
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    const auto want = Bytes(rgb);
    ASSERT_TRUE(std::equal(want.begin(), want.end(), batch.begin() + k * want.size()))
        << "image " << i;
    EXPECT_EQ(info.labels[i], static_cast<int32_t>(i % 3));  // rows cycle through the classes
  }
}

TEST(Prepare, ResizeModesMatchResizeForStore) {
  TempDir dir;
  fs::create_directories(dir / "f/cat");
  WriteImage(dir / "f/cat/wide.png", MakeRgb(1, 48, 20));
  WriteImage(dir / "f/cat/tall.png", MakeRgb(2, 10, 40));
  for (ResizeMode mode : {ResizeMode::kSquash, ResizeMode::kCenterCrop, ResizeMode::kPad}) {
    PrepareConfig c;
    c.folders_dir = dir / "f";
    c.out_path = dir / (std::string(ResizeModeName(mode)) + ".h5");
    c.image_size = 16;
    c.resize = mode;
    c.pad_value = 7;
    c.progress_tty = 0;
    c.split.test_fraction = 0;
    c.split.val_fraction = 0;
    ASSERT_TRUE(RunPrepare(c).ok());
    auto r = DatasetReader::Open(c.out_path);
    ASSERT_TRUE(r.ok());
    for (int64_t i = 0; i < 2; ++i) {
      cv::Mat bgr = cv::imread((*r)->info().source_paths[i]), rgb;
      cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
      const auto want = Bytes(ResizeForStore(rgb, 16, mode, 7));
      EXPECT_EQ(ReadOne(**r, i), want) << ResizeModeName(mode) << " image " << i;
    }
  }
  // Pad keeps the border: the wide image's top row is pad_value.
  cv::Mat padded = ResizeForStore(MakeRgb(1, 48, 20), 16, ResizeMode::kPad, 7);
  EXPECT_EQ(padded.at<cv::Vec3b>(0, 8), cv::Vec3b(7, 7, 7));
}

TEST(Prepare, FolderInputWithANonImage) {
  TempDir dir;
  for (const char* cls : {"dogs", "cats"}) {
    fs::create_directories(dir / (std::string("f/") + cls));
    for (int k = 0; k < 5; ++k) {
      WriteImage(dir / ("f/" + std::string(cls) + "/" + std::to_string(k) + ".png"),
                 MakeRgb(static_cast<uint64_t>(k + (cls[0] == 'd' ? 100 : 0)), 24, 24));
    }
  }
  std::ofstream(dir / "f/cats/README.txt") << "not an image\n";
  fs::create_directories(dir / "f/.hidden");
  PrepareConfig c;
  c.folders_dir = dir / "f";
  c.out_path = dir / "f.h5";
  c.image_size = 24;
  c.progress_tty = 0;
  auto sum = RunPrepare(c);
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(sum->class_names, (std::vector<std::string>{"cats", "dogs"}));
  EXPECT_EQ(sum->stored_originals, 10);
  ASSERT_EQ(sum->rejections.size(), 1u);
  EXPECT_NE(sum->rejections[0].file.find("README.txt"), std::string::npos);
  EXPECT_NE(sum->rejections[0].reason.find("not a decodable image"), std::string::npos);
  auto r = DatasetReader::Open(c.out_path);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->info().labels[0], 0);  // cats first
  EXPECT_EQ((*r)->info().labels[9], 1);
}

// Note [short splits]: a class too small for the splits and an empty test split are said at
// prepare time, in the log, the summary and the store's settings, with the consequence.
TEST(Prepare, ShortSplitsAreReportedWithTheReason) {
  TempDir dir;
  // "many": 10 images (train 6, val 2, test 2); "few": 2 images (train 2, none in val or test).
  for (const auto& [cls, n] : {std::pair<std::string, int>{"many", 10}, {"few", 2}}) {
    fs::create_directories(dir / ("f/" + cls));
    for (int k = 0; k < n; ++k) {
      WriteImage(dir / ("f/" + cls + "/" + std::to_string(k) + ".png"),
                 MakeRgb(static_cast<uint64_t>(k + (cls == "few" ? 500 : 0)), 16, 16));
    }
  }
  PrepareConfig c;
  c.folders_dir = dir / "f";
  c.out_path = dir / "short.h5";
  c.image_size = 16;
  c.progress_tty = 0;
  auto sum = RunPrepare(c);
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  ASSERT_EQ(sum->warnings.size(), 1u) << ::testing::PrintToString(sum->warnings);
  EXPECT_NE(sum->warnings[0].find("class 'few' has 2 images, too few for the splits (train 2, val "
                                  "0, test 0): none in val and test"),
            std::string::npos)
      << sum->warnings[0];
  auto r = DatasetReader::Open(c.out_path);
  ASSERT_TRUE(r.ok());
  const auto settings = nlohmann::json::parse((*r)->info().source);
  EXPECT_EQ(settings.at("split_warnings").size(), 1u);

  // Two images per class: no test image at all.
  fs::remove_all(dir / "f/many");
  c.out_path = dir / "tiny.h5";
  sum = RunPrepare(c);
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  ASSERT_GE(sum->warnings.size(), 2u);
  EXPECT_NE(sum->warnings[0].find("the val split is empty (2 images, val_fraction 0.2): training "
                                  "refuses this store"),
            std::string::npos)
      << sum->warnings[0];
  EXPECT_NE(sum->warnings[1].find("the test split is empty (2 images, test_fraction 0.2): no test "
                                  "metrics will be computed"),
            std::string::npos)
      << sum->warnings[1];
  // Values with no meaning are refused naming the flag.
  for (auto [threads, distance, want] :
       {std::tuple{-1, 4, "--threads -1 is negative"}, {0, 65, "--near-dup-distance 65"}}) {
    PrepareConfig bad = c;
    bad.threads = threads;
    bad.near_duplicate_distance = distance;
    bad.out_path = dir / "bad.h5";
    auto r = RunPrepare(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find(want), std::string::npos) << r.status().message();
  }
  // A fraction of 0 is a choice, not a warning.
  c.split.test_fraction = 0;
  c.split.val_fraction = 0;
  c.out_path = dir / "chosen.h5";
  sum = RunPrepare(c);
  ASSERT_TRUE(sum.ok());
  EXPECT_TRUE(sum->warnings.empty()) << ::testing::PrintToString(sum->warnings);
}

TEST(Prepare, IdenticalImagesLandInOneSplit) {
  TempDir dir;
  CsvSet s = MakeCsvSet(dir, 10, 24);
  // Plant 4 byte copies of row 0's image and a BMP with the same pixels (different file bytes,
  // identical decoded content) into class A.
  std::string text = ReadAll(s.csv);
  for (int k = 0; k < 4; ++k) {
    const std::string copy = "copy" + std::to_string(k) + ".png";
    fs::copy_file(s.images + "/" + s.files[0], s.images + "/" + copy);
    text += CsvRecord({"c" + std::to_string(k), "copy", "[\"Class A >> x\"]", copy, ""});
  }
  cv::Mat same = cv::imread(s.images + "/" + s.files[0]);
  ASSERT_TRUE(cv::imwrite(s.images + "/same.bmp", same));
  text += CsvRecord({"b", "bmp", "[\"Class A >> x\"]", "same.bmp", ""});
  std::ofstream(s.csv) << text;

  for (uint64_t seed : {1, 2, 3, 4, 5, 6}) {
    PrepareConfig c = CsvConfig(s, dir / "dup.h5", 24);
    c.split.seed = seed;
    auto sum = RunPrepare(c);
    ASSERT_TRUE(sum.ok()) << sum.status().ToString();
    EXPECT_EQ(sum->exact_duplicate_groups, 1);
    EXPECT_EQ(sum->exact_duplicate_images, 6);
    auto r = DatasetReader::Open(c.out_path);
    ASSERT_TRUE(r.ok());
    const auto& info = (*r)->info();
    const uint64_t h = info.content_hash[0];
    int members = 0;
    for (int64_t i = 0; i < info.num_images; ++i) {
      if (info.content_hash[i] != h) continue;
      ++members;
      EXPECT_EQ(info.splits[i], info.splits[0]) << "seed " << seed << " image " << i;
    }
    EXPECT_EQ(members, 6);
    auto rep = Inspect(**r, 4);
    ASSERT_TRUE(rep.ok());
    EXPECT_EQ(rep->duplicate_groups, 1);
    EXPECT_EQ(rep->duplicate_groups_across_splits, 0);
    // The group is listed in the duplicates report.
    const std::string dups = ReadAll(sum->duplicates_csv);
    EXPECT_NE(dups.find("same.bmp"), std::string::npos) << dups;
  }
}

TEST(Prepare, StratifiedWithinOneOfTarget) {
  TempDir dir;
  CsvSet s = MakeCsvSet(dir, 23, 16, 4);
  auto sum = RunPrepare(CsvConfig(s, dir / "strat.h5", 16));
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  const SplitCounts t = SplitTargets(23, SplitConfig{});
  ASSERT_EQ(sum->counts.size(), 4u);
  for (const auto& k : sum->counts) {
    EXPECT_LE(std::abs(k[0] - t.train), 1);
    EXPECT_LE(std::abs(k[1] - t.val), 1);
    EXPECT_LE(std::abs(k[2] - t.test), 1);
  }
}

// Writes the bad inputs of the rejection tests; returns the number of bad rows.
int AddBadRows(const CsvSet& s, const TempDir& dir) {
  std::string text = ReadAll(s.csv);
  auto row = [&](const std::string& file) {
    text += CsvRecord({"bad", "bad", "[\"Class A >> x\"]", file, ""});
  };
  row("missing.png");
  // Truncated JPEG: a real one cut in half.
  {
    cv::Mat bgr = MakeRgb(77, 32, 32);
    std::vector<uint8_t> jpg;
    cv::imencode(".jpg", bgr, jpg);
    std::ofstream(s.images + "/truncated.jpg", std::ios::binary)
        .write(reinterpret_cast<const char*>(jpg.data()),
               static_cast<std::streamsize>(jpg.size() / 2));
  }
  row("truncated.jpg");
  std::ofstream(s.images + "/noise.jpg") << "GARBAGE\x01\x02 not a jpeg at all";
  row("noise.jpg");
  std::ofstream(s.images + "/empty.png");
  row("empty.png");
  WriteImage(s.images + "/huge.png", MakeRgb(5, 40, 40));  // over --max-pixels 1500 below
  row("huge.png");
  fs::create_directories(s.images + "/folder.png");
  row("folder.png");
  std::ofstream(s.csv) << text;
  (void)dir;
  return 6;
}

TEST(Prepare, BadFilesAreRejectedAndListed) {
  TempDir dir;
  CsvSet s = MakeCsvSet(dir, 4, 32);
  const int bad = AddBadRows(s, dir);
  PrepareConfig c = CsvConfig(s, dir / "r.h5", 32);
  c.max_pixels = 1500;  // 32 x 32 = 1024 passes, 40 x 40 = 1600 does not
  auto sum = RunPrepare(c);
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(sum->stored_originals, 12);
  ASSERT_EQ(static_cast<int>(sum->rejections.size()), bad);
  std::map<std::string, std::string> reason;
  for (const auto& r : sum->rejections) reason[fs::path(r.file).filename().string()] = r.reason;
  EXPECT_NE(reason["missing.png"].find("not found"), std::string::npos);
  EXPECT_NE(reason["truncated.jpg"].find("truncated"), std::string::npos)
      << reason["truncated.jpg"];
  EXPECT_NE(reason["noise.jpg"].find("not a decodable image"), std::string::npos);
  EXPECT_NE(reason["empty.png"].find("empty"), std::string::npos);
  EXPECT_NE(reason["huge.png"].find("1600 pixels exceeds --max-pixels 1500 (from the PNG header)"),
            std::string::npos)
      << reason["huge.png"];
  EXPECT_NE(reason["folder.png"].find("not a regular file"), std::string::npos);
  // Rows and lines are named: the CSV rows 13.. start after 12 good rows of 2 lines each.
  EXPECT_EQ(sum->rejections[0].row, 13);
  EXPECT_EQ(sum->rejections[0].line, 26);

  auto listed = ReadCsvFile(dir / "r.h5.rejected.csv");
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->header, (std::vector<std::string>{"row", "line", "file", "reason"}));
  ASSERT_EQ(static_cast<int>(listed->rows.size()), bad);
  EXPECT_NE(listed->rows[0][2].find("missing.png"), std::string::npos);
}

TEST(Prepare, StrictFailsAndKeepsTheOlderFile) {
  TempDir dir;
  CsvSet s = MakeCsvSet(dir, 3, 16);
  const std::string out = dir / "keep.h5";
  ASSERT_TRUE(RunPrepare(CsvConfig(s, out, 16)).ok());
  const std::string before = ReadAll(out);
  AddBadRows(s, dir);
  PrepareConfig c = CsvConfig(s, out, 16);
  c.strict = true;
  auto sum = RunPrepare(c);
  ASSERT_FALSE(sum.ok());
  EXPECT_NE(sum.status().message().find("--strict"), std::string::npos);
  EXPECT_EQ(ReadAll(out), before);  // the older store is intact
  EXPECT_TRUE(DatasetReader::Open(out).ok());
  EXPECT_FALSE(HasTempFiles(dir.path()));

  // No older file: a failed run leaves none.
  c.out_path = dir / "new.h5";
  ASSERT_FALSE(RunPrepare(c).ok());
  EXPECT_FALSE(fs::exists(c.out_path));
  EXPECT_FALSE(HasTempFiles(dir.path()));
}

TEST(Prepare, NeverWritesOverItsInputsOrForeignFiles) {
  TempDir dir;
  CsvSet s = MakeCsvSet(dir, 2, 16);
  const std::string csv_before = ReadAll(s.csv);
  // --out is the CSV itself, or one of the images.
  for (const std::string& out : {s.csv, s.images + "/" + s.files[1]}) {
    const std::string before = ReadAll(out);
    auto sum = RunPrepare(CsvConfig(s, out, 16));
    ASSERT_FALSE(sum.ok()) << out;
    EXPECT_EQ(sum.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(sum.status().message().find("refusing to write over an input"), std::string::npos)
        << sum.status().message();
    EXPECT_EQ(ReadAll(out), before);
  }
  // --out is the CSV's rejected-rows side file.
  PrepareConfig side = CsvConfig(s, dir / "t", 16);
  fs::copy_file(s.csv, dir / "t.rejected.csv");
  side.csv_path = dir / "t.rejected.csv";
  EXPECT_EQ(RunPrepare(side).status().code(), StatusCode::kInvalidArgument);

  // An existing file that is not an effnet store: text, a foreign HDF5 file, a folder.
  const std::string text = dir / "notes.h5";
  std::ofstream(text) << "my notes\n";
  const std::string foreign = dir / "foreign.h5";
  H5Fclose(H5Fcreate(foreign.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  const std::string folder = dir / "folder.h5";
  fs::create_directories(folder);
  for (const std::string& out : {text, foreign, folder}) {
    const std::string before = fs::is_directory(out) ? "" : ReadAll(out);
    auto sum = RunPrepare(CsvConfig(s, out, 16));
    ASSERT_FALSE(sum.ok()) << out;
    EXPECT_EQ(sum.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(sum.status().message().find(out + " exists and is not an effnet store"),
              std::string::npos)
        << sum.status().message();
    if (!before.empty()) EXPECT_EQ(ReadAll(out), before);
  }
  EXPECT_EQ(ReadAll(s.csv), csv_before);
  EXPECT_FALSE(HasTempFiles(dir.path()));

  // An older store is replaced.
  const std::string out = dir / "store.h5";
  ASSERT_TRUE(RunPrepare(CsvConfig(s, out, 16)).ok());
  auto again = RunPrepare(CsvConfig(s, out, 24));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(DatasetReader::Open(out).value()->info().image_size, 24);
}

TEST(Prepare, CsvImagePathsStayInsideImages) {
  TempDir dir;
  CsvSet s = MakeCsvSet(dir, 2, 16);
  WriteImage(dir / "x.jpg", MakeRgb(77, 16, 16));  // next to images/, not inside
  std::ofstream(s.csv, std::ios::app)
      << CsvRecord({"9", "n", "[\"Class A >> x\"]", "../x.jpg", "d"})
      << CsvRecord({"10", "n", "[\"Class A >> x\"]", dir / "x.jpg", "d"});
  auto sum = RunPrepare(CsvConfig(s, dir / "in.h5", 16));
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(sum->stored_originals, 6);
  ASSERT_EQ(sum->rejections.size(), 2u);
  EXPECT_EQ(sum->rejections[0].row, 7);
  EXPECT_NE(sum->rejections[0].reason.find("'../x.jpg' lies outside --images"), std::string::npos)
      << sum->rejections[0].reason;
  EXPECT_EQ(sum->rejections[1].row, 8);

  PrepareConfig c = CsvConfig(s, dir / "out.h5", 16);
  c.allow_outside_images = true;
  sum = RunPrepare(c);
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(sum->stored_originals, 8);
  EXPECT_TRUE(sum->rejections.empty());
}

TEST(Prepare, MalformedCsvStopsWithTheLineNumber) {
  TempDir dir;
  CsvSet s = MakeCsvSet(dir, 2, 16);
  const std::string out = dir / "m.h5";
  ASSERT_TRUE(RunPrepare(CsvConfig(s, out, 16)).ok());
  const std::string before = ReadAll(out);
  // 6 good rows of 2 lines: line 14 opens a quote that never closes.
  std::ofstream(s.csv, std::ios::app) << "x,y,\"[\"\"Class A\"\"]\",a.png,\"unterminated\n";
  auto sum = RunPrepare(CsvConfig(s, out, 16));
  ASSERT_FALSE(sum.ok());
  EXPECT_NE(sum.status().message().find(s.csv + ":14:"), std::string::npos)
      << sum.status().message();
  EXPECT_EQ(ReadAll(out), before);

  PrepareConfig c = CsvConfig(s, dir / "m2.h5", 16);
  c.image_column = "picture";
  std::ofstream(s.csv) << "uniq_id,product_category_tree,image\n1,\"[\"\"A\"\"]\",a.png\n";
  sum = RunPrepare(c);
  ASSERT_FALSE(sum.ok());
  EXPECT_NE(sum.status().message().find("no column 'picture'"), std::string::npos)
      << sum.status().message();
  EXPECT_FALSE(fs::exists(c.out_path));
}

TEST(Prepare, Latin1CsvIsStoredAsUtf8) {
  // A spreadsheet export in Latin-1: class names and file names with e-acute as byte 0xE9, the
  // files on disk named with the same bytes. Stored as UTF-8 (Note [text encoding]), so that
  // inspect --json and checkpoints can write them.
  TempDir dir;
  const std::string images = dir / "images";
  fs::create_directories(images);
  std::string text = "product_category_tree,image\n";
  for (int k = 0; k < 6; ++k) {
    const std::string cls = k % 2 ? "Caf\xe9" : "Th\xe9";
    const std::string file = "img\xe9_" + std::to_string(k) + ".png";
    WriteImage(images + "/" + file, MakeRgb(static_cast<uint64_t>(k), 16, 16));
    text += "\"[\"\"" + cls + " >> x\"\"]\"," + file + "\n";
  }
  CsvSet s;
  s.csv = dir / "latin1.csv";
  s.images = images;
  std::ofstream(s.csv) << text;
  const std::string out = dir / "out.h5";
  auto sum = RunPrepare(CsvConfig(s, out, 16));
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(sum->stored_originals, 6) << (sum->rejections.empty() ? "" : sum->rejections[0].reason);
  auto r = DatasetReader::Open(out);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->info().class_names, (std::vector<std::string>{"Caf\xc3\xa9", "Th\xc3\xa9"}));
  EXPECT_NE((*r)->info().source_paths[0].find("img\xc3\xa9_0.png"), std::string::npos);
  auto rep = Inspect(**r, 4);
  ASSERT_TRUE(rep.ok());
  const auto j = nlohmann::json::parse(ToJson(*rep));
  EXPECT_EQ(j["classes"][0], "Caf\xc3\xa9");
}

TEST(Prepare, OfflineAugmentationCopiesTrainAndValOnly) {
  TempDir dir;
  CsvSet s = MakeCsvSet(dir, 10, 16);
  PrepareConfig c = CsvConfig(s, dir / "aug.h5", 16);
  c.augment_offline = true;
  auto sum = RunPrepare(c);
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  auto r = DatasetReader::Open(c.out_path);
  ASSERT_TRUE(r.ok());
  const auto& info = (*r)->info();
  int64_t orig[3] = {0, 0, 0}, all[3] = {0, 0, 0};
  for (int64_t i = 0; i < info.num_images; ++i) {
    all[static_cast<int>(info.splits[i])]++;
    if (info.origin[i] == i) orig[static_cast<int>(info.splits[i])]++;
  }
  EXPECT_EQ(orig[0] + orig[1] + orig[2], 30);
  EXPECT_EQ(all[0], 4 * orig[0]);
  EXPECT_EQ(all[1], 4 * orig[1]);
  EXPECT_EQ(all[2], orig[2]);
  EXPECT_EQ(info.num_images, sum->stored_total);
  for (int64_t i = 30; i < info.num_images; ++i) {
    const int64_t o = info.origin[i];
    ASSERT_NE(info.splits[o], Split::kTest);
    EXPECT_EQ(info.splits[i], info.splits[o]);
    EXPECT_EQ(info.labels[i], info.labels[o]);
    std::vector<uint8_t> origin_px = ReadOne(**r, o);
    cv::Mat src(16, 16, CV_8UC3, origin_px.data()), want;
    switch (info.augmentation[i]) {
      case 1:
        cv::flip(src, want, 1);
        break;
      case 2:
        cv::flip(src, want, 0);
        break;
      case 3:
        cv::rotate(src, want, cv::ROTATE_90_CLOCKWISE);
        break;
      default:
        FAIL() << "copy " << i << " has augmentation " << int{info.augmentation[i]};
    }
    EXPECT_EQ(ReadOne(**r, i), Bytes(want)) << "copy " << i;
  }
  auto rep = Inspect(**r, -1);
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(rep->duplicate_groups_across_splits, 0);
  EXPECT_EQ(rep->augmented_copies, info.num_images - 30);
}

TEST(Prepare, SameSeedSameFileForAnyThreadCount) {
  TempDir dir;
  CsvSet s = MakeCsvSet(dir, 6, 16);
  PrepareConfig a = CsvConfig(s, dir / "a.h5", 16), b = CsvConfig(s, dir / "b.h5", 16);
  a.threads = 1;
  b.threads = 3;
  ASSERT_TRUE(RunPrepare(a).ok());
  ASSERT_TRUE(RunPrepare(b).ok());
  auto ra = DatasetReader::Open(a.out_path), rb = DatasetReader::Open(b.out_path);
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_EQ((*ra)->info().splits, (*rb)->info().splits);
  EXPECT_EQ((*ra)->info().labels, (*rb)->info().labels);
  EXPECT_EQ((*ra)->info().content_hash, (*rb)->info().content_hash);
  for (int64_t i = 0; i < 18; ++i) EXPECT_EQ(ReadOne(**ra, i), ReadOne(**rb, i));
}

// --- the tools, as other components call them ---

int RunCmd(const std::string& cmd) {
  const int rc = std::system((cmd + " >/dev/null 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

TEST(Tools, SigintLeavesNoTempFileAndKeepsTheOlderOutput) {
  // Ctrl-C during a run: no temporary file is left and the older store is intact. The input is
  // slow: one large JPEG named 1,500 times, decoded on one thread.
  const char* bin = std::getenv("EFFNET_BIN_DIR");
  if (!bin) GTEST_SKIP() << "EFFNET_BIN_DIR not set (run through ctest)";
  const std::string b(bin);
  TempDir dir;
  CsvSet s = MakeCsvSet(dir, 2, 16);
  ASSERT_TRUE(RunPrepare(CsvConfig(s, dir / "syn.h5", 16)).ok());  // the older output
  {
    const std::string big = dir / "big.jpg";
    WriteImage(big, MakeRgb(5, 1600, 1600));
    std::string text = "product_category_tree,image\n";
    for (int k = 0; k < 1500; ++k) text += std::string(k % 2 ? "A" : "B") + ",big.jpg\n";
    std::ofstream(dir / "slow.csv") << text;
    const std::string before = ReadAll(dir / "syn.h5");
    const std::string cmd = b + "/effnet-prepare --csv " + dir.path() + "/slow.csv --images " +
                            dir.path() + " --size 32 --threads 1 --out " + dir.path() + "/syn.h5";
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::execl("/bin/sh", "sh", "-c", ("exec " + cmd + " >/dev/null 2>&1").c_str(), nullptr);
      ::_exit(127);
    }
    bool started = false;
    for (int i = 0; i < 3000 && !started; ++i) {
      started = HasTempFiles(dir.path());
      if (!started) ::usleep(10000);
    }
    EXPECT_TRUE(started) << "no temporary file appeared";
    ::usleep(100000);  // well inside the decode loop
    ::kill(pid, SIGINT);
    int ws = 0;
    ::waitpid(pid, &ws, 0);
    EXPECT_TRUE(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGINT) << "status " << ws;
    EXPECT_FALSE(HasTempFiles(dir.path()));
    EXPECT_EQ(ReadAll(dir / "syn.h5"), before);
  }
}

TEST(Tools, SynthPrepareInspect) {
  const char* bin = std::getenv("EFFNET_BIN_DIR");
  if (!bin) GTEST_SKIP() << "EFFNET_BIN_DIR not set (run through ctest)";
  const std::string b(bin);
  TempDir dir;
  ASSERT_EQ(
      RunCmd(b + "/effnet-synth --out " + dir.path() + "/syn --per-class 6 --size 48 --seed 3"), 0);
  auto table = ReadCsvFile(dir / "syn/synth.csv");
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(table->header, (std::vector<std::string>{"uniq_id", "product_name",
                                                     "product_category_tree", "image"}));
  EXPECT_EQ(table->rows.size(), 42u);
  // Same seed, same table.
  ASSERT_EQ(
      RunCmd(b + "/effnet-synth --out " + dir.path() + "/syn2 --per-class 6 --size 48 --seed 3"),
      0);
  EXPECT_EQ(ReadAll(dir / "syn/synth.csv"), ReadAll(dir / "syn2/synth.csv"));

  const std::string prep = b + "/effnet-prepare --csv " + dir.path() + "/syn/synth.csv --images " +
                           dir.path() + "/syn/images --size 32 --threads 2 --out ";
  ASSERT_EQ(RunCmd(prep + dir.path() + "/syn.h5"), 0);
  const std::string json_path = dir / "inspect.json";
  ASSERT_EQ(
      std::system((b + "/effnet-inspect --json " + dir.path() + "/syn.h5 > " + json_path).c_str()),
      0);
  auto j = nlohmann::json::parse(ReadAll(json_path));
  EXPECT_EQ(j["num_images"], 42);
  EXPECT_EQ(j["classes"].size(), 7u);
  EXPECT_EQ(j["duplicate_groups_across_splits"], 0);
  EXPECT_EQ(j["schema_version"], 1);
  EXPECT_EQ(j["per_class"]["Circles"]["test"], 1);  // round(6 * 0.2)

  // Several processes read one file at once while this process holds it open.
  {
    auto held = DatasetReader::Open(dir / "syn.h5");
    ASSERT_TRUE(held.ok());
    const std::string one = b + "/effnet-inspect " + dir.path() + "/syn.h5 >/dev/null";
    const std::string three = one + " & p1=$!; " + one + " & p2=$!; " + one +
                              " & p3=$!; wait $p1 && wait $p2 && wait $p3";
    EXPECT_EQ(std::system(three.c_str()), 0);
    std::vector<uint8_t> px((*held)->image_bytes());
    EXPECT_TRUE((*held)->ReadImages({41}, px.data()).ok());
  }

  // --strict turns a missing photo into a failure; without it the run succeeds.
  std::ofstream(dir / "syn/synth.csv", std::ios::app) << "x,y,\"[\"\"Circles\"\"]\",gone.jpg\n";
  EXPECT_NE(RunCmd(prep + dir.path() + "/strict.h5 --strict"), 0);
  EXPECT_FALSE(fs::exists(dir / "strict.h5"));
  EXPECT_EQ(RunCmd(prep + dir.path() + "/lenient.h5"), 0);
  EXPECT_NE(ReadAll(dir / "lenient.h5.rejected.csv").find("gone.jpg"), std::string::npos);
  // A foreign file is refused by effnet-inspect.
  std::ofstream(dir / "x.h5") << "nope";
  EXPECT_EQ(RunCmd(b + "/effnet-inspect " + dir.path() + "/x.h5"), 1);
}

}  // namespace
}  // namespace effnet::storage
