#include "worker/formats/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/atomic_file.h"
#include "worker/formats/safetensors.h"

// Note [POSIX file calls]: this file uses POSIX calls, not std::filesystem: the torch wheel's
// libtorch exports its own std::filesystem symbols, and a target linked to it can bind to them
// (worker/model/README.md, pitfall; CMakeLists.txt Note [libstdc++ before libtorch]).

namespace effnet::formats {
namespace {

std::string Errno() { return std::strerror(errno); }

std::string StripSlashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

std::string Parent(const std::string& p) {
  const auto slash = p.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : p.substr(0, slash);
}

std::string BaseName(const std::string& p) {
  const auto slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

enum class PathKind { kMissing, kFile, kDirectory, kOther };

PathKind KindOf(const std::string& p) {
  struct stat st;
  if (::stat(p.c_str(), &st) != 0) return PathKind::kMissing;
  if (S_ISDIR(st.st_mode)) return PathKind::kDirectory;
  if (S_ISREG(st.st_mode)) return PathKind::kFile;
  return PathKind::kOther;
}

Status MakeDirs(const std::string& p) {
  if (p.empty() || KindOf(p) == PathKind::kDirectory) return Status::Ok();
  EFFNET_RETURN_IF_ERROR(MakeDirs(Parent(p)));
  if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST) {
    return Internal("mkdir " + p + ": " + Errno());
  }
  return Status::Ok();
}

Status RemoveTree(const std::string& p) {
  if (KindOf(p) == PathKind::kMissing) return Status::Ok();
  const int rc = ::nftw(
      p.c_str(), [](const char* f, const struct stat*, int, struct FTW*) { return ::remove(f); },
      16, FTW_DEPTH | FTW_PHYS);
  if (rc != 0) return Internal("removing " + p + ": " + Errno());
  return Status::Ok();
}

Status FsyncPath(const std::string& p, int flags) {
  const int fd = ::open(p.c_str(), flags);
  if (fd < 0) return Internal("open " + p + ": " + Errno());
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Internal("fsync " + p + ": " + Errno());
  return Status::Ok();
}

// Writes `bytes` to a new file and fsyncs it (the directory is synced once, by the caller).
Status WriteSynced(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Internal("creating " + path + ": " + Errno());
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string e = Errno();
      ::close(fd);
      return Internal("writing " + path + ": " + e);
    }
    done += static_cast<size_t>(n);
  }
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Internal("fsync " + path + ": " + Errno());
  return Status::Ok();
}

std::string Sha256Hex(const std::string& bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), bytes.data(), bytes.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), digest, &len) != 1) {
    throw StatusError(Internal("OpenSSL SHA-256 failed"));
  }
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 15]);
  }
  return out;
}

// meta.json without "meta_sha256". nlohmann::json keeps keys sorted, so dump() of a parsed
// document reproduces the bytes that were hashed (Note [meta checksum]).
nlohmann::json MetaToJson(const CheckpointMeta& m) {
  const auto& md = m.model;
  const auto& s = m.stage;
  return nlohmann::json{{"format_version", m.format_version},
                        {"model",
                         {{"name", m.model_name},
                          {"variant", md.variant},
                          {"num_classes", md.num_classes},
                          {"extra_width", md.extra_width},
                          {"extra_depth", md.extra_depth},
                          {"drop_path", md.drop_path},
                          {"bn_momentum", md.bn_momentum},
                          {"bn_eps", md.bn_eps},
                          {"padding", model::PaddingNames().at(static_cast<size_t>(md.padding))}}},
                        {"class_names", m.class_names},
                        {"config_yaml", m.config_yaml},
                        {"epoch", m.epoch},
                        {"next_epoch", m.next_epoch},
                        {"global_step", m.global_step},
                        {"steps_per_epoch", m.steps_per_epoch},
                        {"stage",
                         {{"index", s.index},
                          {"image_size", s.image_size},
                          {"randaug_magnitude", s.randaug_magnitude},
                          {"mixup_alpha", s.mixup_alpha},
                          {"cutmix_alpha", s.cutmix_alpha},
                          {"dropout", s.dropout}}},
                        {"fit_time_s", m.fit_time_s},
                        {"decision_state", m.decision_state},
                        {"world_size", m.world_size},
                        {"eval_image_size", m.eval_image_size},
                        {"data", m.data_path},
                        {"has_ema", m.has_ema},
                        {"ema_num_updates", m.ema_num_updates},
                        {"sha256", m.sha256}};
}

