#include "worker/formats/pretrained.h"

#include <torch/nn/init.h>

#include <cstring>
#include <fstream>
#include <set>

#include "common/log.h"
#include "worker/formats/keras.h"
#include "worker/formats/state_dict.h"

namespace effnet::formats {
namespace {

// The shape of a timm-keyed EfficientNetV2 state dict, compared against architecture.h's table.
struct Shape {
  int64_t stem = -1, head = -1, blocks = 0;
  std::string ToString() const {
    return "stem " + std::to_string(stem) + ", head " + std::to_string(head) + ", " +
           std::to_string(blocks) + " blocks";
  }
};

Shape ShapeOfDict(const StateDict& dict) {
  Shape s;
  std::set<std::string> blocks;  // "S.I"
  for (const auto& item : dict) {
    const std::string& k = item.key();
    if (k == "conv_stem.weight") s.stem = item.value().size(0);
    if (k == "conv_head.weight") s.head = item.value().size(0);
    if (k.rfind("blocks.", 0) == 0) {
      const auto a = k.find('.', 7);
      const auto b = a == std::string::npos ? a : k.find('.', a + 1);
      if (b != std::string::npos) blocks.insert(k.substr(7, b - 7));
    }
  }
  s.blocks = static_cast<int64_t>(blocks.size());
  return s;
}

Shape ShapeOfArchitecture(const model::Architecture& a) {
  return {a.stem_channels, a.head_channels, a.num_blocks()};
}

bool SameShape(const Shape& a, const Shape& b) {
  return a.stem == b.stem && a.head == b.head && a.blocks == b.blocks;
}

// For a file that does not load: "" when its stem/head/blocks match the model, else which
// variant it looks like.
std::string ArchitectureHint(const model::EfficientNetV2Impl& model, const StateDict& dict) {
  const Shape file = ShapeOfDict(dict);
  const Shape want = ShapeOfArchitecture(model.architecture());
  if (SameShape(file, want)) return "";
  std::string looks = "no known variant";
  for (const auto& v : model::KnownVariants()) {
    model::ModelConfig c;
    c.variant = v;
    c.num_classes = 1;
    if (SameShape(file, ShapeOfArchitecture(model::ResolveArchitecture(c)))) {
      looks = "variant '" + v + "'";
      break;
    }
  }
  return "the file looks like " + looks + " (" + file.ToString() + "), the model is variant '" +
         model.config().variant + "' (" + want.ToString() + ")";
}

Result<StateDict> ReadPretrainedDict(const std::string& path, PretrainedFormat format,
                                     const model::ModelConfig& expect) {
  if (format == PretrainedFormat::kKeras) return ReadKerasWeights(path, expect);
  return ReadStateDict(path);
}

// The first member's name of the zip at `path` ("" when unreadable).
std::string FirstZipMember(std::ifstream& f) {
  unsigned char header[30] = {};
  f.clear();
  f.seekg(0);
  if (!f.read(reinterpret_cast<char*>(header), sizeof(header))) return "";
  const size_t len = header[26] | (header[27] << 8);
  std::string name(len, '\0');
  if (!f.read(name.data(), static_cast<std::streamsize>(len))) return "";
  return name;
}

}  // namespace

const char* PretrainedFormatName(PretrainedFormat format) {
  switch (format) {
    case PretrainedFormat::kSafetensors:
      return "safetensors";
    case PretrainedFormat::kTorchZip:
      return "torch zip";
    case PretrainedFormat::kKeras:
      return "Keras";
  }
  return "?";
}

Result<PretrainedFormat> DetectPretrainedFormat(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return NotFound("pretrained weights " + path + ": cannot open");
  unsigned char head[9] = {};
  f.read(reinterpret_cast<char*>(head), sizeof(head));
  const auto n = f.gcount();
  if (n >= 4 && std::memcmp(head, "PK\x03\x04", 4) == 0) {
    const std::string first = FirstZipMember(f);
    const bool keras =
        first == "metadata.json" || first == "config.json" || first == "model.weights.h5";
    return keras ? PretrainedFormat::kKeras : PretrainedFormat::kTorchZip;
  }
  if (n >= 8 && std::memcmp(head, "\x89HDF\r\n\x1a\n", 8) == 0) return PretrainedFormat::kKeras;
  uint64_t header_len = 0;
  for (int i = 7; i >= 0 && n >= 8; --i) header_len = (header_len << 8) | head[i];
  if (n == 9 && head[8] == '{' && header_len >= 2 && header_len < (uint64_t{1} << 32)) {
    return PretrainedFormat::kSafetensors;
  }
  char hex[3 * sizeof(head) + 1] = {};
  for (std::streamsize i = 0; i < n; ++i) std::snprintf(hex + 3 * i, 4, "%02x ", head[i]);
  return InvalidArgument("pretrained weights " + path +
                         ": not safetensors, torch zip or Keras (first bytes: " + std::string(hex) +
                         ")");
}

Status LoadPretrained(model::EfficientNetV2Impl& model, const std::string& path,
                      const TransferOptions& options) {
  EFFNET_ASSIGN_OR_RETURN(PretrainedFormat format, DetectPretrainedFormat(path));
  const std::string what = "importing " + path + " (" + PretrainedFormatName(format) + ")";
  EFFNET_ASSIGN_OR_RETURN(StateDict dict, ReadPretrainedDict(path, format, model.config()));
  if (format == PretrainedFormat::kKeras && !options.normalize.empty()) {
    EFFNET_ASSIGN_OR_RETURN(KerasPreprocessing pre,
                            ReadKerasPreprocessing(path, model.config().variant));
    if (pre.normalize != options.normalize) {
      return InvalidArgument(what + ": the Keras model normalises its input as '" + pre.normalize +
                             "' (" + pre.source + ") but augment.normalize is '" +
                             options.normalize + "'; set augment.normalize=" + pre.normalize +
                             " to reproduce its outputs");
    }
  }
  const at::Tensor* w = dict.find("classifier.weight");
  const at::Tensor* b = dict.find("classifier.bias");
  const int classes = model.config().num_classes;
  const bool same_head = w && b && w->dim() == 2 && w->size(0) == classes &&
                         w->size(1) == model.architecture().head_channels;
  LoadOptions lo;
  const bool load_head = same_head && !options.reset_classifier;
  if (!load_head) lo.skip_prefixes.push_back("classifier.");
  if (Status st = LoadStateDict(model, dict, lo); !st.ok()) {
    const std::string hint = ArchitectureHint(model, dict);
    if (!hint.empty()) st = st.WithContext(hint);
    return st.WithContext(what);
  }
  if (!load_head) {
    model.reset_classifier(classes);
    log::Info("pretrained " + path + ": backbone loaded, classifier re-initialised (" +
              model::HeadInitNames().at(static_cast<size_t>(model.config().head_init)) + ") for " +
              std::to_string(classes) + " classes" +
              (w ? " (file had " + ShapeString(w->sizes()) + ")" : ""));
  } else {
    log::Info("pretrained " + path + ": backbone and classifier loaded");
  }
  if (options.freeze_stages < 0) return Status::Ok();
  try {
    model.freeze_stages(options.freeze_stages);
  } catch (const StatusError& e) {
    return e.status();
  }
  return Status::Ok();
}

}  // namespace effnet::formats
