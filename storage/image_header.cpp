#include "storage/image_header.h"

#include <cstring>

namespace effnet::storage {
namespace {

uint32_t Be16(const uint8_t* p) { return (uint32_t{p[0]} << 8) | p[1]; }
uint32_t Be32(const uint8_t* p) { return (Be16(p) << 16) | Be16(p + 2); }
uint32_t Le16(const uint8_t* p) { return (uint32_t{p[1]} << 8) | p[0]; }
uint32_t Le24(const uint8_t* p) { return Le16(p) | (uint32_t{p[2]} << 16); }
uint32_t Le32(const uint8_t* p) { return Le16(p) | (Le16(p + 2) << 16); }

void SniffJpeg(const uint8_t* d, size_t n, ImageHeader* h) {
  size_t pos = 2;
  size_t sos = 0;
  while (pos + 1 < n) {
    if (d[pos] != 0xFF) {
      h->problem = "corrupt JPEG: expected a marker at byte " + std::to_string(pos);
      return;
    }
    while (pos + 1 < n && d[pos + 1] == 0xFF) ++pos;  // fill bytes
    if (pos + 1 >= n) break;
    const uint8_t m = d[pos + 1];
    if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
      pos += 2;
      continue;
    }
    if (m == 0xD9) {
      h->problem = "corrupt JPEG: end-of-image before any scan";
      return;
    }
    if (pos + 4 > n) break;
    const uint32_t len = Be16(d + pos + 2);
    const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof && pos + 9 <= n) {
      h->height = Be16(d + pos + 5);
      h->width = Be16(d + pos + 7);
    }
    if (m == 0xDA) {
      sos = pos;
      break;
    }
    if (len < 2) {
      h->problem = "corrupt JPEG: bad segment length at byte " + std::to_string(pos);
      return;
    }
    pos += 2 + len;
  }
  if (sos == 0) {
    h->problem = "truncated JPEG: ends inside its header";
    return;
  }
  for (size_t i = n - 1; i > sos + 1; --i) {
    if (d[i] == 0xD9 && d[i - 1] == 0xFF) return;
  }
  h->problem = "truncated JPEG: no end-of-image marker after the image data";
}

void SniffPng(const uint8_t* d, size_t n, ImageHeader* h) {
  if (n >= 24 && std::memcmp(d + 12, "IHDR", 4) == 0) {
    h->width = Be32(d + 16);
    h->height = Be32(d + 20);
  } else {
    h->problem = "corrupt PNG: no IHDR chunk";
    return;
  }
  for (size_t i = n >= 4 ? n - 4 : 0; i > 8; --i) {
    if (std::memcmp(d + i, "IEND", 4) == 0) return;
  }
  h->problem = "truncated PNG: no IEND chunk";
}

}  // namespace

const char* ImageFormatName(ImageFormat f) {
  switch (f) {
    case ImageFormat::kUnknown:
      return "unknown";
    case ImageFormat::kJpeg:
      return "JPEG";
    case ImageFormat::kPng:
      return "PNG";
    case ImageFormat::kGif:
      return "GIF";
    case ImageFormat::kBmp:
      return "BMP";
    case ImageFormat::kWebp:
      return "WebP";
  }
  return "?";
}

ImageHeader SniffImageHeader(const uint8_t* d, size_t n) {
  ImageHeader h;
  if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) {
    h.format = ImageFormat::kJpeg;
    SniffJpeg(d, n, &h);
  } else if (n >= 8 && std::memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) {
    h.format = ImageFormat::kPng;
    SniffPng(d, n, &h);
  } else if (n >= 10 && (std::memcmp(d, "GIF87a", 6) == 0 || std::memcmp(d, "GIF89a", 6) == 0)) {
    h.format = ImageFormat::kGif;
    h.width = Le16(d + 6);
    h.height = Le16(d + 8);
    if (d[n - 1] != 0x3B) h.problem = "truncated GIF: no trailer";
  } else if (n >= 26 && d[0] == 'B' && d[1] == 'M') {
    h.format = ImageFormat::kBmp;
    h.width = static_cast<int32_t>(Le32(d + 18));
    const int32_t hh = static_cast<int32_t>(Le32(d + 22));
    h.height = hh < 0 ? -static_cast<int64_t>(hh) : hh;
    if (Le32(d + 2) > n) h.problem = "truncated BMP: shorter than its declared size";
  } else if (n >= 30 && std::memcmp(d, "RIFF", 4) == 0 && std::memcmp(d + 8, "WEBP", 4) == 0) {
    h.format = ImageFormat::kWebp;
    if (std::memcmp(d + 12, "VP8 ", 4) == 0) {
      h.width = Le16(d + 26) & 0x3FFF;
      h.height = Le16(d + 28) & 0x3FFF;
    } else if (std::memcmp(d + 12, "VP8L", 4) == 0) {
      const uint32_t bits = Le32(d + 21);
      h.width = (bits & 0x3FFF) + 1;
      h.height = ((bits >> 14) & 0x3FFF) + 1;
    } else if (std::memcmp(d + 12, "VP8X", 4) == 0) {
      h.width = Le24(d + 24) + 1;
      h.height = Le24(d + 27) + 1;
    }
    if (uint64_t{Le32(d + 4)} + 8 > n) h.problem = "truncated WebP: shorter than its RIFF size";
  }
  return h;
}

}  // namespace effnet::storage
