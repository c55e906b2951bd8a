// CRC-32C (Castagnoli) and the TFRecord CRC mask, written here so that the report library needs
// neither protobuf nor TensorFlow.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace effnet::report {

// CRC-32C of `n` bytes, continuing from `crc` (0 to start). Crc32c("123456789") == 0xE3069283.
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);
inline uint32_t Crc32c(const void* data, size_t n) { return Crc32cExtend(0, data, n); }
inline uint32_t Crc32c(std::string_view s) { return Crc32c(s.data(), s.size()); }

// Note [masked crc]: TFRecord stores CRCs masked, ((crc >> 15) | (crc << 17)) + 0xa282ead8, so
// that a CRC computed over bytes that themselves contain CRCs does not degenerate.
inline uint32_t MaskCrc(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }
inline uint32_t UnmaskCrc(uint32_t masked) {
  const uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}

}  // namespace effnet::report