CheckpointMeta MetaFromJson(const nlohmann::json& j) {  // throws nlohmann::json::exception
  CheckpointMeta m;
  m.format_version = j.at("format_version").get<int>();
  const auto& md = j.at("model");
  m.model_name = md.at("name").get<std::string>();
  m.model.variant = md.at("variant").get<std::string>();
  m.model.num_classes = md.at("num_classes").get<int>();
  m.model.extra_width = md.at("extra_width").get<double>();
  m.model.extra_depth = md.at("extra_depth").get<double>();
  m.model.drop_path = md.at("drop_path").get<double>();
  m.model.bn_momentum = md.at("bn_momentum").get<double>();
  m.model.bn_eps = md.at("bn_eps").get<double>();
  const auto& names = model::PaddingNames();
  const auto padding = std::find(names.begin(), names.end(), md.at("padding").get<std::string>());
  if (padding == names.end()) {
    throw StatusError(DataLoss("model.padding: unknown value " + md.at("padding").dump()));
  }
  m.model.padding = static_cast<model::Padding>(padding - names.begin());
  m.class_names = j.at("class_names").get<std::vector<std::string>>();
  m.config_yaml = j.at("config_yaml").get<std::string>();
  m.epoch = j.at("epoch").get<int>();
  m.next_epoch = j.at("next_epoch").get<int>();
  m.global_step = j.at("global_step").get<int64_t>();
  m.steps_per_epoch = j.at("steps_per_epoch").get<int64_t>();
  const auto& s = j.at("stage");
  m.stage.index = s.at("index").get<int>();
  m.stage.image_size = s.at("image_size").get<int>();
  m.stage.randaug_magnitude = s.at("randaug_magnitude").get<double>();
  m.stage.mixup_alpha = s.at("mixup_alpha").get<double>();
  m.stage.cutmix_alpha = s.at("cutmix_alpha").get<double>();
  m.stage.dropout = s.at("dropout").get<double>();
  m.fit_time_s = j.at("fit_time_s").get<double>();
  m.decision_state = j.at("decision_state").get<std::string>();
  m.world_size = j.at("world_size").get<int>();
  m.eval_image_size = j.at("eval_image_size").get<int>();
  m.data_path = j.at("data").get<std::string>();
  m.has_ema = j.at("has_ema").get<bool>();
  m.ema_num_updates = j.at("ema_num_updates").get<int64_t>();
  m.sha256 = j.at("sha256").get<std::map<std::string, std::string>>();
  return m;
}

// Reads every file meta.json names and checks its SHA-256 (Note [checkpoint checksums]).
Result<std::map<std::string, std::string>> ReadVerifiedFiles(const std::string& dir,
                                                             const CheckpointMeta& meta) {
  std::vector<std::string> required = {kCheckpointModelFile, kCheckpointTrainStateFile};
  if (meta.has_ema) required.push_back(kCheckpointEmaFile);
  for (const auto& name : required) {
    if (!meta.sha256.count(name)) {
      return DataLoss(dir + "/" + kCheckpointMetaFile + ": no checksum for " + name);
    }
  }
  std::map<std::string, std::string> files;
  for (const auto& [name, want] : meta.sha256) {
    if (name.empty() || name.find('/') != std::string::npos || name[0] == '.') {
      return DataLoss(dir + "/" + kCheckpointMetaFile + ": bad file name '" + name + "'");
    }
    const std::string path = dir + "/" + name;
    if (KindOf(path) != PathKind::kFile) {
      return DataLoss(path + ": listed in " + kCheckpointMetaFile + " but missing");
    }
    EFFNET_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
    const std::string got = Sha256Hex(bytes);
    if (got != want) {
      return DataLoss(path + ": SHA-256 mismatch (the file is corrupt or was changed): " +
                      kCheckpointMetaFile + " records " + want + ", the file has " + got);
    }
    files.emplace(name, std::move(bytes));
  }
  return files;
}

