// Reduced-scale JPEG decoding (Note [reduced decoding] in storage/prepare.h) against full decode +
// the same resize, on generated photo-like JPEGs, including EXIF orientations.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <vector>

#include "common/hash.h"
#include "storage/dataset_reader.h"
#include "storage/prepare.h"
#include "tests/storage/temp_dir.h"

namespace effnet::storage {
namespace {
using effnet::testing::TempDir;

// Tolerance of reduced decoding vs full decode + the same resize, per 8-bit channel value over
// all stored pixels of one image: mean |diff| <= kMeanTol, max |diff| <= kMaxTol. Measured on
// these images (JPEG quality 90, hard-edged shapes and text): mean <= 1.07, max <= 58; the max
// sits on sharp edges, which a 1/s decode and a full decode place a fraction of a pixel apart.
constexpr double kMeanTol = 1.5;
constexpr int kMaxTol = 64;

// Photo-like content: smooth gradients, filled shapes with hard edges, blurred noise and text.
cv::Mat MakePhoto(uint64_t seed, int w, int h) {
  SplitMix64 g(seed);
  cv::Mat bgr(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      bgr.at<cv::Vec3b>(y, x) =
          cv::Vec3b(static_cast<uint8_t>(255 * x / w), static_cast<uint8_t>(255 * y / h),
                    static_cast<uint8_t>(128 + 60 * ((x + y) % 97) / 97));
    }
  }
  cv::Mat noise(h, w, CV_8UC3);
  cv::theRNG().state = seed + 1;
  cv::randu(noise, 0, 255);
  cv::GaussianBlur(noise, noise, cv::Size(0, 0), 3.0);
  cv::addWeighted(bgr, 0.7, noise, 0.3, 0, bgr);
  for (int k = 0; k < 12; ++k) {
    const cv::Point c(static_cast<int>(g.Below(w)), static_cast<int>(g.Below(h)));
    const cv::Scalar col(g.Below(256), g.Below(256), g.Below(256));
    const int r = static_cast<int>(g.Below(std::min(w, h) / 6)) + 10;
    if (k % 2) {
      cv::circle(bgr, c, r, col, -1, cv::LINE_AA);
    } else {
      cv::rectangle(bgr, cv::Rect(c.x, c.y, r * 2, r), col, -1);
    }
  }
  cv::putText(bgr, "effnet " + std::to_string(seed), cv::Point(w / 10, h / 2),
              cv::FONT_HERSHEY_SIMPLEX, w / 400.0, cv::Scalar(20, 20, 20), std::max(1, w / 300),
              cv::LINE_AA);
  return bgr;
}

std::vector<uint8_t> EncodeJpeg(const cv::Mat& bgr, int quality = 90) {
  std::vector<uint8_t> out;
  EXPECT_TRUE(cv::imencode(".jpg", bgr, out, {cv::IMWRITE_JPEG_QUALITY, quality}));
  return out;
}

// The JPEG with an EXIF APP1 segment (orientation tag 0x0112 only) right after SOI.
std::vector<uint8_t> WithOrientation(const std::vector<uint8_t>& jpg, int orientation) {
  const std::vector<uint8_t> tiff = {'I',
                                     'I',
                                     42,
                                     0,
                                     8,
                                     0,
                                     0,
                                     0,  // little-endian, IFD at 8
                                     1,
                                     0,  // one entry
                                     0x12,
                                     0x01,
                                     3,
                                     0,
                                     1,
                                     0,
                                     0,
                                     0,  // orientation, SHORT, 1
                                     static_cast<uint8_t>(orientation),
                                     0,
                                     0,
                                     0,
                                     0,
                                     0,
                                     0,
                                     0};  // no next IFD
  const size_t len = 2 + 6 + tiff.size();
  std::vector<uint8_t> out(jpg.begin(), jpg.begin() + 2);
  for (uint8_t b : {uint8_t{0xFF}, uint8_t{0xE1}, static_cast<uint8_t>(len >> 8),
                    static_cast<uint8_t>(len & 0xFF), uint8_t{'E'}, uint8_t{'x'}, uint8_t{'i'},
                    uint8_t{'f'}, uint8_t{0}, uint8_t{0}}) {
    out.push_back(b);
  }
  out.insert(out.end(), tiff.begin(), tiff.end());
  out.insert(out.end(), jpg.begin() + 2, jpg.end());
  return out;
}

void WriteBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
}

struct Diff {
  double mean = 0;
  int max = 0;
};
Diff Compare(const cv::Mat& a, const cv::Mat& b) {
  EXPECT_EQ(a.size(), b.size());
  EXPECT_EQ(a.type(), b.type());
  if (a.size() != b.size() || a.type() != b.type()) return {1e9, 255};
  cv::Mat d;
  cv::absdiff(a, b, d);
  double mx = 0;
  cv::minMaxLoc(d.reshape(1), nullptr, &mx);
  const cv::Scalar m = cv::mean(d);
  return {(m[0] + m[1] + m[2]) / 3, static_cast<int>(mx)};
}

