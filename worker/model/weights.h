// Weights: state_dict files in two formats, name-matched loading, timm import and transfer.
//
// Formats (chosen by content when reading, by extension when writing):
// - torch zip (".pt", ".pth", anything not ".safetensors"): the format of Python torch.save.
//   Written with torch::pickle_save of a Dict[str, Tensor] (Python torch.load, weights_only=True
//   included, returns a dict). Read with our own restricted unpickler (torch_pickle.h) because
//   torch::pickle_load cannot read Python's state_dict: the OrderedDict that torch.save writes
//   unpickles to None in LibTorch 2.11 ("Expected GenericDict but got None", checked).
// - safetensors (".safetensors"): 8-byte little-endian header length, JSON header
//   {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, raw little-endian data; parsed
//   and written here (Python safetensors.torch.load_file reads what we write).
//
// Note [checkpoint = state_dict]: our checkpoints are the model's state_dict in the torch zip
// format with timm's key names, so a checkpoint, a timm export and an import are the same file
// shape. Callers may add their own tensors (e.g. "optimizer.<...>") to the map they write.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/ordered_dict.h>

#include <string>
#include <vector>

#include "common/status.h"
#include "worker/model/efficientnet.h"

namespace torch::nn {
class Module;
}

namespace effnet::model {

// Ordered name -> tensor map (a state_dict).
using StateDict = torch::OrderedDict<std::string, at::Tensor>;

enum class WeightsFormat { kTorchZip, kSafetensors };

// Parameters and buffers in module registration order (timm's key order), detached, sharing
// storage with the module.
StateDict GetStateDict(const torch::nn::Module& module);

// By extension: ".safetensors" -> kSafetensors, else kTorchZip.
WeightsFormat FormatForPath(const std::string& path);

// Reads either format (detected from the first bytes). Tensors are on the CPU.
Result<StateDict> ReadStateDict(const std::string& path);
// Writes atomically (common/atomic_file.h) in the format of the path's extension.
Status WriteStateDict(const std::string& path, const StateDict& dict);

Result<StateDict> ReadSafetensors(const std::string& path);
Status WriteSafetensors(const std::string& path, const StateDict& dict);
Result<StateDict> ReadTorchZip(const std::string& path);
Status WriteTorchZip(const std::string& path, const StateDict& dict);

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

// Our checkpoints (Note [checkpoint = state_dict]).
Status SaveCheckpoint(const torch::nn::Module& module, const std::string& path);
Status LoadCheckpoint(torch::nn::Module& module, const std::string& path);

// Transfer learning as in the study: load a backbone, new classifier for the model's classes.
struct TransferOptions {
  // Always re-initialise the classifier, even when the file's classifier has the right shape.
  bool reset_classifier = false;
  // EfficientNetV2Impl::freeze_stages(k) after loading; < 0 freezes nothing.
  int freeze_stages = -1;
};

// Loads every backbone key of `path` (a timm tf_efficientnetv2_* export in either format, or one
// of our checkpoints) into `model`. The file's classifier is loaded only when its shape matches
// the model's and reset_classifier is false; otherwise the model gets a fresh classifier for its
// num_classes. A missing/unexpected/mis-shaped backbone key is an error.
Status LoadPretrained(EfficientNetV2Impl& model, const std::string& path,
                      const TransferOptions& options = {});

// "[1280, 192, 1, 1]"
std::string ShapeString(at::IntArrayRef sizes);

}  // namespace effnet::model