// The hidden sibling a checkpoint `dir` is built in, which PruneCheckpoints recognises.
std::string TempSibling(const std::string& dir) {
  return Parent(dir) + "/." + BaseName(dir) + ".tmp." + std::to_string(::getpid());
}

// Creates `tmp` empty, removing what an interrupted writer with this pid left there.
Status MakeFreshDir(const std::string& tmp) {
  EFFNET_RETURN_IF_ERROR(RemoveTree(tmp));
  if (::mkdir(tmp.c_str(), 0755) != 0) return Internal("mkdir " + tmp + ": " + Errno());
  return Status::Ok();
}

// Syncs the finished temporary directory `tmp` (its files are synced by the writer) and puts it in
// place of `dir` (Note [checkpoint directory is atomic]).
Status Install(const std::string& tmp, const std::string& dir) {
  EFFNET_RETURN_IF_ERROR(FsyncPath(tmp, O_RDONLY | O_DIRECTORY));
  const std::string parent = Parent(dir);
  if (KindOf(dir) == PathKind::kMissing) {
    if (std::rename(tmp.c_str(), dir.c_str()) != 0) {
      return Internal("rename " + tmp + " -> " + dir + ": " + Errno());
    }
    return FsyncPath(parent, O_RDONLY | O_DIRECTORY);
  }
#ifdef RENAME_EXCHANGE
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
    EFFNET_RETURN_IF_ERROR(FsyncPath(parent, O_RDONLY | O_DIRECTORY));
    return RemoveTree(tmp);  // now the previous checkpoint
  }
#endif
  // No atomic exchange on this file system: move the old one aside first. A crash in between
  // leaves no `dir`, the new one under `tmp` and the old one under `old`.
  const std::string old = tmp + ".old";
  if (std::rename(dir.c_str(), old.c_str()) != 0) {
    return Internal("rename " + dir + " -> " + old + ": " + Errno());
  }
  if (std::rename(tmp.c_str(), dir.c_str()) != 0) {
    return Internal("rename " + tmp + " -> " + dir + ": " + Errno());
  }
  EFFNET_RETURN_IF_ERROR(FsyncPath(parent, O_RDONLY | O_DIRECTORY));
  return RemoveTree(old);
}

StateDict InModelOrder(const torch::nn::Module& model,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       Status* error) {
  StateDict by_name;
  for (const auto& [name, t] : tensors) by_name.insert(name, t);
  StateDict out;
  for (const auto& item : GetStateDict(model)) {
    const at::Tensor* t = by_name.find(item.key());
    if (!t) {
      *error = InvalidArgument("EMA has no tensor '" + item.key() + "'");
      return out;
    }
    out.insert(item.key(), *t);
  }
  if (out.size() != by_name.size()) {
    *error = InvalidArgument("EMA has " + std::to_string(by_name.size()) + " tensors, the model " +
                             std::to_string(out.size()));
  }
  return out;
}

}  // namespace

std::string EpochCheckpointName(int epoch) {
  char name[32];
  std::snprintf(name, sizeof(name), "epoch-%04d", epoch);
  return name;
}

