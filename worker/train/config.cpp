#include "worker/train/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <sstream>
#include <variant>

#include "common/atomic_file.h"

namespace effnet::train {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Note [one field table]: parsing, the resolved YAML and the documentation all come from this
// table, so a field cannot be parsed but undocumented, or documented with a stale default.
struct Field {
  std::string key;  // "section.name"
  std::variant<int*, double*, bool*, std::string*> ptr;
  std::string doc;
  std::vector<std::string> allowed = {};  // strings: the allowed values (empty: free text)
  double min = -kInf, max = kInf;         // numbers: the allowed range
};

std::vector<Field> Fields(TrainConfig& c) {
  auto& m = c.model;
  auto& d = c.data;
  auto& o = c.optimizer;
  auto& s = c.schedule;
  auto& a = c.augment;
  auto& e = c.ema;
  auto& k = c.checkpoint;
  auto& out = c.output;
  return {
      {"model.variant",
       &m.variant,
       "EfficientNetV2 variant",
       {"b0", "b1", "b2", "b3", "s", "m", "l"}},
      {"model.num_classes",
       &m.num_classes,
       "classes; 0 = from the data file, > 0 must equal the file's class count",
       {},
       0},
      {"model.drop_path", &m.drop_path, "stochastic depth rate (last block)", {}, 0, 0.95},
      {"model.bn_momentum", &m.bn_momentum, "BatchNorm momentum (PyTorch convention)", {}, 0, 1},
      {"model.bn_eps", &m.bn_eps, "BatchNorm epsilon", {}, 0, 1},
      {"model.padding", &m.padding, "convolution padding", {"tf_same", "symmetric"}},
      {"model.extra_width",
       &m.extra_width,
       "extra width multiplier (reduced test models)",
       {},
       0.01,
       4},
      {"model.extra_depth",
       &m.extra_depth,
       "extra depth multiplier (reduced test models)",
       {},
       0.01,
       4},
      {"model.channels_last", &m.channels_last, "NHWC memory format"},
      {"data.path", &d.path, "HDF5 data file (effnet-prepare); --data overrides"},
      {"data.batch_size", &d.batch_size, "batch size per rank", {}, 1, 1 << 16},
      {"data.eval_batch_size",
       &d.eval_batch_size,
       "evaluation batch size; 0 = 2 * batch_size",
       {},
       0,
       1 << 16},
      {"data.eval_image_size",
       &d.eval_image_size,
       "evaluation image size; 0 = job.progressive.max_image_size",
       {},
       0,
       4096},
      {"data.prefetch_depth", &d.prefetch_depth, "batches read ahead", {}, 1, 64},
      {"optimizer.name", &o.name, "optimiser", {"adam", "adamw", "sgd", "rmsproptf"}},
      {"optimizer.lr", &o.lr, "peak learning rate", {}, 0, 100},
      {"optimizer.weight_decay",
       &o.weight_decay,
       "weight decay (L2; decoupled for adamw)",
       {},
       0,
       1},
      {"optimizer.decay_bn_and_bias", &o.decay_bn_and_bias,
       "apply weight decay to 1-d params (BN gamma/beta, biases) too"},
      {"optimizer.momentum", &o.momentum, "momentum (sgd, rmsproptf)", {}, 0, 1},
      {"optimizer.nesterov", &o.nesterov, "Nesterov momentum (sgd)"},
      {"optimizer.beta1", &o.beta1, "Adam beta1", {}, 0, 1},
      {"optimizer.beta2", &o.beta2, "Adam beta2", {}, 0, 1},
      {"optimizer.eps", &o.eps, "epsilon (adam: outside the sqrt; rmsproptf: inside)", {}, 0, 1},
      {"optimizer.rmsprop_decay", &o.rmsprop_decay, "RMSpropTF rho", {}, 0, 1},
      {"optimizer.label_smoothing", &o.label_smoothing, "label smoothing of the targets", {}, 0, 1},
      {"optimizer.clip_grad_norm",
       &o.clip_grad_norm,
       "clip the global gradient norm; 0 = off",
       {},
       0},
      {"schedule.name",
       &s.name,
       "learning-rate schedule after warmup",
       {"constant", "cosine", "exponential"}},
      {"schedule.warmup_epochs",
       &s.warmup_epochs,
       "linear warmup length (epochs, fractional ok)",
       {},
       0},
      {"schedule.warmup_lr_init",
       &s.warmup_lr_init,
       "learning rate at step 0 of the warmup",
       {},
       0},
      {"schedule.decay_rate",
       &s.decay_rate,
       "exponential: factor per decay_epochs (staircase)",
       {},
       0,
       1},
      {"schedule.decay_epochs", &s.decay_epochs, "exponential: epochs per decay step", {}, 1e-6},
      {"schedule.min_lr", &s.min_lr, "lower bound of the learning rate", {}, 0},
      {"augment.random_resized_crop", &a.random_resized_crop,
       "random resized crop (false: whole image resized)"},
      {"augment.crop_area_min", &a.crop_area_min, "crop area fraction, lower bound", {}, 0.01, 1},
      {"augment.crop_area_max", &a.crop_area_max, "crop area fraction, upper bound", {}, 0.01, 1},
      {"augment.aspect_min", &a.aspect_min, "crop aspect ratio, lower bound", {}, 0.1, 10},
      {"augment.aspect_max", &a.aspect_max, "crop aspect ratio, upper bound", {}, 0.1, 10},
      {"augment.hflip_prob", &a.hflip_prob, "horizontal flip probability", {}, 0, 1},
      {"augment.vflip_prob", &a.vflip_prob, "vertical flip probability", {}, 0, 1},
      {"augment.rot90", &a.rot90, "random rotation by a multiple of 90 degrees"},
      {"augment.randaug_layers",
       &a.randaug_layers,
       "RandAugment ops per image (magnitude from job.progressive)",
       {},
       0,
       8},
      {"augment.randaug_translate_px",
       &a.randaug_translate_px,
       "RandAugment translate in pixels at magnitude 10 (official 100)",
       {},
       0},
      {"augment.randaug_cutout_px",
       &a.randaug_cutout_px,
       "RandAugment cutout half-size in pixels at magnitude 10 (official 40)",
       {},
       0},
      {"augment.normalize", &a.normalize, "input normalisation", {"imagenet", "inception", "none"}},
      {"augment.eval_center_crop", &a.eval_center_crop,
       "evaluation: centre crop size/(size+32), then resize"},
      {"ema.enabled", &e.enabled, "exponential moving average of weights and BN buffers"},
      {"ema.decay", &e.decay, "EMA decay", {}, 0, 1},
      {"ema.tf_warmup", &e.tf_warmup, "TF warmup: decay_t = min(decay, (1+t)/(10+t))"},
      {"ema.evaluate_with_ema", &e.evaluate_with_ema, "validation and test use the EMA weights"},
      {"checkpoint.resume", &k.resume, "auto (latest committed) | never | a checkpoint file"},
      {"checkpoint.keep_last",
       &k.keep_last,
       "epoch checkpoints kept (besides best.pt)",
       {},
       1,
       1000},
      {"checkpoint.save_best", &k.save_best, "keep best.pt (by job.early_stopping.best_metric)"},
      {"output.device", &out.device, "auto | cpu | cuda | cuda:N"},
      {"output.bf16", &out.bf16, "bf16 autocast on CUDA"},
      {"output.threads", &out.threads, "intra-op CPU threads; 0 = LibTorch default", {}, 0, 1024},
      {"output.log_every_steps", &out.log_every_steps, "step records in metrics.jsonl", {}, 1},
      {"output.tensorboard", &out.tensorboard, "write TensorBoard event files"},
      {"output.progress", &out.progress, "progress bar on a terminal"},
      {"output.stop_after_epoch",
       &out.stop_after_epoch,
       ">= 0: exit after this epoch's checkpoint (tests, preemption drills)",
       {},
       -1},
  };
}

const std::vector<std::string> kSections = {
    "job", "model", "data", "optimizer", "schedule", "augment", "ema", "checkpoint", "output"};

std::string Join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

std::string ValueString(const Field& f) {
  std::ostringstream ss;
  std::visit(
      [&](auto* p) {
        using T = std::decay_t<decltype(*p)>;
        if constexpr (std::is_same_v<T, bool>) {
          ss << (*p ? "true" : "false");
        } else if constexpr (std::is_same_v<T, std::string>) {
          ss << (p->empty() ? "\"\"" : *p);
        } else {
          ss << *p;
        }
      },
      f.ptr);
  return ss.str();
}

Status ReadField(const Field& f, const YAML::Node& node) {
  const std::string dump = YAML::Dump(node);
  auto bad = [&](const std::string& want) {
    return InvalidArgument(f.key + ": expected " + want + ", got '" + dump + "'");
  };
  if (!node.IsScalar()) return bad("a scalar");
  try {
    if (auto* p = std::get_if<int*>(&f.ptr)) {
      const double v = node.as<double>();
      if (v != std::floor(v)) return bad("an integer");
      if (v < f.min || v > f.max) {
        std::ostringstream ss;
        ss << "an integer in [" << f.min << ", " << f.max << "]";
        return bad(ss.str());
      }
      **p = static_cast<int>(v);
    } else if (auto* p = std::get_if<double*>(&f.ptr)) {
      const double v = node.as<double>();
      if (!std::isfinite(v) || v < f.min || v > f.max) {
        std::ostringstream ss;
        ss << "a number in [" << f.min << ", " << f.max << "]";
        return bad(ss.str());
      }
      **p = v;
    } else if (auto* p = std::get_if<bool*>(&f.ptr)) {
      **p = node.as<bool>();
    } else if (auto* p = std::get_if<std::string*>(&f.ptr)) {
      const auto v = node.as<std::string>();
      if (!f.allowed.empty() &&
          std::find(f.allowed.begin(), f.allowed.end(), v) == f.allowed.end()) {
        return bad(Join(f.allowed, "|"));
      }
      **p = v;
    }
  } catch (const YAML::Exception&) {
    if (std::holds_alternative<bool*>(f.ptr)) return bad("true|false");
    if (std::holds_alternative<int*>(f.ptr)) return bad("an integer");
    return bad("a number");
  }
  return Status::Ok();
}

Status ApplyOverride(YAML::Node& root, const std::string& kv) {
  const auto eq = kv.find('=');
  if (eq == std::string::npos || eq == 0) {
    return InvalidArgument("--set " + kv + ": expected section.field=value");
  }
  const std::string key = kv.substr(0, eq), value = kv.substr(eq + 1);
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
  if (parts.size() < 2) return InvalidArgument("--set " + kv + ": expected section.field=value");
  YAML::Node parsed;
  try {
    parsed = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    return InvalidArgument("--set " + key + ": cannot parse value '" + value + "'");
  }
  if (!root.IsMap()) root = YAML::Node(YAML::NodeType::Map);
  // Walk with reset() (rebinding), not operator= (which would assign values).
  YAML::Node n;
  n.reset(root);
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node child = n[parts[i]];
    if (!child.IsDefined() || child.IsNull()) {
      n[parts[i]] = YAML::Node(YAML::NodeType::Map);
      child = n[parts[i]];
    }
    YAML::Node next;
    next.reset(child);
    n.reset(next);
  }
  n[parts.back()] = parsed;
  return Status::Ok();
}

