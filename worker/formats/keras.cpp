#include "worker/formats/keras.h"

#include <ATen/ATen.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "storage/h5util.h"

namespace effnet::formats {
namespace {

namespace h5 = storage::h5;
using Shape = std::vector<int64_t>;

std::string Str(const Shape& s) { return ShapeString(s); }

// ---------------------------------------------------------------------------------------------
// What keras.applications.efficientnet_v2 builds, in its construction order (= model.layers).

enum class Kind { kConv, kDepthwise, kConvBias, kBn };

struct KerasLayer {
  std::string name;  // "block2a_expand_conv"
  std::string cls;   // Keras 3 storage class: conv2d | depthwise_conv2d | batch_normalization
  std::string timm;  // "blocks.1.0.conv_pw"
  Kind kind = Kind::kConv;
  Shape shape;  // Keras layout: conv [kh, kw, in, out], depthwise [kh, kw, C, 1], BN [C]
};

// Keras variable names of a layer in storage order (Keras 3 `vars/<i>`), and our names.
const std::vector<std::string>& KerasVars(Kind k) {
  static const std::vector<std::string> conv{"kernel"}, conv_bias{"kernel", "bias"},
      bn{"gamma", "beta", "moving_mean", "moving_variance"};
  switch (k) {
    case Kind::kConv:
    case Kind::kDepthwise:
      return conv;
    case Kind::kConvBias:
      return conv_bias;
    case Kind::kBn:
      return bn;
  }
  return conv;
}
const char* TimmVar(Kind k, size_t i) {
  static const char* conv[] = {"weight", "bias"};
  static const char* bn[] = {"weight", "bias", "running_mean", "running_var"};
  return k == Kind::kBn ? bn[i] : conv[i];
}
Shape VarShape(const KerasLayer& l, size_t i) {
  if (l.kind == Kind::kBn) return l.shape;
  if (i == 1) return {l.shape[3]};  // conv bias
  return l.shape;
}

std::vector<KerasLayer> BackboneLayers(const model::ModelConfig& config) {
  const model::Architecture a = model::ResolveArchitecture(config);
  std::vector<KerasLayer> out;
  auto conv = [&](std::string name, std::string timm, int k, int in, int o, Kind kind) {
    const bool dw = kind == Kind::kDepthwise;
    out.push_back({std::move(name),
                   dw ? "depthwise_conv2d" : "conv2d",
                   std::move(timm),
                   kind,
                   {k, k, in, dw ? 1 : o}});
  };
  auto bn = [&](std::string name, std::string timm, int c) {
    out.push_back({std::move(name), "batch_normalization", std::move(timm), Kind::kBn, {c}});
  };
  conv("stem_conv", "conv_stem", 3, 3, a.stem_channels, Kind::kConv);
  bn("stem_bn", "bn1", a.stem_channels);
  int in = a.stem_channels;
  for (size_t s = 0; s < a.stages.size(); ++s) {
    const model::StageInfo& st = a.stages[s];
    for (int j = 0; j < st.repeats; ++j) {
      const std::string k = "block" + std::to_string(s + 1) + static_cast<char>('a' + j) + "_";
      const std::string t = "blocks." + std::to_string(s) + "." + std::to_string(j) + ".";
      const int o = st.out_channels;
      const int mid = model::MakeDivisible(in * st.expansion);
      if (st.block_type == "cn") {
        conv(k + "project_conv", t + "conv", st.kernel, in, o, Kind::kConv);
        bn(k + "project_bn", t + "bn1", o);
      } else if (st.block_type == "er") {
        conv(k + "expand_conv", t + "conv_exp", st.kernel, in, mid, Kind::kConv);
        bn(k + "expand_bn", t + "bn1", mid);
        conv(k + "project_conv", t + "conv_pwl", 1, mid, o, Kind::kConv);
        bn(k + "project_bn", t + "bn2", o);
      } else {
        conv(k + "expand_conv", t + "conv_pw", 1, in, mid, Kind::kConv);
        bn(k + "expand_bn", t + "bn1", mid);
        conv(k + "dwconv2", t + "conv_dw", st.kernel, mid, mid, Kind::kDepthwise);
        bn(k + "bn", t + "bn2", mid);
        if (st.se) {
          const int rd = model::SeReduced(in);
          conv(k + "se_reduce", t + "se.conv_reduce", 1, mid, rd, Kind::kConvBias);
          conv(k + "se_expand", t + "se.conv_expand", 1, rd, mid, Kind::kConvBias);
        }
        conv(k + "project_conv", t + "conv_pwl", 1, mid, o, Kind::kConv);
        bn(k + "project_bn", t + "bn3", o);
      }
      in = o;
    }
  }
  conv("top_conv", "conv_head", 1, in, a.head_channels, Kind::kConv);
  bn("top_bn", "bn2", a.head_channels);
  return out;
}

const char* KerasModelName(const std::string& variant) {
  static const std::map<std::string, const char*> names{
      {"b0", "EfficientNetV2B0"}, {"b1", "EfficientNetV2B1"}, {"b2", "EfficientNetV2B2"},
      {"b3", "EfficientNetV2B3"}, {"s", "EfficientNetV2S"},   {"m", "EfficientNetV2M"},
      {"l", "EfficientNetV2L"}};
  auto it = names.find(variant);
  return it == names.end() ? "?" : it->second;
}

// ---------------------------------------------------------------------------------------------
// The file: every dataset with its shape, grouped into layers.

enum class Layout { kKeras3, kLegacy };

const char* LayoutName(Layout l, bool zipped) {
  if (zipped) return "Keras 3 .keras";
  return l == Layout::kKeras3 ? "Keras 3 .weights.h5" : "legacy Keras .h5";
}

struct Var {
  std::string path;  // dataset path in the HDF5 file
  Shape shape;
};

struct FileLayer {
  std::string stored;               // the group name in the file ("conv2d_3", "stem_conv")
  std::map<std::string, Var> vars;  // Keras 3: "0", "1"...; legacy: "kernel", "gamma"...
};

struct FileLayers {
  Layout layout = Layout::kKeras3;
  // Keras 3: the container holding the backbone (most BN layers), per class in stored order.
  std::map<std::string, std::vector<FileLayer>> by_class;
  // Legacy: by layer name.
  std::map<std::string, FileLayer> by_name;
  std::vector<FileLayer> dense;  // candidate classifiers (2-D kernel)
};

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string part; std::getline(ss, part, '/');) {
    if (!part.empty()) out.push_back(part);
  }
  return out;
}