TEST(ReducedDecode, ScaleIsTheLargestThatStillCoversTheStoredSize) {
  static_assert(kReducedDecodeMinRatio == 2, "the cases below assume ratio 2");
  // squash: both sides >= 2 x 256; 4000 x 3000 at 1/4 = 1000 x 750, at 1/8 only 375 rows.
  EXPECT_EQ(ReducedDecodeScale(4000, 3000, 256, ResizeMode::kSquash), 4);
  EXPECT_EQ(ReducedDecodeScale(8000, 6000, 256, ResizeMode::kSquash), 8);
  EXPECT_EQ(ReducedDecodeScale(4000, 2000, 256, ResizeMode::kSquash), 2);  // 1/4: 500 rows
  EXPECT_EQ(ReducedDecodeScale(4000, 2048, 256, ResizeMode::kSquash), 4);
  EXPECT_EQ(ReducedDecodeScale(4000, 2045, 256, ResizeMode::kSquash), 4);  // ceil(2045/4) = 512
  EXPECT_EQ(ReducedDecodeScale(1024, 1021, 256, ResizeMode::kSquash), 1);  // 511 rows
  EXPECT_EQ(ReducedDecodeScale(1024, 1024, 256, ResizeMode::kSquash), 2);
  EXPECT_EQ(ReducedDecodeScale(512, 512, 256, ResizeMode::kSquash), 1);
  EXPECT_EQ(ReducedDecodeScale(100, 100, 256, ResizeMode::kSquash), 1);  // enlarged: full
  // center-crop: the shorter side; pad: the longer side.
  EXPECT_EQ(ReducedDecodeScale(1200, 4200, 256, ResizeMode::kCenterCrop), 2);
  EXPECT_EQ(ReducedDecodeScale(4200, 1200, 256, ResizeMode::kPad), 8);
  EXPECT_EQ(ReducedDecodeScale(4200, 1200, 300, ResizeMode::kPad), 4);
}

