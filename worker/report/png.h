// PNG encoding (libpng) for pictures the report embeds: TensorBoard image summaries.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace effnet::report {

// 8-bit RGB rows, top to bottom (width * height * 3 bytes) -> the bytes of a PNG file.
Result<std::string> EncodePngRgb(const std::vector<uint8_t>& rgb, int width, int height);

}  // namespace effnet::report