// "conv2d_12" -> ("conv2d", 12); "conv2d" -> ("conv2d", 0).
std::pair<std::string, int> ClassAndIndex(const std::string& stored) {
  const size_t u = stored.find_last_of('_');
  if (u != std::string::npos && u + 1 < stored.size() && stored.size() - u <= 9 &&
      std::all_of(stored.begin() + u + 1, stored.end(),
                  [](unsigned char ch) { return std::isdigit(ch); })) {
    return {stored.substr(0, u), std::stoi(stored.substr(u + 1))};
  }
  return {stored, 0};
}

bool IsPreprocessing(const std::string& layer) {
  return layer.rfind("normalization", 0) == 0 || layer.rfind("rescaling", 0) == 0;
}

Result<FileLayers> GroupKeras3(const std::vector<Var>& vars) {
  // layers/<...>/<stored>/vars/<i>; containers nest as layers/<model>/layers/...
  std::map<std::string, std::map<std::string, FileLayer>> containers;
  for (const Var& v : vars) {
    const std::vector<std::string> c = Split(v.path);
    if (c.size() < 4 || c[0] != "layers" || c[c.size() - 2] != "vars") continue;  // optimizer
    std::string container;
    for (size_t i = 0; i + 3 < c.size(); ++i) container += c[i] + "/";
    FileLayer& l = containers[container][c[c.size() - 3]];
    l.stored = container + c[c.size() - 3];
    l.vars[c.back()] = v;
  }
  FileLayers out;
  out.layout = Layout::kKeras3;
  size_t best = 0;
  for (const auto& [container, layers] : containers) {
    std::map<std::string, std::vector<std::pair<int, FileLayer>>> cls;
    for (const auto& [stored, l] : layers) {
      auto [c, idx] = ClassAndIndex(stored);
      if (c == "dense") {
        out.dense.push_back(l);
      } else if (!IsPreprocessing(c)) {
        cls[c].emplace_back(idx, l);
      }
    }
    const size_t n_bn = cls.count("batch_normalization") ? cls["batch_normalization"].size() : 0;
    if (n_bn <= best) continue;
    best = n_bn;
    out.by_class.clear();
    for (auto& [c, list] : cls) {
      std::sort(list.begin(), list.end(),
                [](const auto& x, const auto& y) { return x.first < y.first; });
      for (auto& [idx, l] : list) out.by_class[c].push_back(std::move(l));
    }
  }
  return out;
}

