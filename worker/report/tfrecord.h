// TFRecord framing and the few TensorBoard Event protos the report writes, hand-encoded in the
// protobuf wire format (no protobuf dependency). The decoder exists for tests and for tools that
// want to read an event file back; it checks every CRC.
//
// TFRecord: uint64 length (little endian), uint32 masked crc32c(length bytes), data,
// uint32 masked crc32c(data).
// Event (tensorflow/core/util/event.proto): wall_time double = 1, step int64 = 2,
// file_version string = 3, summary Summary = 5. Summary: repeated Value value = 1.
// Summary.Value: tag string = 1, simple_value float = 2.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace effnet::report {

// Frames one record.
std::string EncodeTfRecord(std::string_view data);

// Splits a whole TFRecord file's bytes into records. Errors name `source`, the record index and
// byte offset (truncation, length CRC or data CRC mismatch).
Result<std::vector<std::string>> DecodeTfRecords(std::string_view bytes, const std::string& source);
Result<std::vector<std::string>> ReadTfRecordFile(const std::string& path);

struct EventProto {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;                            // set only in the first event of a file
  std::vector<std::pair<std::string, float>> scalars;  // Summary.Value (tag, simple_value)
};

// Event with file_version (the first record of every event file; TensorBoard expects
// "brain.Event:2").
std::string EncodeFileVersionEvent(double wall_time, const std::string& file_version);
// Event with one Summary.Value carrying simple_value.
std::string EncodeScalarEvent(double wall_time, int64_t step, const std::string& tag, float value);

// Decodes the fields above, skipping unknown ones; malformed wire data is DataLoss.
Result<EventProto> DecodeEvent(std::string_view bytes);

}  // namespace effnet::report
