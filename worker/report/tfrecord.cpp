#include "worker/report/tfrecord.h"

#include <cstring>

#include "common/atomic_file.h"
#include "worker/report/crc32c.h"

namespace effnet::report {
namespace {

// --- protobuf wire format ---
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void PutLittleEndian(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFFu));
}
uint64_t GetLittleEndian(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}
void PutKey(std::string* out, uint32_t field, WireType type) {
  PutVarint(out, (field << 3) | type);
}
void PutDouble(std::string* out, uint32_t field, double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  PutKey(out, field, kFixed64);
  PutLittleEndian(out, bits, 8);
}
void PutFloat(std::string* out, uint32_t field, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  PutKey(out, field, kFixed32);
  PutLittleEndian(out, bits, 4);
}
void PutInt64(std::string* out, uint32_t field, int64_t v) {
  PutKey(out, field, kVarint);
  PutVarint(out, static_cast<uint64_t>(v));  // negative int64: 10-byte two's complement varint
}
void PutBytes(std::string* out, uint32_t field, std::string_view bytes) {
  PutKey(out, field, kLengthDelimited);
  PutVarint(out, bytes.size());
  out->append(bytes.data(), bytes.size());
}

// Reads one message's fields in order; `at` is the byte offset for error messages.
class WireReader {
 public:
  WireReader(std::string_view data, std::string what) : data_(data), what_(std::move(what)) {}
  bool done() const { return pos_ >= data_.size(); }

  Status Key(uint32_t* field, uint32_t* type) {
    uint64_t key;
    EFFNET_RETURN_IF_ERROR(Varint(&key));
    *field = static_cast<uint32_t>(key >> 3);
    *type = static_cast<uint32_t>(key & 7);
    if (*field == 0) return Error("field number 0");
    return Status::Ok();
  }
  Status Varint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) return Error("truncated varint");
      const auto b = static_cast<unsigned char>(data_[pos_++]);
      *v |= uint64_t{b & 0x7Fu} << shift;
      if ((b & 0x80u) == 0) return Status::Ok();
    }
    return Error("varint longer than 10 bytes");
  }
  Status Fixed(int bytes, uint64_t* v) {
    if (data_.size() - pos_ < static_cast<size_t>(bytes)) return Error("truncated fixed field");
    *v = GetLittleEndian(data_.data() + pos_, bytes);
    pos_ += bytes;
    return Status::Ok();
  }
  Status Bytes(std::string_view* out) {
    uint64_t n;
    EFFNET_RETURN_IF_ERROR(Varint(&n));
    if (n > data_.size() - pos_) return Error("length " + std::to_string(n) + " past the end");
    *out = data_.substr(pos_, n);
    pos_ += n;
    return Status::Ok();
  }
  Status Skip(uint32_t type) {
    uint64_t ignored;
    std::string_view ignored_bytes;
    switch (type) {
      case kVarint:
        return Varint(&ignored);
      case kFixed64:
        return Fixed(8, &ignored);
      case kFixed32:
        return Fixed(4, &ignored);
      case kLengthDelimited:
        return Bytes(&ignored_bytes);
      default:
        return Error("unsupported wire type " + std::to_string(type));
    }
  }
  Status Expect(uint32_t field, uint32_t type, uint32_t want) {
    if (type == want) return Status::Ok();
    return Error("field " + std::to_string(field) + ": wire type " + std::to_string(type) +
                 ", expected " + std::to_string(want));
  }

 private:
  Status Error(const std::string& m) const {
    return DataLoss(what_ + " at byte " + std::to_string(pos_) + ": " + m);
  }
  std::string_view data_;
  std::string what_;
  size_t pos_ = 0;
};

Status DecodePluginData(std::string_view bytes, EventProto::PluginValue* out) {
  WireReader r(bytes, "PluginData");
  while (!r.done()) {
    uint32_t field, type;
    EFFNET_RETURN_IF_ERROR(r.Key(&field, &type));
    if (field == 1 || field == 2) {
      EFFNET_RETURN_IF_ERROR(r.Expect(field, type, kLengthDelimited));
      std::string_view s;
      EFFNET_RETURN_IF_ERROR(r.Bytes(&s));
      (field == 1 ? out->plugin_name : out->content).assign(s);
    } else {
      EFFNET_RETURN_IF_ERROR(r.Skip(type));
    }
  }
  return Status::Ok();
}