Result<FileLayers> GroupLegacy(const std::vector<Var>& vars, const std::string& root) {
  // <root>/<layer>/[<scope>/]<layer>/<name>[:0]: the weight's parent group is its layer.
  FileLayers out;
  out.layout = Layout::kLegacy;
  for (const Var& v : vars) {
    if (!root.empty() && v.path.rfind(root + "/", 0) != 0) continue;  // optimizer_weights
    const std::vector<std::string> c = Split(v.path);
    if (c.size() < 2) continue;
    std::string name = c.back();
    name = name.substr(0, name.find(':'));
    if (name == "depthwise_kernel") name = "kernel";  // Keras 2 DepthwiseConv2D
    const std::string& layer = c[c.size() - 2];
    if (IsPreprocessing(layer)) continue;
    FileLayer& l = out.by_name[layer];
    l.stored = layer;
    if (!l.vars.emplace(name, v).second) {
      return DataLoss("two weights '" + name + "' for layer '" + layer + "' (" + l.vars[name].path +
                      ", " + v.path + ")");
    }
  }
  for (auto it = out.by_name.begin(); it != out.by_name.end();) {
    auto k = it->second.vars.find("kernel");
    if (k != it->second.vars.end() && k->second.shape.size() == 2) {
      out.dense.push_back(it->second);
      it = out.by_name.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Matching the file against a variant's layers (shapes only; nothing read yet).

struct Assigned {
  const KerasLayer* layer;
  std::vector<const Var*> vars;  // in KerasVars(kind) order
};

struct Match {
  std::vector<Assigned> backbone;
  const FileLayer* dense = nullptr;
  std::vector<std::string> problems;
};

std::string Describe(const KerasLayer& l, const FileLayer* f) {
  std::string s = "layer '" + l.name + "'";
  if (f && f->stored != l.name) s += " (stored as '" + f->stored + "')";
  return s;
}

Match MatchLayers(const FileLayers& file, const std::vector<KerasLayer>& want, int head_in) {
  Match m;
  std::map<std::string, size_t> used;  // Keras 3: position per class
  for (const KerasLayer& l : want) {
    const FileLayer* f = nullptr;
    if (file.layout == Layout::kKeras3) {
      auto it = file.by_class.find(l.cls);
      const size_t pos = used[l.cls]++;
      if (it != file.by_class.end() && pos < it->second.size()) f = &it->second[pos];
    } else {
      auto it = file.by_name.find(l.name);
      if (it != file.by_name.end()) f = &it->second;
    }
    if (!f) {
      m.problems.push_back("missing " + Describe(l, nullptr) + " (" + l.cls + ")");
      continue;
    }
    Assigned a{&l, {}};
    const auto& names = KerasVars(l.kind);
    for (size_t i = 0; i < names.size(); ++i) {
      const std::string key = file.layout == Layout::kKeras3 ? std::to_string(i) : names[i];
      auto v = f->vars.find(key);
      const Shape want_shape = VarShape(l, i);
      if (v == f->vars.end()) {
        m.problems.push_back(Describe(l, f) + ": missing weight '" + names[i] + "' (expected " +
                             Str(want_shape) + ")");
      } else if (v->second.shape != want_shape) {
        m.problems.push_back(Describe(l, f) + " weight '" + names[i] + "': expected " +
                             Str(want_shape) + ", found " + Str(v->second.shape));
        break;  // one problem per layer (a BN's four vectors share the width)
      } else {
        a.vars.push_back(&v->second);
      }
    }
    if (f->vars.size() > names.size()) {
      m.problems.push_back(Describe(l, f) + ": " + std::to_string(f->vars.size()) +
                           " weights, expected " + std::to_string(names.size()));
    }
    m.backbone.push_back(std::move(a));
  }
  // Layers of the file that the variant does not have.
  if (file.layout == Layout::kKeras3) {
    for (const auto& [cls, list] : file.by_class) {
      const size_t n = used.count(cls) ? used.at(cls) : 0;
      if (list.size() > n) {
        m.problems.push_back("unexpected layer '" + list[n].stored + "' (" +
                             std::to_string(list.size() - n) + " more " + cls +
                             " layer(s) than expected)");
      }
    }
  } else {
    std::map<std::string, bool> known;
    for (const KerasLayer& l : want) known[l.name] = true;
    for (const auto& [name, f] : file.by_name) {
      if (!known.count(name)) m.problems.push_back("unexpected layer '" + name + "'");
    }
  }
  // The head: at most one Dense layer, on the head's features.
  if (file.dense.size() > 1) {
    std::string names;
    for (const FileLayer& d : file.dense) names += (names.empty() ? "'" : ", '") + d.stored + "'";
    m.problems.push_back("more than one Dense layer (" + names +
                         "): only a single classifier on the pooled features is supported");
  } else if (file.dense.size() == 1) {
    const FileLayer& d = file.dense[0];
    const std::string kb = file.layout == Layout::kKeras3 ? "0" : "kernel";
    const std::string bb = file.layout == Layout::kKeras3 ? "1" : "bias";
    auto k = d.vars.find(kb);
    auto b = d.vars.find(bb);
    if (k == d.vars.end() || b == d.vars.end() || k->second.shape.size() != 2 ||
        b->second.shape != Shape{k->second.shape[1]}) {
      m.problems.push_back("Dense layer '" + d.stored +
                           "': expected a kernel [in, classes] and a bias [classes]");
    } else if (k->second.shape[0] != head_in) {
      m.problems.push_back("Dense layer '" + d.stored + "' kernel: expected [" +
                           std::to_string(head_in) + ", classes], found " + Str(k->second.shape));
    } else {
      m.dense = &d;
    }
  }
  return m;
}

// "b1" when the file matches that variant exactly (backbone and head), else "".
std::string LookAlike(const FileLayers& file, const model::ModelConfig& expect) {
  for (const std::string& v : model::KnownVariants()) {
    model::ModelConfig c = expect;
    c.variant = v;
    c.extra_width = c.extra_depth = 1.0;
    if (MatchLayers(file, BackboneLayers(c), model::ResolveArchitecture(c).head_channels)
            .problems.empty()) {
      return v;
    }
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
// HDF5 access (under storage's global HDF5 mutex: Debian's HDF5 is not thread-safe).

herr_t CollectDataset(hid_t group, const char* name, const H5L_info_t* info, void* data) {
  if (info->type != H5L_TYPE_HARD) return 0;
  h5::Id obj(H5Oopen(group, name, H5P_DEFAULT), H5Oclose);
  if (!obj.valid() || H5Iget_type(obj.get()) != H5I_DATASET) return 0;
  h5::Id space = h5::Space(H5Dget_space(obj.get()));
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) return -1;
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  static_cast<std::vector<Var>*>(data)->push_back({name, Shape(dims.begin(), dims.end())});
  return 0;
}

Result<at::Tensor> ReadFloat(hid_t file, const Var& v) {
  h5::Id d = h5::Dataset(H5Dopen2(file, v.path.c_str(), H5P_DEFAULT));
  if (!d.valid()) return h5::Error("opening dataset " + v.path);
  h5::Id type = h5::Type(H5Dget_type(d.get()));
  if (H5Tget_class(type.get()) != H5T_FLOAT) {
    return DataLoss("dataset " + v.path + ": expected floating point values");
  }
  at::Tensor t = at::empty(v.shape, at::kFloat);
  if (H5Dread(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()) < 0) {
    return h5::Error("reading dataset " + v.path);
  }
  return t;
}

// Opens an HDF5 file from disk, or from `image` (bytes in memory) when not null.
Result<h5::Id> OpenH5(const std::string& name, const std::string* image) {
  h5::Id fapl = h5::Plist(H5Pcreate(H5P_FILE_ACCESS));
  if (image) {
    if (H5Pset_fapl_core(fapl.get(), 1 << 20, 0) < 0 ||
        H5Pset_file_image(fapl.get(), const_cast<char*>(image->data()), image->size()) < 0) {
      return h5::Error("setting up the in-memory HDF5 file " + name);
    }
  }
  h5::Id f = h5::File(H5Fopen(name.c_str(), H5F_ACC_RDONLY, fapl.get()));
  if (!f.valid()) return h5::Error("not a readable HDF5 file");
  return f;
}

bool HasLink(hid_t file, const char* name) {
  const bool yes = H5Lexists(file, name, H5P_DEFAULT) > 0;
  h5::LastError();
  return yes;
}

// ---------------------------------------------------------------------------------------------
// The .keras zip (written by Python's zipfile: stored; deflate also accepted).

uint32_t U16(const std::string& b, size_t at) {
  return static_cast<uint8_t>(b[at]) | static_cast<uint8_t>(b[at + 1]) << 8;
}
uint32_t U32(const std::string& b, size_t at) { return U16(b, at) | U16(b, at + 2) << 16; }

Result<std::string> ZipMember(const std::string& zip, const std::string& member) {
  if (zip.size() < 22) return DataLoss("truncated zip");
  size_t eocd = std::string::npos;
  for (size_t i = zip.size() - 22 + 1; i-- > 0 && zip.size() - i <= 22 + 65535;) {
    if (U32(zip, i) == 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd == std::string::npos) return DataLoss("no zip end-of-central-directory record");
  const uint32_t entries = U16(zip, eocd + 10);
  size_t p = U32(zip, eocd + 16);
  for (uint32_t e = 0; e < entries; ++e) {
    if (p + 46 > zip.size() || U32(zip, p) != 0x02014b50) return DataLoss("bad zip directory");
    const uint32_t method = U16(zip, p + 10), crc = U32(zip, p + 16);
    const uint64_t csize = U32(zip, p + 20), usize = U32(zip, p + 24);
    const size_t nlen = U16(zip, p + 28), elen = U16(zip, p + 30), clen = U16(zip, p + 32);
    const uint64_t local = U32(zip, p + 42);
    if (p + 46 + nlen > zip.size()) return DataLoss("bad zip directory");
    const std::string name = zip.substr(p + 46, nlen);
    p += 46 + nlen + elen + clen;
    if (name != member) continue;
    if (csize == 0xffffffffu || usize == 0xffffffffu || local == 0xffffffffu) {
      return InvalidArgument(member + ": zip64 members (over 4 GiB) are not supported");
    }
    if (local + 30 > zip.size() || U32(zip, local) != 0x04034b50) {
      return DataLoss(member + ": bad zip local header");
    }
    const size_t data = local + 30 + U16(zip, local + 26) + U16(zip, local + 28);
    if (data + csize > zip.size()) return DataLoss(member + ": truncated zip member");
    std::string out;
    if (method == 0) {
      out = zip.substr(data, csize);
    } else if (method == 8) {
      out.resize(usize);
      z_stream zs{};
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(zip.data() + data));
      zs.avail_in = static_cast<uInt>(csize);
      zs.next_out = reinterpret_cast<Bytef*>(out.data());
      zs.avail_out = static_cast<uInt>(usize);
      const bool ok =
          inflateInit2(&zs, -MAX_WBITS) == Z_OK && inflate(&zs, Z_FINISH) == Z_STREAM_END;
      inflateEnd(&zs);
      if (!ok || zs.total_out != usize) return DataLoss(member + ": corrupt deflate data");
    } else {
      return InvalidArgument(member + ": unsupported zip compression method " +
                             std::to_string(method));
    }
    if (out.size() != usize || crc32(0, reinterpret_cast<const Bytef*>(out.data()),
                                     static_cast<uInt>(out.size())) != crc) {
      return DataLoss(member + ": CRC mismatch");
    }
    return out;
  }
  return NotFound("no " + member + " in the archive");
}

Result<std::string> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot open file");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (!in.good() && !in.eof()) return DataLoss("read error");
  return ss.str();
}

bool IsZip(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::memcmp(magic, "PK\3\4", 4) == 0;
}

// An open Keras file: the HDF5 weights (from the .keras zip in memory when zipped).
struct KerasFile {
  std::string image;   // model.weights.h5 bytes of a .keras zip (must outlive `h5`)
  std::string config;  // config.json of a .keras zip
  bool zipped = false;
  h5::Id h5;
};

Result<KerasFile> OpenKeras(const std::string& path) {
  KerasFile k;
  if (IsZip(path)) {
    k.zipped = true;
    EFFNET_ASSIGN_OR_RETURN(std::string zip, ReadAll(path));
    EFFNET_ASSIGN_OR_RETURN(k.image, ZipMember(zip, "model.weights.h5"));
    auto config = ZipMember(zip, "config.json");
    if (config.ok()) k.config = std::move(config).value();
  }
  // The in-memory file needs a name of its own: the core driver refuses an existing file's.
  EFFNET_ASSIGN_OR_RETURN(
      k.h5, k.zipped ? OpenH5(path + "/model.weights.h5", &k.image) : OpenH5(path, nullptr));
  return k;
}

Result<StateDict> ReadWeights(const std::string& path, const model::ModelConfig& expect,
                              std::string* format) {
  *format = IsZip(path) ? "Keras 3 .keras" : "Keras HDF5";
  EFFNET_ASSIGN_OR_RETURN(KerasFile k, OpenKeras(path));
  const hid_t f = k.h5.get();
  FileLayers layers;
  std::vector<Var> vars;
  if (H5Lvisit(f, H5_INDEX_NAME, H5_ITER_INC, CollectDataset, &vars) < 0) {
    return h5::Error("listing datasets");
  }
  if (HasLink(f, "model_weights")) {
    EFFNET_ASSIGN_OR_RETURN(layers, GroupLegacy(vars, "model_weights"));
  } else if (HasLink(f, "layers")) {
    EFFNET_ASSIGN_OR_RETURN(layers, GroupKeras3(vars));
  } else if (H5Aexists(f, "layer_names") > 0) {
    EFFNET_ASSIGN_OR_RETURN(layers, GroupLegacy(vars, ""));
  } else {
    h5::LastError();
    return InvalidArgument(
        "not a Keras weights file (no 'layers' or 'model_weights' group, no 'layer_names')");
  }
  *format = LayoutName(layers.layout, k.zipped);
  const model::Architecture arch = model::ResolveArchitecture(expect);
  const std::vector<KerasLayer> want = BackboneLayers(expect);
  const Match m = MatchLayers(layers, want, arch.head_channels);
  if (!m.problems.empty()) {
    std::string msg = std::to_string(m.problems.size()) + " problem(s) for " +
                      KerasModelName(expect.variant) + " (variant '" + expect.variant + "'): ";
    const size_t shown = std::min<size_t>(m.problems.size(), 8);
    for (size_t i = 0; i < shown; ++i) msg += (i ? "; " : "") + m.problems[i];
    if (shown < m.problems.size()) {
      msg += "; ... (" + std::to_string(m.problems.size() - shown) + " more)";
    }
    const std::string like = LookAlike(layers, expect);
    if (!like.empty() && like != expect.variant) {
      msg += ". The file looks like " + std::string(KerasModelName(like)) + " (variant '" + like +
             "')";
    } else if (like.empty()) {
      msg += ". The file matches none of the keras.applications EfficientNetV2 variants";
    }
    return InvalidArgument(msg);
  }
  StateDict dict;
  for (const Assigned& a : m.backbone) {
    for (size_t i = 0; i < a.vars.size(); ++i) {
      EFFNET_ASSIGN_OR_RETURN(at::Tensor t, ReadFloat(f, *a.vars[i]));
      if (a.layer->kind != Kind::kBn && i == 0) {
        // HWIO -> OIHW; depthwise HW(C)(1) -> (C)(1)HW.
        t = a.layer->kind == Kind::kDepthwise ? t.permute({2, 3, 0, 1}) : t.permute({3, 2, 0, 1});
      }
      dict.insert(a.layer->timm + "." + TimmVar(a.layer->kind, i), t.contiguous());
    }
  }
  if (m.dense) {
    const bool k3 = layers.layout == Layout::kKeras3;
    EFFNET_ASSIGN_OR_RETURN(at::Tensor w, ReadFloat(f, m.dense->vars.at(k3 ? "0" : "kernel")));
    EFFNET_ASSIGN_OR_RETURN(at::Tensor b, ReadFloat(f, m.dense->vars.at(k3 ? "1" : "bias")));
    dict.insert("classifier.weight", w.t().contiguous());  // (in, out) -> (out, in)
    dict.insert("classifier.bias", b);
  }
  return dict;
}

// ---------------------------------------------------------------------------------------------
// Preprocessing from a model config (JSON).

void FindLayers(const nlohmann::json& j, std::vector<const nlohmann::json*>* out) {
  if (j.is_object()) {
    auto c = j.find("class_name");
    if (c != j.end() && c->is_string() && (*c == "Rescaling" || *c == "Normalization")) {
      out->push_back(&j);
      return;
    }
    for (const auto& [k, v] : j.items()) FindLayers(v, out);
  } else if (j.is_array()) {
    for (const auto& v : j) FindLayers(v, out);
  }
}

bool Near(double a, double b) { return std::abs(a - b) <= 1e-6 * std::max(1.0, std::abs(b)); }

bool NearList(const nlohmann::json& j, const std::vector<double>& want) {
  if (!j.is_array() || j.size() != want.size()) return false;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!j[i].is_number() || !Near(j[i].get<double>(), want[i])) return false;
  }
  return true;
}

Result<std::string> NormalizeFromConfig(const std::string& config_json) {
  nlohmann::json j = nlohmann::json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return DataLoss("model config is not valid JSON");
  std::vector<const nlohmann::json*> found;
  FindLayers(j, &found);
  if (found.empty()) return std::string("none");
  std::string desc;
  bool rescale_255 = false, rescale_128 = false, imagenet_norm = false, other = false;
  for (const nlohmann::json* l : found) {
    const nlohmann::json& c = l->value("config", nlohmann::json::object());
    desc += (desc.empty() ? "" : ", ") + l->value("class_name", std::string()) + c.dump();
    if ((*l)["class_name"] == "Rescaling") {
      const auto scale = c.value("scale", nlohmann::json()),
                 offset = c.value("offset", nlohmann::json());
      const double s = scale.is_number() ? scale.get<double>() : NAN;
      const double o = offset.is_number() ? offset.get<double>() : NAN;
      if (Near(s, 1.0 / 255) && Near(o, 0.0)) {
        rescale_255 = true;
      } else if (Near(s, 1.0 / 128) && Near(o, -1.0)) {
        rescale_128 = true;
      } else {
        other = true;
      }
    } else if (NearList(c.value("mean", nlohmann::json()), {0.485, 0.456, 0.406}) &&
               NearList(c.value("variance", nlohmann::json()),
                        {0.229 * 0.229, 0.224 * 0.224, 0.225 * 0.225})) {
      imagenet_norm = true;
    } else {
      other = true;
    }
  }
  if (!other && found.size() == 2 && rescale_255 && imagenet_norm) return std::string("imagenet");
  if (!other && found.size() == 1 && rescale_128) return std::string("inception");
  return InvalidArgument("preprocessing layers with no augment.normalize equivalent: " + desc);
}

}  // namespace