Status Validate(const TrainConfig& c) {
  if (c.augment.crop_area_min > c.augment.crop_area_max) {
    return InvalidArgument("augment.crop_area_min: must be <= augment.crop_area_max");
  }
  if (c.augment.aspect_min > c.augment.aspect_max) {
    return InvalidArgument("augment.aspect_min: must be <= augment.aspect_max");
  }
  return Status::Ok();
}

}  // namespace

Result<TrainConfig> ParseTrainConfig(const std::string& yaml_text,
                                     const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return InvalidArgument(std::string("config: YAML error: ") + e.what());
  }
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) return InvalidArgument("config: expected a mapping of sections");
  for (const auto& kv : overrides) EFFNET_RETURN_IF_ERROR(ApplyOverride(root, kv));
  TrainConfig c;
  auto fields = Fields(c);
  for (const auto& sec : root) {
    const auto name = sec.first.as<std::string>();
    if (std::find(kSections.begin(), kSections.end(), name) == kSections.end()) {
      return InvalidArgument(name + ": unknown section (allowed: " + Join(kSections, ", ") + ")");
    }
    if (name == "job") continue;
    if (sec.second.IsNull()) continue;
    if (!sec.second.IsMap()) return InvalidArgument(name + ": expected a mapping");
    for (const auto& kv : sec.second) {
      const auto key = name + "." + kv.first.as<std::string>();
      auto it =
          std::find_if(fields.begin(), fields.end(), [&](const Field& f) { return f.key == key; });
      if (it == fields.end()) {
        std::vector<std::string> allowed;
        for (const auto& f : fields) {
          if (f.key.compare(0, name.size() + 1, name + ".") == 0) {
            allowed.push_back(f.key.substr(name.size() + 1));
          }
        }
        return InvalidArgument(key + ": unknown field (allowed: " + Join(allowed, ", ") + ")");
      }
      EFFNET_RETURN_IF_ERROR(ReadField(*it, kv.second));
    }
  }
  auto job = job::ParseJobConfig(root["job"]);
  if (!job.ok()) return job.status();
  c.job = std::move(job).value();
  EFFNET_RETURN_IF_ERROR(Validate(c));
  return c;
}

