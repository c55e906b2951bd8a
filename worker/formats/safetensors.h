// safetensors (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then the raw
// little-endian tensor data. Read and written here; Python's safetensors.torch.load_file reads
// what we write, and we read what its save_file writes.
#pragma once

#include <string>

#include "common/status.h"
#include "worker/formats/state_dict.h"

namespace effnet::formats {

// Tensors come back on the CPU in the file's data order (the writer's order).
Result<StateDict> ReadSafetensors(const std::string& path);
// The same from a file's bytes already in memory; `name` (the file) goes into error messages.
Result<StateDict> ParseSafetensors(const std::string& bytes, const std::string& name);
// The bytes of a safetensors file holding `dict` (contiguous CPU copies, in dict order, the data
// section 8-byte aligned as the reference writer does).
Result<std::string> SafetensorsBytes(const StateDict& dict);
// Writes SafetensorsBytes atomically (common/atomic_file.h).
Status WriteSafetensors(const std::string& path, const StateDict& dict);

}  // namespace effnet::formats