Status WriteCheckpoint(const std::string& dir_in, CheckpointMeta meta,
                       const CheckpointSource& source) {
  const std::string dir = StripSlashes(dir_in);
  auto ctx = [&](const Status& s) { return s.WithContext("writing checkpoint " + dir); };
  if (!source.model) return ctx(InvalidArgument("no model"));
  const std::string tmp = TempSibling(dir);
  try {
    // Serialise everything in memory first: a failure here leaves nothing on disk.
    std::map<std::string, std::string> files;
    EFFNET_ASSIGN_OR_RETURN(files[kCheckpointModelFile],
                            SafetensorsBytes(GetStateDict(*source.model)));
    meta.has_ema = !source.ema.empty();
    meta.ema_num_updates = meta.has_ema ? source.ema_num_updates : 0;
    if (meta.has_ema) {
      Status error;
      StateDict ema = InModelOrder(*source.model, source.ema, &error);
      if (!error.ok()) return ctx(error);
      EFFNET_ASSIGN_OR_RETURN(files[kCheckpointEmaFile], SafetensorsBytes(ema));
    }
    {
      torch::serialize::OutputArchive archive;
      if (source.optimizer) {
        torch::serialize::OutputArchive opt;
        source.optimizer->save(opt);
        archive.write("optimizer", opt);
      }
      archive.write("rng/torch_cpu", at::detail::getDefaultCPUGenerator().get_state(),
                    /*is_buffer=*/true);
      std::ostringstream os;
      archive.save_to(os);
      files[kCheckpointTrainStateFile] = os.str();
    }
    meta.format_version = kCheckpointFormatVersion;
    meta.sha256.clear();
    for (const auto& [name, bytes] : files) meta.sha256[name] = Sha256Hex(bytes);
    // Note [meta checksum]: meta.json carries the SHA-256 of its own content without this
    // field, as the compact, key-sorted dump; the file itself is indented for people.
    nlohmann::json j = MetaToJson(meta);
    const std::string meta_sha = Sha256Hex(j.dump());
    j["meta_sha256"] = meta_sha;
    files[kCheckpointMetaFile] = j.dump(2) + "\n";

    EFFNET_RETURN_IF_ERROR(ctx(MakeDirs(Parent(dir))));
    EFFNET_RETURN_IF_ERROR(ctx(MakeFreshDir(tmp)));
    for (const auto& [name, bytes] : files) {
      EFFNET_RETURN_IF_ERROR(ctx(WriteSynced(tmp + "/" + name, bytes)));
    }
    return ctx(Install(tmp, dir));
  } catch (const StatusError& e) {
    return ctx(e.status());
  } catch (const std::exception& e) {
    return ctx(Internal(e.what()));
  }
}

Status CopyCheckpoint(const std::string& from_in, const std::string& dir_in) {
  const std::string from = StripSlashes(from_in), dir = StripSlashes(dir_in);
  auto ctx = [&](const Status& s) {
    return s.WithContext("copying checkpoint " + from + " to " + dir);
  };
  if (KindOf(from) != PathKind::kDirectory) return ctx(NotFound(from + " is not a directory"));
  std::vector<std::string> names;
  {
    std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(from.c_str()), ::closedir);
    if (!d) return ctx(Internal("opendir " + from + ": " + Errno()));
    while (const dirent* e = ::readdir(d.get())) {
      const std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      if (KindOf(from + "/" + name) != PathKind::kFile) {
        return ctx(InvalidArgument(from + "/" + name + " is not a regular file"));
      }
      names.push_back(name);
    }
  }
  const std::string tmp = TempSibling(dir);
  EFFNET_RETURN_IF_ERROR(ctx(MakeFreshDir(tmp)));
  for (const auto& name : names) {
    const std::string src = from + "/" + name, dst = tmp + "/" + name;
    if (::link(src.c_str(), dst.c_str()) == 0) continue;
    // EXDEV, EPERM, EMLINK...: a byte copy, synced like WriteCheckpoint's files.
    auto bytes = ReadFile(src);
    if (!bytes.ok()) return ctx(bytes.status());
    EFFNET_RETURN_IF_ERROR(ctx(WriteSynced(dst, *bytes)));
  }
  return ctx(Install(tmp, dir));
}

