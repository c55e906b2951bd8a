// State dicts: the name -> tensor maps that every weights format here carries, the two file
// formats they are read from and written to, and name-matched loading into a module.
//
// Formats (chosen by content when reading, by extension when writing):
// - torch zip (".pt", ".pth", anything not ".safetensors"): the format of Python torch.save;
//   worker/formats/torch_zip.h.
// - safetensors (".safetensors"): worker/formats/safetensors.h.
//
// Our checkpoints are directories (worker/formats/checkpoint.h); their model.safetensors is a
// state dict in this sense, with timm's key names.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/ordered_dict.h>

#include <string>
#include <vector>

#include "common/status.h"

namespace torch::nn {
class Module;
}

namespace effnet::formats {

// Ordered name -> tensor map (a state_dict).
using StateDict = torch::OrderedDict<std::string, at::Tensor>;

enum class WeightsFormat { kTorchZip, kSafetensors };

// "torch zip" | "safetensors": for error messages.
const char* FormatName(WeightsFormat format);

// Parameters and buffers in module registration order (timm's key order), detached, sharing
// storage with the module. Buffers include BatchNorm's running_mean, running_var and
// num_batches_tracked (int64, shape []), as in PyTorch's state_dict().
StateDict GetStateDict(const torch::nn::Module& module);

// By extension: ".safetensors" -> kSafetensors, else kTorchZip.
WeightsFormat FormatForPath(const std::string& path);

// The format of an existing file from its first bytes ("PK\3\4": torch zip; else safetensors,
// whose parser checks every byte). A legacy (pre-1.6, non-zip) torch.save file is an error.
Result<WeightsFormat> DetectFormat(const std::string& path);

// Reads either format (DetectFormat). Tensors are on the CPU.
Result<StateDict> ReadStateDict(const std::string& path);
// Writes atomically (common/atomic_file.h) in the format of the path's extension.
Status WriteStateDict(const std::string& path, const StateDict& dict);

struct LoadOptions {
  // Keys starting with one of these are neither loaded nor required (e.g. "classifier.").
  std::vector<std::string> skip_prefixes;
  // Keys ending in "num_batches_tracked" may be absent from the file (timm exports without them).
  bool allow_missing_num_batches_tracked = true;
};

// Copies `dict` into the module's parameters and buffers by name (dtype/device converted). Every
// problem is an error naming the key: missing ("missing key 'x' (model shape [..])"), unexpected
// ("unexpected key 'y' (file shape [..])"), mis-shaped ("shape mismatch for 'z': model [..] vs
// file [..]"). Nothing is copied unless every key checks out.
Status LoadStateDict(torch::nn::Module& module, const StateDict& dict,
                     const LoadOptions& options = {});

// Weights import: reads `path` (either format) and loads it by name. Errors name the path, the
// format and, from LoadStateDict, the key with both shapes.
Status ImportWeights(torch::nn::Module& module, const std::string& path,
                     const LoadOptions& options = {});
// Weights export: the module's state dict in the format of the path's extension.
Status ExportWeights(const torch::nn::Module& module, const std::string& path);

// "[1280, 192, 1, 1]"
std::string ShapeString(at::IntArrayRef sizes);

}  // namespace effnet::formats