Result<TrainConfig> LoadTrainConfig(const std::string& path,
                                    const std::vector<std::string>& overrides) {
  auto text = ReadFile(path);
  if (!text.ok()) return text.status().WithContext("reading config");
  auto c = ParseTrainConfig(*text, overrides);
  if (!c.ok()) return c.status().WithContext(path);
  return c;
}

std::string TrainConfigToYaml(const TrainConfig& cfg) {
  TrainConfig c = cfg;
  std::ostringstream ss;
  ss << "job:\n";
  std::stringstream job(job::JobConfigToYaml(c.job));
  for (std::string line; std::getline(job, line);) ss << "  " << line << "\n";
  std::string section;
  for (const auto& f : Fields(c)) {
    const auto dot = f.key.find('.');
    const auto sec = f.key.substr(0, dot);
    if (sec != section) {
      ss << sec << ":\n";
      section = sec;
    }
    std::string v = ValueString(f);
    if (std::holds_alternative<std::string*>(f.ptr) && v != "\"\"") {
      YAML::Emitter e;
      e << v;
      v = e.c_str();
    }
    ss << "  " << f.key.substr(dot + 1) << ": " << v << "\n";
  }
  return ss.str();
}

std::string ConfigDocMarkdown() {
  TrainConfig c;
  std::ostringstream ss;
  ss << "| key | type | default | allowed | meaning |\n|---|---|---|---|---|\n";
  for (const auto& f : Fields(c)) {
    std::string type = std::visit(
        [](auto* p) -> std::string {
          using T = std::decay_t<decltype(*p)>;
          if constexpr (std::is_same_v<T, bool>) return "bool";
          if constexpr (std::is_same_v<T, int>) return "int";
          if constexpr (std::is_same_v<T, double>) return "float";
          return "string";
        },
        f.ptr);
    std::string allowed = Join(f.allowed, " \\| ");
    if (allowed.empty() && (f.min > -kInf || f.max < kInf)) {
      std::ostringstream r;
      r << "[" << (f.min > -kInf ? std::to_string(f.min) : "-inf") << ", "
        << (f.max < kInf ? std::to_string(f.max) : "inf") << "]";
      allowed = r.str();
      // Trim trailing zeros of std::to_string.
      std::string t;
      for (size_t i = 0; i < allowed.size(); ++i) {
        if (allowed[i] == '.') {
          size_t j = i + 1;
          while (j < allowed.size() && isdigit(allowed[j])) ++j;
          size_t k = j;
          while (k > i + 1 && allowed[k - 1] == '0') --k;
          t += (k == i + 1) ? "" : allowed.substr(i, k - i);
          i = j - 1;
        } else {
          t += allowed[i];
        }
      }
      allowed = t;
    }
    ss << "| `" << f.key << "` | " << type << " | `" << ValueString(f) << "` | " << allowed << " | "
       << f.doc << " |\n";
  }
  return ss.str();
}

}  // namespace effnet::train