Status DecodeMetadata(std::string_view bytes, EventProto::PluginValue* out) {
  WireReader r(bytes, "SummaryMetadata");
  while (!r.done()) {
    uint32_t field, type;
    EFFNET_RETURN_IF_ERROR(r.Key(&field, &type));
    if (field == 1) {
      EFFNET_RETURN_IF_ERROR(r.Expect(field, type, kLengthDelimited));
      std::string_view s;
      EFFNET_RETURN_IF_ERROR(r.Bytes(&s));
      EFFNET_RETURN_IF_ERROR(DecodePluginData(s, out));
    } else {
      EFFNET_RETURN_IF_ERROR(r.Skip(type));
    }
  }
  return Status::Ok();
}

Status DecodeSummaryValue(std::string_view bytes, EventProto* ev) {
  WireReader r(bytes, "Summary.Value");
  std::string tag;
  float value = 0;
  bool has_scalar = false, has_image = false, has_tensor = false;
  EventProto::PluginValue plugin;
  while (!r.done()) {
    uint32_t field, type;
    EFFNET_RETURN_IF_ERROR(r.Key(&field, &type));
    if (field == 1) {
      EFFNET_RETURN_IF_ERROR(r.Expect(field, type, kLengthDelimited));
      std::string_view s;
      EFFNET_RETURN_IF_ERROR(r.Bytes(&s));
      tag.assign(s);
    } else if (field == 2) {
      EFFNET_RETURN_IF_ERROR(r.Expect(field, type, kFixed32));
      uint64_t bits;
      EFFNET_RETURN_IF_ERROR(r.Fixed(4, &bits));
      const auto b32 = static_cast<uint32_t>(bits);
      std::memcpy(&value, &b32, sizeof value);
      has_scalar = true;
    } else if (field == 4 || field == 8) {  // legacy image, or a tensor (images plugin)
      EFFNET_RETURN_IF_ERROR(r.Expect(field, type, kLengthDelimited));
      has_image = has_image || field == 4;
      has_tensor = has_tensor || field == 8;
      EFFNET_RETURN_IF_ERROR(r.Skip(type));
    } else if (field == 9) {
      EFFNET_RETURN_IF_ERROR(r.Expect(field, type, kLengthDelimited));
      std::string_view s;
      EFFNET_RETURN_IF_ERROR(r.Bytes(&s));
      EFFNET_RETURN_IF_ERROR(DecodeMetadata(s, &plugin));
    } else {
      EFFNET_RETURN_IF_ERROR(r.Skip(type));
    }
  }
  if (has_scalar) ev->scalars.emplace_back(tag, value);
  if (has_image || (has_tensor && plugin.plugin_name == "images")) ev->image_tags.push_back(tag);
  if (!plugin.plugin_name.empty()) {
    plugin.tag = tag;
    ev->plugin_values.push_back(std::move(plugin));
  }
  return Status::Ok();
}

Status DecodeSummary(std::string_view bytes, EventProto* ev) {
  WireReader r(bytes, "Summary");
  while (!r.done()) {
    uint32_t field, type;
    EFFNET_RETURN_IF_ERROR(r.Key(&field, &type));
    if (field == 1) {
      EFFNET_RETURN_IF_ERROR(r.Expect(field, type, kLengthDelimited));
      std::string_view v;
      EFFNET_RETURN_IF_ERROR(r.Bytes(&v));
      EFFNET_RETURN_IF_ERROR(DecodeSummaryValue(v, ev));
    } else {
      EFFNET_RETURN_IF_ERROR(r.Skip(type));
    }
  }
  return Status::Ok();
}

}  // namespace

std::string EncodeTfRecord(std::string_view data) {
  std::string out;
  out.reserve(data.size() + 16);
  PutLittleEndian(&out, data.size(), 8);
  PutLittleEndian(&out, MaskCrc(Crc32c(out.data(), 8)), 4);
  out.append(data.data(), data.size());
  PutLittleEndian(&out, MaskCrc(Crc32c(data)), 4);
  return out;
}

