#include "worker/formats/state_dict.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "worker/formats/safetensors.h"
#include "worker/formats/torch_zip.h"

namespace effnet::formats {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

const char* FormatName(WeightsFormat format) {
  return format == WeightsFormat::kSafetensors ? "safetensors" : "torch zip";
}

std::string ShapeString(at::IntArrayRef sizes) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < sizes.size(); ++i) os << (i ? ", " : "") << sizes[i];
  os << "]";
  return os.str();
}

StateDict GetStateDict(const torch::nn::Module& module) {
  StateDict out;
  auto add = [&](const torch::nn::Module& m, const std::string& prefix) {
    for (const auto& p : m.named_parameters(/*recurse=*/false)) {
      out.insert(prefix + p.key(), p.value().detach());
    }
    for (const auto& b : m.named_buffers(/*recurse=*/false)) {
      out.insert(prefix + b.key(), b.value().detach());
    }
  };
  // The module itself first, then its descendants in registration order. Not
  // named_modules(include_self=true): that needs a module owned by a shared_ptr.
  add(module, "");
  for (const auto& item : module.named_modules("", /*include_self=*/false)) {
    add(*item.value(), item.key() + ".");
  }
  return out;
}

WeightsFormat FormatForPath(const std::string& path) {
  return EndsWith(path, ".safetensors") ? WeightsFormat::kSafetensors : WeightsFormat::kTorchZip;
}

// A legacy torch.save file starts with a pickle PROTO opcode (0x80).
Result<WeightsFormat> DetectFormat(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return NotFound("reading " + path + ": cannot open");
  char head[4] = {0, 0, 0, 0};
  f.read(head, 4);
  if (f.gcount() == 4 && std::memcmp(head, "PK\x03\x04", 4) == 0) return WeightsFormat::kTorchZip;
  if (f.gcount() == 4 && static_cast<unsigned char>(head[0]) == 0x80) {
    return InvalidArgument("reading " + path +
                           ": legacy (non-zip) torch.save format; re-save with torch.save(sd, f) "
                           "from torch >= 1.6 defaults");
  }
  return WeightsFormat::kSafetensors;
}

Result<StateDict> ReadStateDict(const std::string& path) {
  EFFNET_ASSIGN_OR_RETURN(WeightsFormat format, DetectFormat(path));
  return format == WeightsFormat::kTorchZip ? ReadTorchZip(path) : ReadSafetensors(path);
}

Status WriteStateDict(const std::string& path, const StateDict& dict) {
  return FormatForPath(path) == WeightsFormat::kSafetensors ? WriteSafetensors(path, dict)
                                                            : WriteTorchZip(path, dict);
}

Status LoadStateDict(torch::nn::Module& module, const StateDict& dict, const LoadOptions& options) {
  auto skipped = [&](const std::string& key) {
    for (const auto& p : options.skip_prefixes) {
      if (StartsWith(key, p)) return true;
    }
    return false;
  };
  StateDict target = GetStateDict(module);
  std::vector<std::string> problems;
  for (const auto& item : target) {
    if (skipped(item.key())) continue;
    const at::Tensor* src = dict.find(item.key());
    if (!src) {
      if (options.allow_missing_num_batches_tracked &&
          EndsWith(item.key(), "num_batches_tracked")) {
        continue;
      }
      problems.push_back("missing key '" + item.key() + "' (model shape " +
                         ShapeString(item.value().sizes()) + ")");
    } else if (src->sizes() != item.value().sizes()) {
      problems.push_back("shape mismatch for '" + item.key() + "': model " +
                         ShapeString(item.value().sizes()) + " vs file " +
                         ShapeString(src->sizes()));
    }
  }
  for (const auto& item : dict) {
    if (skipped(item.key()) || target.contains(item.key())) continue;
    problems.push_back("unexpected key '" + item.key() + "' (file shape " +
                       ShapeString(item.value().sizes()) + ")");
  }
  if (!problems.empty()) {
    std::string msg = std::to_string(problems.size()) + " state_dict problem(s): ";
    const size_t shown = std::min<size_t>(problems.size(), 8);
    for (size_t i = 0; i < shown; ++i) msg += (i ? "; " : "") + problems[i];
    if (shown < problems.size()) msg += "; ...";
    return InvalidArgument(msg);
  }
  torch::NoGradGuard no_grad;
  for (auto& item : target) {
    if (skipped(item.key())) continue;
    const at::Tensor* src = dict.find(item.key());
    if (src) item.value().copy_(*src);
  }
  return Status::Ok();
}

Status ImportWeights(torch::nn::Module& module, const std::string& path,
                     const LoadOptions& options) {
  EFFNET_ASSIGN_OR_RETURN(WeightsFormat format, DetectFormat(path));
  EFFNET_ASSIGN_OR_RETURN(StateDict dict, ReadStateDict(path));
  return LoadStateDict(module, dict, options)
      .WithContext("importing " + path + " (" + FormatName(format) + ")");
}

Status ExportWeights(const torch::nn::Module& module, const std::string& path) {
  return WriteStateDict(path, GetStateDict(module));
}

}  // namespace effnet::formats