Result<StateDict> ReadKerasWeights(const std::string& path, const model::ModelConfig& expect) {
  std::string format = "Keras";
  Result<StateDict> r = [&]() -> Result<StateDict> {
    try {
      h5::EnsureInit();
      std::lock_guard<std::recursive_mutex> lock(h5::GlobalMutex());
      return ReadWeights(path, expect, &format);
    } catch (const StatusError& e) {  // ResolveArchitecture on a bad config
      return e.status();
    }
  }();
  if (!r.ok()) return r.status().WithContext("reading " + path + " (" + format + ")");
  return r;
}

KerasPreprocessing KerasDefaultPreprocessing(const std::string& variant) {
  const auto& known = model::KnownVariants();
  if (std::find(known.begin(), known.end(), variant) == known.end()) {
    throw StatusError(InvalidArgument("unknown EfficientNetV2 variant '" + variant + "'"));
  }
  // keras.applications.efficientnet_v2: B-variants ("-b*" model names) get the V1 preprocessing.
  return {variant[0] == 'b' ? "imagenet" : "inception", "keras.applications default"};
}

Result<KerasPreprocessing> ReadKerasPreprocessing(const std::string& path,
                                                  const std::string& variant) {
  auto ctx = [&](const Status& s) { return s.WithContext("reading " + path); };
  std::string config;
  try {
    h5::EnsureInit();
    std::lock_guard<std::recursive_mutex> lock(h5::GlobalMutex());
    auto k = OpenKeras(path);
    if (!k.ok()) return ctx(k.status());
    if (k->zipped) {
      config = k->config;
    } else if (H5Aexists(k->h5.get(), "model_config") > 0) {
      auto c = h5::ReadStringAttr(k->h5.get(), "model_config");
      if (!c.ok()) return ctx(c.status());
      config = std::move(c).value();
    }
    h5::LastError();
    if (config.empty()) return KerasDefaultPreprocessing(variant);
  } catch (const StatusError& e) {
    return ctx(e.status());
  }
  auto n = NormalizeFromConfig(config);
  if (!n.ok()) return ctx(n.status());
  return KerasPreprocessing{std::move(n).value(), "model config"};
}

}  // namespace effnet::formats