Result<std::vector<std::string>> DecodeTfRecords(std::string_view bytes,
                                                 const std::string& source) {
  std::vector<std::string> records;
  size_t pos = 0;
  while (pos < bytes.size()) {
    const std::string where =
        source + ": record " + std::to_string(records.size()) + " at byte " + std::to_string(pos);
    if (bytes.size() - pos < 12) return DataLoss(where + ": truncated header");
    const uint64_t len = GetLittleEndian(bytes.data() + pos, 8);
    const auto len_crc = static_cast<uint32_t>(GetLittleEndian(bytes.data() + pos + 8, 4));
    if (UnmaskCrc(len_crc) != Crc32c(bytes.data() + pos, 8)) {
      return DataLoss(where + ": length CRC mismatch");
    }
    pos += 12;
    if (len > bytes.size() - pos || bytes.size() - pos - len < 4) {
      return DataLoss(where + ": truncated data (length " + std::to_string(len) + ")");
    }
    std::string_view data = bytes.substr(pos, len);
    const auto data_crc = static_cast<uint32_t>(GetLittleEndian(bytes.data() + pos + len, 4));
    if (UnmaskCrc(data_crc) != Crc32c(data)) return DataLoss(where + ": data CRC mismatch");
    records.emplace_back(data);
    pos += len + 4;
  }
  return records;
}

Result<std::vector<std::string>> ReadTfRecordFile(const std::string& path) {
  EFFNET_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  return DecodeTfRecords(bytes, path);
}

std::string EncodeFileVersionEvent(double wall_time, const std::string& file_version) {
  std::string ev;
  PutDouble(&ev, 1, wall_time);
  PutBytes(&ev, 3, file_version);
  return ev;
}

std::string EncodeScalarEvent(double wall_time, int64_t step, const std::string& tag, float value) {
  std::string val;
  PutBytes(&val, 1, tag);
  PutFloat(&val, 2, value);
  std::string summary;
  PutBytes(&summary, 1, val);
  std::string ev;
  PutDouble(&ev, 1, wall_time);
  PutInt64(&ev, 2, step);
  PutBytes(&ev, 5, summary);
  return ev;
}

namespace {

void PutInt32(std::string* out, uint32_t field, int32_t v) {
  PutKey(out, field, kVarint);
  PutVarint(out, static_cast<uint64_t>(static_cast<int64_t>(v)));
}

std::string SummaryEvent(double wall_time, int64_t step, const std::string& value) {
  std::string summary;
  PutBytes(&summary, 1, value);
  std::string ev;
  PutDouble(&ev, 1, wall_time);
  PutInt64(&ev, 2, step);
  PutBytes(&ev, 5, summary);
  return ev;
}

// Summary.Value{tag, metadata{plugin_data{plugin_name, content}}} without a value, as
// tensorboard/plugins/hparams/summary.py writes it.
std::string PluginValue(const std::string& tag, const std::string& plugin,
                        const std::string& content) {
  std::string plugin_data;
  PutBytes(&plugin_data, 1, plugin);
  PutBytes(&plugin_data, 2, content);
  std::string metadata;
  PutBytes(&metadata, 1, plugin_data);
  std::string value;
  PutBytes(&value, 1, tag);
  PutBytes(&value, 9, metadata);
  return value;
}

// google.protobuf.Value: number_value double = 2, string_value string = 3, bool_value bool = 4.
std::string ProtobufValue(const std::variant<double, std::string, bool>& v) {
  std::string out;
  if (const auto* d = std::get_if<double>(&v)) {
    PutDouble(&out, 2, *d);
  } else if (const auto* s = std::get_if<std::string>(&v)) {
    PutBytes(&out, 3, *s);
  } else {
    PutKey(&out, 4, kVarint);
    PutVarint(&out, std::get<bool>(v) ? 1 : 0);
  }
  return out;
}

}  // namespace

// Note [image summaries]: the images plugin's own form (what tf.summary.image writes), not the
// legacy Summary.Value.image: TensorBoard's fast (Rust) loader drops a legacy image's description.
// Summary.Value{tag, metadata{plugin_data{plugin_name "images"}, summary_description,
// data_class = 3 (blob sequence)}, tensor = 8: TensorProto{dtype = 1: 7 (string), tensor_shape =
// 2: {dim = 2: {size = 1: 3}}, string_val = 8: [width, height, PNG bytes]}}.
std::string EncodeImageEvent(double wall_time, int64_t step, const std::string& tag,
                             const std::string& png, int width, int height,
                             const std::string& description) {
  std::string dim;
  PutInt64(&dim, 1, 3);
  std::string shape;
  PutBytes(&shape, 2, dim);
  std::string tensor;
  PutInt32(&tensor, 1, 7);  // DT_STRING
  PutBytes(&tensor, 2, shape);
  PutBytes(&tensor, 8, std::to_string(width));
  PutBytes(&tensor, 8, std::to_string(height));
  PutBytes(&tensor, 8, png);
  std::string plugin_data;
  PutBytes(&plugin_data, 1, "images");
  std::string metadata;
  PutBytes(&metadata, 1, plugin_data);
  if (!description.empty()) PutBytes(&metadata, 3, description);
  PutInt32(&metadata, 4, 3);  // DATA_CLASS_BLOB_SEQUENCE
  std::string value;
  PutBytes(&value, 1, tag);
  PutBytes(&value, 9, metadata);
  PutBytes(&value, 8, tensor);
  return SummaryEvent(wall_time, step, value);
}

