// TFRecord framing and the few TensorBoard Event protos the report writes, hand-encoded in the
// protobuf wire format (no protobuf dependency). The decoder exists for tests and for tools that
// want to read an event file back; it checks every CRC.
//
// TFRecord: uint64 length (little endian), uint32 masked crc32c(length bytes), data,
// uint32 masked crc32c(data).
// Event (tensorflow/core/util/event.proto): wall_time double = 1, step int64 = 2,
// file_version string = 3, summary Summary = 5. Summary: repeated Value value = 1.
// Summary.Value: tag string = 1, simple_value float = 2, image Image = 4 (legacy), tensor
// TensorProto = 8, metadata SummaryMetadata = 9. SummaryMetadata: plugin_data PluginData = 1
// (plugin_name = 1, content = 2), summary_description = 3, data_class = 4. Images are written in
// the images plugin's tensor form (Note [image summaries] in tfrecord.cpp).
// The hparams plugin's content (tensorboard/plugins/hparams/plugin_data.proto, api.proto) is
// documented at EncodeHparamsEvents.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "worker/report/report.h"

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
  std::vector<std::string> image_tags;                 // Summary.Value with an image (either form)
  // Summary.Value with plugin metadata: (tag, plugin_name, content).
  struct PluginValue {
    std::string tag, plugin_name, content;
  };
  std::vector<PluginValue> plugin_values;
};

// Event with file_version (the first record of every event file; TensorBoard expects
// "brain.Event:2").
std::string EncodeFileVersionEvent(double wall_time, const std::string& file_version);
// Event with one Summary.Value carrying simple_value.
std::string EncodeScalarEvent(double wall_time, int64_t step, const std::string& tag, float value);

// Event with one image summary (images plugin, PNG bytes) and its description.
std::string EncodeImageEvent(double wall_time, int64_t step, const std::string& tag,
                             const std::string& png, int width, int height,
                             const std::string& description);
// The hparams plugin's three events (experiment, session start, session end) of one run.
std::vector<std::string> EncodeHparamsEvents(double wall_time, const std::vector<HParam>& hparams,
                                             const std::vector<std::string>& metric_tags,
                                             bool success);

// Decodes the fields above, skipping unknown ones; malformed wire data is DataLoss.
Result<EventProto> DecodeEvent(std::string_view bytes);

}  // namespace effnet::report