TEST(ReducedDecode, StoredPixelsWithinToleranceOfFullDecode) {
  TempDir dir;
  struct Case {
    int w, h, size;
  };
  // Scales 8, 4 and 2, odd sides (partial last DCT block), both orientations of the aspect.
  const Case cases[] = {{2400, 1800, 224}, {1500, 2101, 256}, {1030, 531, 128}, {777, 1283, 96}};
  double worst_mean = 0;
  int worst_max = 0, n = 0;
  for (const Case& cs : cases) {
    const std::string path = dir / ("photo_" + std::to_string(n++) + ".jpg");
    WriteBytes(path, EncodeJpeg(MakePhoto(static_cast<uint64_t>(n), cs.w, cs.h)));
    auto full = DecodeImageFile(path, 1'000'000'000);
    ASSERT_TRUE(full.ok()) << full.status().ToString();
    ASSERT_EQ(full->scale, 1);
    for (ResizeMode mode : {ResizeMode::kSquash, ResizeMode::kCenterCrop, ResizeMode::kPad}) {
      auto reduced = DecodeImageFile(path, 1'000'000'000, cs.size, mode);
      ASSERT_TRUE(reduced.ok()) << reduced.status().ToString();
      const int want_scale = ReducedDecodeScale(cs.w, cs.h, cs.size, mode);
      EXPECT_EQ(reduced->scale, want_scale);
      EXPECT_GT(reduced->scale, 1) << cs.w << " x " << cs.h;
      EXPECT_EQ(reduced->full_size, cv::Size(cs.w, cs.h));
      EXPECT_EQ(reduced->rgb.cols, (cs.w + want_scale - 1) / want_scale);
      const cv::Mat want = ResizeForStore(full->rgb, cs.size, mode, 7);
      const cv::Mat got = ResizeForStore(reduced->rgb, cs.size, mode, 7, reduced->full_size);
      const Diff d = Compare(got, want);
      std::printf("  %d x %d -> %d %s at 1/%d: mean |diff| %.3f, max %d\n", cs.w, cs.h, cs.size,
                  ResizeModeName(mode), reduced->scale, d.mean, d.max);
      EXPECT_LE(d.mean, kMeanTol) << cs.w << " x " << cs.h << " " << ResizeModeName(mode);
      EXPECT_LE(d.max, kMaxTol) << cs.w << " x " << cs.h << " " << ResizeModeName(mode);
      worst_mean = std::max(worst_mean, d.mean);
      worst_max = std::max(worst_max, d.max);
    }
  }
  std::printf("  worst: mean %.3f (tolerance %.1f), max %d (tolerance %d)\n", worst_mean, kMeanTol,
              worst_max, kMaxTol);
}

TEST(ReducedDecode, ExifOrientationIsAppliedAsInAFullDecode) {
  TempDir dir;
  const auto jpg = EncodeJpeg(MakePhoto(11, 1600, 1000));
  for (int orientation = 1; orientation <= 8; ++orientation) {
    const std::string path = dir / ("o" + std::to_string(orientation) + ".jpg");
    WriteBytes(path, WithOrientation(jpg, orientation));
    auto full = DecodeImageFile(path, 1'000'000'000);
    ASSERT_TRUE(full.ok()) << full.status().ToString();
    // Orientations 5-8 swap the sides; a reduced decode must report the same oriented size.
    EXPECT_EQ(full->rgb.cols, orientation >= 5 ? 1000 : 1600) << "orientation " << orientation;
    for (ResizeMode mode : {ResizeMode::kSquash, ResizeMode::kCenterCrop, ResizeMode::kPad}) {
      auto reduced = DecodeImageFile(path, 1'000'000'000, 120, mode);
      ASSERT_TRUE(reduced.ok()) << reduced.status().ToString();
      EXPECT_EQ(reduced->scale, 4);  // 400 x 250 >= 2 x 120
      EXPECT_EQ(reduced->full_size, full->rgb.size()) << "orientation " << orientation;
      const Diff d = Compare(ResizeForStore(reduced->rgb, 120, mode, 0, reduced->full_size),
                             ResizeForStore(full->rgb, 120, mode, 0));
      EXPECT_LE(d.mean, kMeanTol) << "orientation " << orientation << " " << ResizeModeName(mode);
      EXPECT_LE(d.max, kMaxTol) << "orientation " << orientation << " " << ResizeModeName(mode);
    }
  }
}

TEST(ReducedDecode, OtherFormatsAndSmallJpegsDecodeAtFullSize) {
  TempDir dir;
  const cv::Mat bgr = MakePhoto(3, 900, 700);
  ASSERT_TRUE(cv::imwrite(dir / "big.png", bgr));
  auto png = DecodeImageFile(dir / "big.png", 1'000'000'000, 64, ResizeMode::kSquash);
  ASSERT_TRUE(png.ok());
  EXPECT_EQ(png->scale, 1);
  EXPECT_EQ(png->rgb.size(), cv::Size(900, 700));
  WriteBytes(dir / "small.jpg", EncodeJpeg(MakePhoto(4, 300, 200)));
  auto small = DecodeImageFile(dir / "small.jpg", 1'000'000'000, 256, ResizeMode::kSquash);
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->scale, 1);
  EXPECT_EQ(small->rgb.size(), cv::Size(300, 200));
  // The pixel limit still applies to the full size.
  WriteBytes(dir / "large.jpg", EncodeJpeg(MakePhoto(5, 1600, 1200)));
  auto limited = DecodeImageFile(dir / "large.jpg", 1600 * 1200 - 1, 64, ResizeMode::kSquash);
  EXPECT_FALSE(limited.ok());
}

TEST(ReducedDecode, PrepareStoresReducedDecodesWithinTolerance) {
  TempDir dir;
  std::filesystem::create_directories(dir / "f/a");
  std::vector<std::string> files;
  for (int k = 0; k < 4; ++k) {
    files.push_back(dir / ("f/a/p" + std::to_string(k) + ".jpg"));
    WriteBytes(files.back(), EncodeJpeg(MakePhoto(20 + k, 1200 + 97 * k, 900 - 41 * k)));
  }
  PrepareConfig c;
  c.folders_dir = dir / "f";
  c.out_path = dir / "out.h5";
  c.image_size = 64;
  c.threads = 2;
  c.progress_tty = 0;
  c.split.test_fraction = 0;
  c.split.val_fraction = 0;
  auto sum = RunPrepare(c);
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  auto r = DatasetReader::Open(c.out_path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::vector<uint8_t> buf((*r)->image_bytes());
  for (int64_t i = 0; i < 4; ++i) {
    ASSERT_TRUE((*r)->ReadImages({i}, buf.data()).ok());
    const cv::Mat stored(64, 64, CV_8UC3, buf.data());
    auto full = DecodeImageFile((*r)->info().source_paths[i], 1'000'000'000);
    ASSERT_TRUE(full.ok());
    const Diff d = Compare(stored, ResizeForStore(full->rgb, 64, ResizeMode::kSquash, 0));
    EXPECT_LE(d.mean, kMeanTol) << "image " << i;
    EXPECT_LE(d.max, kMaxTol) << "image " << i;
  }
}

}  // namespace
}  // namespace effnet::storage
