// Image header sniffing without a decoder: format, dimensions and a truncation check, so that
// effnet-prepare can refuse oversized or truncated files before spending a full decode on them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace effnet::storage {

enum class ImageFormat { kUnknown, kJpeg, kPng, kGif, kBmp, kWebp };
const char* ImageFormatName(ImageFormat f);

struct ImageHeader {
  ImageFormat format = ImageFormat::kUnknown;
  int64_t width = -1, height = -1;  // -1: not found in the header
  // Non-empty when the bytes are recognisably broken: "truncated JPEG: no end-of-image marker".
  std::string problem;
};

// Note [truncated JPEG]: libjpeg (and so OpenCV) decodes a truncated JPEG "successfully", filling
// the missing rows with grey and printing a warning. We walk the marker segments to the first
// start-of-scan and require an end-of-image marker (FF D9) after it: entropy-coded data never
// contains FF D9 (FF is stuffed as FF 00), and an EXIF thumbnail's EOI lies before the main scan.
// PNG needs its IEND chunk, GIF its trailer, WebP/BMP their declared size.
ImageHeader SniffImageHeader(const uint8_t* data, size_t size);

}  // namespace effnet::storage