Result<CheckpointMeta> ReadCheckpointMeta(const std::string& dir_in) {
  const std::string dir = StripSlashes(dir_in);
  const std::string path = dir + "/" + kCheckpointMetaFile;
  switch (KindOf(dir)) {
    case PathKind::kMissing:
      return NotFound(dir + ": no such checkpoint");
    case PathKind::kDirectory:
      break;
    default:
      return InvalidArgument(
          dir +
          " is a file, not a checkpoint directory: checkpoints of format version 1 (one "
          ".pt archive) are not read by this build, which reads format version " +
          std::to_string(kCheckpointFormatVersion) + " (worker/formats/README.md)");
  }
  if (KindOf(path) != PathKind::kFile) {
    return NotFound(path + ": missing (not a checkpoint directory)");
  }
  EFFNET_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  try {
    nlohmann::json j = nlohmann::json::parse(text);
    if (!j.is_object() || !j.contains("meta_sha256") || !j["meta_sha256"].is_string()) {
      return DataLoss(path + ": no meta_sha256");
    }
    const std::string want = j["meta_sha256"].get<std::string>();
    j.erase("meta_sha256");
    const std::string got = Sha256Hex(j.dump());
    if (got != want) {
      return DataLoss(path +
                      ": SHA-256 mismatch (the file is corrupt or was changed): it records " +
                      want + ", its content has " + got);
    }
    const int version = j.value("format_version", 0);
    if (version != kCheckpointFormatVersion) {
      return InvalidArgument(path + ": format version " + std::to_string(version) +
                             ", this build reads " + std::to_string(kCheckpointFormatVersion));
    }
    return MetaFromJson(j);
  } catch (const nlohmann::json::exception& e) {
    return DataLoss(path + ": " + e.what());
  } catch (const StatusError& e) {
    return e.status();
  }
}

Result<CheckpointMeta> VerifyCheckpoint(const std::string& dir) {
  EFFNET_ASSIGN_OR_RETURN(CheckpointMeta meta, ReadCheckpointMeta(dir));
  try {
    EFFNET_ASSIGN_OR_RETURN(auto files, ReadVerifiedFiles(StripSlashes(dir), meta));
    (void)files;
  } catch (const StatusError& e) {
    return e.status();
  }
  return meta;
}