// Note [hparams records]: HParamsPluginData{version = 1 (0 today), experiment = 2 |
// session_start_info = 3 | session_end_info = 4} in plugin "hparams" under the tags
// "_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info".
// Experiment{hparam_infos = 4 (HParamInfo{name = 1, type = 4: 1 string, 2 bool, 3 float64}),
// metric_infos = 5 (MetricInfo{name = 1: MetricName{group = 1, tag = 2}})}.
// SessionStartInfo{hparams = 1: map<string, google.protobuf.Value>, start_time_secs = 5}.
// SessionEndInfo{status = 1: 1 success, 2 failure; end_time_secs = 2}.
std::vector<std::string> EncodeHparamsEvents(double wall_time, const std::vector<HParam>& hparams,
                                             const std::vector<std::string>& metric_tags,
                                             bool success) {
  constexpr int32_t kPluginDataVersion = 0;
  auto plugin_data = [&](uint32_t field, const std::string& message) {
    std::string out;
    PutInt32(&out, 1, kPluginDataVersion);
    PutBytes(&out, field, message);
    return out;
  };
  std::string experiment;
  for (const auto& h : hparams) {
    std::string info;
    PutBytes(&info, 1, h.name);
    PutInt32(&info, 4,
             std::holds_alternative<double>(h.value)        ? 3
             : std::holds_alternative<std::string>(h.value) ? 1
                                                            : 2);
    PutBytes(&experiment, 4, info);
  }
  for (const auto& tag : metric_tags) {
    std::string name;
    PutBytes(&name, 2, tag);
    std::string info;
    PutBytes(&info, 1, name);
    PutBytes(&experiment, 5, info);
  }
  std::string start;
  for (const auto& h : hparams) {
    std::string entry;
    PutBytes(&entry, 1, h.name);
    PutBytes(&entry, 2, ProtobufValue(h.value));
    PutBytes(&start, 1, entry);
  }
  PutDouble(&start, 5, wall_time);
  std::string end;
  PutInt32(&end, 1, success ? 1 : 2);
  PutDouble(&end, 2, wall_time);
  return {
      SummaryEvent(wall_time, 0,
                   PluginValue("_hparams_/experiment", "hparams", plugin_data(2, experiment))),
      SummaryEvent(wall_time, 0,
                   PluginValue("_hparams_/session_start_info", "hparams", plugin_data(3, start))),
      SummaryEvent(wall_time, 0,
                   PluginValue("_hparams_/session_end_info", "hparams", plugin_data(4, end)))};
}

Result<EventProto> DecodeEvent(std::string_view bytes) {
  EventProto ev;
  WireReader r(bytes, "Event");
  while (!r.done()) {
    uint32_t field, type;
    EFFNET_RETURN_IF_ERROR(r.Key(&field, &type));
    if (field == 1) {
      EFFNET_RETURN_IF_ERROR(r.Expect(field, type, kFixed64));
      uint64_t bits;
      EFFNET_RETURN_IF_ERROR(r.Fixed(8, &bits));
      std::memcpy(&ev.wall_time, &bits, sizeof ev.wall_time);
    } else if (field == 2) {
      EFFNET_RETURN_IF_ERROR(r.Expect(field, type, kVarint));
      uint64_t v;
      EFFNET_RETURN_IF_ERROR(r.Varint(&v));
      ev.step = static_cast<int64_t>(v);
    } else if (field == 3) {
      EFFNET_RETURN_IF_ERROR(r.Expect(field, type, kLengthDelimited));
      std::string_view s;
      EFFNET_RETURN_IF_ERROR(r.Bytes(&s));
      ev.file_version.assign(s);
    } else if (field == 5) {
      EFFNET_RETURN_IF_ERROR(r.Expect(field, type, kLengthDelimited));
      std::string_view s;
      EFFNET_RETURN_IF_ERROR(r.Bytes(&s));
      EFFNET_RETURN_IF_ERROR(DecodeSummary(s, &ev));
    } else {
      EFFNET_RETURN_IF_ERROR(r.Skip(type));
    }
  }
  return ev;
}

}  // namespace effnet::report
