#include <gtest/gtest.h>

#include <vector>

#include "storage/image_header.h"

namespace effnet::storage {
namespace {

// A minimal JPEG byte layout: SOI, APP0, SOF0 (h x w), SOS, scan bytes, EOI.
std::vector<uint8_t> FakeJpeg(int w, int h, bool with_eoi) {
  std::vector<uint8_t> d = {0xFF,
                            0xD8,
                            0xFF,
                            0xE0,
                            0x00,
                            0x04,
                            0x00,
                            0x00,
                            0xFF,
                            0xC0,
                            0x00,
                            0x0B,
                            0x08,
                            static_cast<uint8_t>(h >> 8),
                            static_cast<uint8_t>(h),
                            static_cast<uint8_t>(w >> 8),
                            static_cast<uint8_t>(w),
                            0x01,
                            0x01,
                            0x11,
                            0x00,
                            0xFF,
                            0xDA,
                            0x00,
                            0x08,
                            0x01,
                            0x01,
                            0x00,
                            0x00,
                            0x3F,
                            0x00};
  for (int i = 0; i < 100; ++i) d.push_back(static_cast<uint8_t>(i == 50 ? 0xFF : i));
  d.insert(d.begin() + 82, 0x00);  // byte stuffing after the 0xFF in the scan
  if (with_eoi) {
    d.push_back(0xFF);
    d.push_back(0xD9);
  }
  return d;
}

TEST(ImageHeader, JpegDimensionsAndTruncation) {
  auto ok = FakeJpeg(640, 480, true);
  auto h = SniffImageHeader(ok.data(), ok.size());
  EXPECT_EQ(h.format, ImageFormat::kJpeg);
  EXPECT_EQ(h.width, 640);
  EXPECT_EQ(h.height, 480);
  EXPECT_TRUE(h.problem.empty()) << h.problem;

  auto cut = FakeJpeg(640, 480, false);
  h = SniffImageHeader(cut.data(), cut.size());
  EXPECT_EQ(h.width, 640);
  EXPECT_NE(h.problem.find("truncated"), std::string::npos);

  h = SniffImageHeader(ok.data(), 12);  // inside the header
  EXPECT_NE(h.problem.find("truncated"), std::string::npos);
}

TEST(ImageHeader, PngDimensions) {
  std::vector<uint8_t> d = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0, 0, 0,    13,
                            'I',  'H', 'D', 'R', 0,    0,    0x4E, 0x20, 0, 0, 0x27, 0x10};
  auto h = SniffImageHeader(d.data(), d.size());
  EXPECT_EQ(h.format, ImageFormat::kPng);
  EXPECT_EQ(h.width, 20000);
  EXPECT_EQ(h.height, 10000);
  EXPECT_NE(h.problem.find("IEND"), std::string::npos);
  for (char c : std::string("\0\0\0\0IEND\xAE\x42\x60\x82", 12))
    d.push_back(static_cast<uint8_t>(c));
  h = SniffImageHeader(d.data(), d.size());
  EXPECT_TRUE(h.problem.empty()) << h.problem;
}

TEST(ImageHeader, UnknownBytes) {
  const std::string text = "hello, not an image";
  auto h = SniffImageHeader(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  EXPECT_EQ(h.format, ImageFormat::kUnknown);
  EXPECT_EQ(h.width, -1);
}

}  // namespace
}  // namespace effnet::storage