Result<CheckpointMeta> LoadCheckpoint(const std::string& dir_in, const CheckpointTarget& target) {
  const std::string dir = StripSlashes(dir_in);
  auto where = [&](const Status& s) { return s.WithContext("loading checkpoint " + dir); };
  if (!target.model) return where(InvalidArgument("no model to load into"));
  auto meta_r = ReadCheckpointMeta(dir);
  if (!meta_r.ok()) return where(meta_r.status());
  CheckpointMeta meta = std::move(meta_r).value();
  const auto& m = meta.model;
  if (!target.variant.empty() && m.variant != target.variant) {
    return where(InvalidArgument("it is for variant '" + m.variant + "', the model is '" +
                                 target.variant + "'"));
  }
  if (target.num_classes > 0 && m.num_classes != target.num_classes) {
    return where(InvalidArgument("it has " + std::to_string(m.num_classes) +
                                 " classes, the model has " + std::to_string(target.num_classes)));
  }
  try {
    EFFNET_ASSIGN_OR_RETURN(auto files, ReadVerifiedFiles(dir, meta));
    // Parse and check everything before the first copy.
    auto model_r = ParseSafetensors(files[kCheckpointModelFile], kCheckpointModelFile);
    if (!model_r.ok()) return where(model_r.status());
    StateDict ema;
    const bool load_ema = meta.has_ema && !target.ema.empty();
    if (load_ema) {
      auto ema_r = ParseSafetensors(files[kCheckpointEmaFile], kCheckpointEmaFile);
      if (!ema_r.ok()) return where(ema_r.status());
      ema = std::move(ema_r).value();
      if (ema.size() != target.ema.size()) {
        return where(DataLoss(std::string(kCheckpointEmaFile) + " has " +
                              std::to_string(ema.size()) + " tensors, the EMA " +
                              std::to_string(target.ema.size())));
      }
      for (const auto& [name, t] : target.ema) {
        const at::Tensor* src = ema.find(name);
        if (!src || src->sizes() != t.sizes()) {
          return where(DataLoss(std::string(kCheckpointEmaFile) + ": key '" + name + "' " +
                                (src ? "has shape " + ShapeString(src->sizes()) + ", the EMA " +
                                           ShapeString(t.sizes())
                                     : "is missing")));
        }
      }
    }
    torch::serialize::InputArchive archive;
    if (target.optimizer || target.restore_cpu_rng) {
      const std::string& bytes = files[kCheckpointTrainStateFile];
      archive.load_from(bytes.data(), bytes.size(), target.device);
    }
    LoadOptions strict;
    strict.allow_missing_num_batches_tracked = false;
    EFFNET_RETURN_IF_ERROR(
        where(LoadStateDict(*target.model, *model_r, strict).WithContext(kCheckpointModelFile)));
    torch::NoGradGuard no_grad;
    if (load_ema) {
      for (const auto& [name, t] : target.ema) at::Tensor(t).copy_(*ema.find(name));
      if (target.ema_num_updates) *target.ema_num_updates = meta.ema_num_updates;
    }
    if (target.optimizer) {
      torch::serialize::InputArchive opt;
      if (!archive.try_read("optimizer", opt)) {
        return where(DataLoss(std::string(kCheckpointTrainStateFile) + ": no optimizer state"));
      }
      target.optimizer->load(opt);
    }
    if (target.restore_cpu_rng) {
      at::Tensor rng;
      if (!archive.try_read("rng/torch_cpu", rng, /*is_buffer=*/true)) {
        return where(DataLoss(std::string(kCheckpointTrainStateFile) + ": no CPU generator state"));
      }
      at::Generator gen = at::detail::getDefaultCPUGenerator();
      gen.set_state(rng.cpu());
    }
  } catch (const StatusError& e) {
    return where(e.status());
  } catch (const std::exception& e) {
    return where(DataLoss(e.what()));
  }
  return meta;
}

Result<StateDict> ReadCheckpointWeights(const std::string& dir_in, bool ema) {
  const std::string dir = StripSlashes(dir_in);
  EFFNET_ASSIGN_OR_RETURN(CheckpointMeta meta, ReadCheckpointMeta(dir));
  const char* name = ema ? kCheckpointEmaFile : kCheckpointModelFile;
  if (ema && !meta.has_ema) return NotFound(dir + ": no EMA weights (trained without EMA)");
  try {
    EFFNET_ASSIGN_OR_RETURN(auto files, ReadVerifiedFiles(dir, meta));
    return ParseSafetensors(files[name], dir + "/" + name);
  } catch (const StatusError& e) {
    return e.status();
  }
}

Status RemoveCheckpoint(const std::string& dir) { return RemoveTree(dir); }

Status PruneCheckpoints(const std::string& checkpoints_dir, int keep_last) {
  DIR* d = ::opendir(checkpoints_dir.c_str());
  if (!d) return Internal("listing " + checkpoints_dir + ": " + Errno());
  std::vector<std::pair<long, std::string>> epochs;
  std::vector<std::string> stale;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    if (name[0] == '.' && name.find(".tmp.") != std::string::npos) {
      stale.push_back(name);
      continue;
    }
    if (name.rfind("epoch-", 0) != 0 || name.size() == 6) continue;
    const std::string digits = name.substr(6);
    if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    if (KindOf(checkpoints_dir + "/" + name) != PathKind::kDirectory) continue;
    epochs.emplace_back(std::stol(digits), name);
  }
  ::closedir(d);
  std::sort(epochs.begin(), epochs.end());
  const size_t keep = static_cast<size_t>(std::max(1, keep_last));
  for (size_t i = 0; i + keep < epochs.size(); ++i) stale.push_back(epochs[i].second);
  for (const auto& name : stale) {
    EFFNET_RETURN_IF_ERROR(RemoveTree(checkpoints_dir + "/" + name));
  }
  return Status::Ok();
}

}  // namespace effnet::formats
