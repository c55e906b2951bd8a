#include "worker/formats/safetensors.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>

#include "common/atomic_file.h"

namespace effnet::formats {
namespace {

// safetensors dtype names.
const std::map<std::string, at::ScalarType>& SafetensorsDtypes() {
  static const std::map<std::string, at::ScalarType> m = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
      {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
      {"U8", at::kByte},    {"BOOL", at::kBool},
  };
  return m;
}

Result<std::string> SafetensorsDtypeName(at::ScalarType t) {
  for (const auto& [name, type] : SafetensorsDtypes()) {
    if (type == t) return name;
  }
  return Status(
      InvalidArgument(std::string("dtype ") + c10::toString(t) + " has no safetensors name"));
}

// Note [safetensors bounds]: the header length, every data_offsets pair and every shape are
// checked against the file size and each other before any byte is read, so a truncated or
// hostile file is a DataLoss error naming the key, never an out-of-bounds read.
constexpr uint64_t kMaxHeader = 100u << 20;

}  // namespace

Result<StateDict> ReadSafetensors(const std::string& path) {
  EFFNET_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  return ParseSafetensors(bytes, path);
}

Result<StateDict> ParseSafetensors(const std::string& bytes, const std::string& name) {
  auto ctx = [&](const Status& s) { return s.WithContext("reading " + name); };
  if (bytes.size() < 8) return ctx(DataLoss("shorter than the 8-byte header length"));
  uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | static_cast<uint8_t>(bytes[k]);
  if (n > kMaxHeader || n > bytes.size() - 8) {
    return ctx(DataLoss("header length " + std::to_string(n) + " exceeds the file (" +
                        std::to_string(bytes.size()) + " bytes)"));
  }
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + n);
  } catch (const std::exception& e) {
    return ctx(DataLoss(std::string("header is not JSON: ") + e.what()));
  }
  if (!header.is_object()) return ctx(DataLoss("header is not a JSON object"));
  const char* data = bytes.data() + 8 + n;
  const uint64_t data_size = bytes.size() - 8 - n;
  // Keep file order of the data (offset order) so the dict is in the writer's order.
  std::vector<std::pair<uint64_t, std::string>> order;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const auto& e = it.value();
    if (!e.is_object() || !e.contains("data_offsets") || !e["data_offsets"].is_array() ||
        e["data_offsets"].size() != 2 || !e["data_offsets"][0].is_number_unsigned()) {
      return ctx(DataLoss("key '" + it.key() + "': malformed entry"));
    }
    order.emplace_back(e["data_offsets"][0].get<uint64_t>(), it.key());
  }
  std::sort(order.begin(), order.end());
  StateDict out;
  for (const auto& [begin_unused, key] : order) {
    (void)begin_unused;
    const auto& e = header[key];
    auto kctx = [&](const std::string& m) { return ctx(DataLoss("key '" + key + "': " + m)); };
    if (!e.contains("dtype") || !e["dtype"].is_string()) return kctx("no dtype");
    auto dt = SafetensorsDtypes().find(e["dtype"].get<std::string>());
    if (dt == SafetensorsDtypes().end()) {
      return ctx(
          InvalidArgument("key '" + key + "': unsupported dtype " + e["dtype"].get<std::string>()));
    }
    if (!e.contains("shape") || !e["shape"].is_array()) return kctx("no shape");
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    for (const auto& d : e["shape"]) {
      if (!d.is_number_unsigned()) return kctx("shape entries must be non-negative integers");
      const uint64_t v = d.get<uint64_t>();
      if (v > (uint64_t{1} << 40)) return kctx("dimension too large");
      shape.push_back(static_cast<int64_t>(v));
      numel *= v;
      if (numel > (uint64_t{1} << 40)) return kctx("too many elements");
    }
    if (!e["data_offsets"][1].is_number_unsigned()) return kctx("bad data_offsets");
    const uint64_t b = e["data_offsets"][0].get<uint64_t>();
    const uint64_t en = e["data_offsets"][1].get<uint64_t>();
    const uint64_t want = numel * at::elementSize(dt->second);
    if (b > en || en > data_size) {
      return kctx("data_offsets [" + std::to_string(b) + ", " + std::to_string(en) +
                  "] outside the data section (" + std::to_string(data_size) + " bytes)");
    }
    if (en - b != want) {
      return kctx(std::to_string(en - b) + " bytes for shape " + ShapeString(shape) + " of " +
                  e["dtype"].get<std::string>() + " (expected " + std::to_string(want) + ")");
    }
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dt->second));
    if (want > 0) std::memcpy(t.data_ptr(), data + b, want);  // little-endian host
    out.insert(key, t);
  }
  return out;
}

Result<std::string> SafetensorsBytes(const StateDict& dict) {
  nlohmann::ordered_json header;
  header["__metadata__"] = {{"format", "pt"}};
  std::vector<at::Tensor> tensors;
  uint64_t offset = 0;
  for (const auto& item : dict) {
    at::Tensor t = item.value().detach().to(at::kCPU).contiguous();
    auto name = SafetensorsDtypeName(t.scalar_type());
    if (!name.ok()) return name.status().WithContext("key '" + item.key() + "'");
    const uint64_t size = t.numel() * t.element_size();
    header[item.key()] = {{"dtype", name.value()},
                          {"shape", t.sizes().vec()},
                          {"data_offsets", {offset, offset + size}}};
    offset += size;
    tensors.push_back(t);
  }
  std::string h = header.dump();
  // The data section starts 8-byte aligned, as the reference writer does (pad with spaces).
  while ((h.size() + 8) % 8 != 0) h.push_back(' ');
  std::string out;
  out.reserve(8 + h.size() + offset);
  uint64_t n = h.size();
  for (int k = 0; k < 8; ++k) out.push_back(static_cast<char>((n >> (8 * k)) & 0xff));
  out += h;
  for (const auto& t : tensors) {
    out.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  }
  return out;
}

Status WriteSafetensors(const std::string& path, const StateDict& dict) {
  auto bytes = SafetensorsBytes(dict);
  if (!bytes.ok()) return bytes.status().WithContext("writing " + path);
  return WriteFileAtomic(path, *bytes).WithContext("writing " + path);
}

}  // namespace effnet::formats
