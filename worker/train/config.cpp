#include "worker/train/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <sstream>
#include <variant>

#include "common/atomic_file.h"

namespace effnet::train {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// Upper bound of every duration in seconds (~11.6 days): deadlines are now() + value, and a larger
// value would overflow the clock.
constexpr double kMaxSeconds = 1e6;

// An enum field: its value as the index into `names` (the allowed spellings, in enum order).
struct EnumRef {
  std::function<int()> get;
  std::function<void(int)> set;
};

// Note [one field table]: parsing, the resolved YAML and the documentation all come from this
// table, so a field cannot be parsed but undocumented, or documented with a stale default. Keys
// are "section.name" or "section.group.name" (job.progressive.*); a field's struct and default
// live with the code that uses it (config.h lists where), never here.
struct Field {
  std::string key;
  std::variant<int*, uint64_t*, double*, bool*, std::string*, EnumRef> ptr;
  std::string doc;
  std::vector<std::string> allowed = {};  // strings and enums: the allowed values
  double min = -kInf, max = kInf;         // numbers: the allowed range
};

template <typename E>
Field Enum(std::string key, E* p, std::string doc, std::vector<std::string> names) {
  EnumRef ref{[p] { return static_cast<int>(*p); }, [p](int v) { *p = static_cast<E>(v); }};
  return {std::move(key), ref, std::move(doc), std::move(names)};
}

// One line per section for docs/config.md, in table order.
const std::vector<std::pair<std::string, std::string>>& Sections() {
  static const std::vector<std::pair<std::string, std::string>> s = {
      {"job",
       "what the control plane decides with: epochs, seed, progressive learning, early stopping "
       "(common/job/; the coordinator reads this section)"},
      {"model", "the EfficientNetV2 variant and its build options (worker/model/architecture.h)"},
      {"data", "the HDF5 store and batching (storage/, worker/data/loader.h)"},
      {"optimizer", "optimiser and loss (worker/train/optim.h)"},
      {"schedule", "learning-rate schedule (worker/train/schedule.h)"},
      {"augment", "training augmentation on the device (worker/data/augment.h)"},
      {"ema", "exponential moving average of the weights (worker/train/ema.h)"},
      {"checkpoint", "checkpoints and resume (worker/train/trainer.h)"},
      {"dist", "data parallelism: backend, gradient buckets, collectives (worker/dist/)"},
      {"client", "the worker's coordinator client (worker/client/)"},
      {"runtime", "where and how the process computes"},
      {"output", "logs, TensorBoard, progress"},
  };
  return s;
}

std::vector<Field> Fields(TrainConfig& c) {
  auto& j = c.job;
  auto& g = c.job.progressive;
  auto& es = c.job.early_stopping;
  auto& m = c.model;
  auto& tr = c.transfer;
  auto& d = c.data;
  auto& o = c.optimizer;
  auto& s = c.schedule;
  auto& a = c.augment;
  auto& e = c.ema;
  auto& k = c.checkpoint;
  auto& dp = c.dist;
  auto& cl = c.client;
  auto& rt = c.runtime;
  auto& out = c.output;
  return {
      {"job.epochs", &j.epochs, "total epochs", {}, 1, 1e6},
      {"job.seed", &j.seed, "seeds shard plans, augmentation, dropout and init", {}, 0},
      {"job.progressive.num_stages",
       &g.num_stages,
       "progressive-learning stages; 1 = off (max values throughout)",
       {},
       1,
       1000},
      Enum("job.progressive.formula", &g.formula,
           "paper (first stage = min values) | official (sizes at (i+1)/M, never the min)",
           {"paper", "official"}),
      {"job.progressive.min_image_size",
       &g.min_image_size,
       "first-stage train image size",
       {},
       32,
       4096},
      {"job.progressive.max_image_size",
       &g.max_image_size,
       "last-stage train image size",
       {},
       32,
       4096},
      {"job.progressive.min_randaug",
       &g.min_randaug,
       "RandAugment magnitude, first stage (0 = off)",
       {},
       0,
       30},
      {"job.progressive.max_randaug",
       &g.max_randaug,
       "RandAugment magnitude, last stage",
       {},
       0,
       30},
      {"job.progressive.min_mixup", &g.min_mixup, "mixup alpha, first stage (0 = off)", {}, 0, 10},
      {"job.progressive.max_mixup", &g.max_mixup, "mixup alpha, last stage", {}, 0, 10},
      {"job.progressive.min_cutmix",
       &g.min_cutmix,
       "cutmix alpha, first stage (0 = off)",
       {},
       0,
       10},
      {"job.progressive.max_cutmix", &g.max_cutmix, "cutmix alpha, last stage", {}, 0, 10},
      {"job.progressive.min_dropout",
       &g.min_dropout,
       "classifier dropout, first stage",
       {},
       0,
       0.95},
      {"job.progressive.max_dropout",
       &g.max_dropout,
       "classifier dropout, last stage",
       {},
       0,
       0.95},
      {"job.progressive.size_multiple",
       &g.size_multiple,
       "image sizes are rounded down to a multiple of this",
       {},
       1,
       512},
      {"job.early_stopping.patience",
       &es.patience,
       "epochs without val_loss improvement before stopping; 0 = never",
       {},
       0},
      {"job.early_stopping.min_delta",
       &es.min_delta,
       "a val_loss improvement must exceed this",
       {},
       0},
      {"job.early_stopping.best_metric",
       &es.best_metric,
       "which epoch's weights are the best checkpoint",
       {"val_accuracy", "val_loss"}},
      {"model.variant", &m.variant, "EfficientNetV2 variant", model::KnownVariants()},
      {"model.num_classes",
       &m.num_classes,
       "classes; 0 = from the data file, > 0 must equal the file's class count",
       {},
       0},
      Enum("model.head_init", &m.head_init,
           "init of a new classifier (from scratch, or a new head on pretrained weights): glorot = "
           "a Keras Dense layer, reference = official/timm U(+-1/sqrt(classes)); Note [head init]",
           model::HeadInitNames()),
      Enum("model.conv_init", &m.conv_init,
           "init of convolution kernels from scratch: reference = official/timm Normal(0, "
           "sqrt(2/fan_out)), keras = keras.applications' truncated normal of the same variance; "
           "Note [conv init]",
           model::ConvInitNames()),
      {"model.drop_path", &m.drop_path, "stochastic depth rate (last block)", {}, 0, 0.95},
      {"model.bn_momentum", &m.bn_momentum, "BatchNorm momentum (PyTorch convention)", {}, 0, 1},
      {"model.bn_eps", &m.bn_eps, "BatchNorm epsilon", {}, 0, 1},
      Enum("model.padding", &m.padding, "convolution padding", model::PaddingNames()),
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
      {"model.pretrained", &tr.pretrained,
       "start from these weights (timm-keyed safetensors or torch zip, or Keras .keras/.weights.h5/"
       ".h5; format read from the content; not when resuming); a different class count gets a new "
       "Glorot-initialised head; --pretrained overrides"},
      {"model.freeze", &tr.freeze,
       "frozen part (requires_grad off, BN statistics fixed): none | backbone (all but the "
       "classifier) | stages:N (stem + the first N stages)"},
      {"model.unfreeze_epoch",
       &tr.unfreeze_epoch,
       "0-based epoch from which everything trains; -1 = never (refused with more than one rank)",
       {},
       -1},
      {"data.path", &d.path, "HDF5 data file (effnet-prepare); --data overrides"},
      {"data.batch_size",
       &d.batch_size,
       "global batch: images per optimiser step over all ranks (each rank trains batch_size / "
       "world size; the world size must divide it)",
       {},
       1,
       1 << 16},
      {"data.eval_batch_size",
       &d.eval_batch_size,
       "evaluation batch per rank; 0 = 2 * the per-rank train batch",
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
      {"optimizer.lr",
       &o.lr,
       "peak learning rate (for lr_base_batch when that is > 0)",
       {},
       0,
       100},
      {"optimizer.lr_base_batch",
       &o.lr_base_batch,
       "0 = optimizer.lr as given; > 0 = linear scaling rule: peak lr = lr * data.batch_size / "
       "lr_base_batch",
       {},
       0,
       1 << 20},
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
      {"optimizer.eps_form",
       &o.eps_form,
       "adam/adamw: where eps enters; torch = sqrt(v_hat) + eps (PyTorch, timm); keras = sqrt(v) "
       "+ eps before the bias correction (TF/Keras's epsilon hat: torch's eps / sqrt(1 - "
       "beta2^step))",
       {"torch", "keras"}},
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
      {"schedule.decay_reference_epochs",
       &s.decay_reference_epochs,
       "exponential: 0 = decay_epochs as given; > 0 = decay_epochs was written for a run of this "
       "many epochs and is scaled by job.epochs / decay_reference_epochs",
       {},
       0},
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
      {"checkpoint.resume", &k.resume, "auto (latest committed) | never | a checkpoint"},
      {"checkpoint.keep_last",
       &k.keep_last,
       "epoch checkpoints kept (besides the best one)",
       {},
       1,
       1000},
      {"checkpoint.save_best", &k.save_best,
       "keep the best checkpoint (job.early_stopping.best_metric)"},
      {"dist.backend",
       &dp.backend,
       "collective transport (auto: nccl on CUDA, else mpi)",
       {"auto", "nccl", "mpi"}},
      {"dist.sync_batchnorm", &dp.sync_batchnorm, "cross-rank BatchNorm statistics"},
      {"dist.comm.timeout_s",
       &dp.comm.timeout_s,
       "deadline of every collective (s)",
       {},
       1e-3,
       kMaxSeconds},
      {"dist.comm.heartbeat_interval_s",
       &dp.comm.heartbeat_interval_s,
       "progress exchange between ranks (names missing ranks on a timeout)",
       {},
       1e-3,
       kMaxSeconds},
      {"dist.comm.heartbeat_silence_s",
       &dp.comm.heartbeat_silence_s,
       "a peer silent this long is reported as dead or frozen",
       {},
       1e-3,
       kMaxSeconds},
      {"dist.reducer.first_bucket_mb",
       &dp.reducer.first_bucket_mb,
       "cap of the first gradient bucket (MiB): communication starts early",
       {},
       1e-3},
      {"dist.reducer.bucket_cap_mb",
       &dp.reducer.bucket_cap_mb,
       "cap of every later gradient bucket (MiB)",
       {},
       1e-3},
      {"dist.reducer.compress_bf16", &dp.reducer.compress_bf16,
       "all-reduce a bf16 copy of each fp32 bucket"},
      {"dist.reducer.rebuild_buckets", &dp.reducer.rebuild_buckets,
       "rebuild the buckets once, in the order gradients became ready in step 0"},
      {"dist.reducer.record_events", &dp.reducer.record_events,
       "keep the reducer's per-step event log"},
      {"client.call_timeout_s",
       &cl.call_timeout_s,
       "deadline of each coordinator call (s)",
       {},
       0.1,
       kMaxSeconds},
      {"client.heartbeat_interval_s",
       &cl.heartbeat_interval_s,
       "seconds between heartbeats to the coordinator",
       {},
       0.01,
       kMaxSeconds},
      {"client.register_timeout_s",
       &cl.register_timeout_s,
       "how long registration is retried until every rank is in (s)",
       {},
       0.1,
       kMaxSeconds},
      {"client.unavailable_timeout_s",
       &cl.unavailable_timeout_s,
       "how long calls are retried while the coordinator is unreachable (s)",
       {},
       0.1,
       kMaxSeconds},
      {"client.decision_timeout_s",
       &cl.decision_timeout_s,
       "how long a rank waits for the other ranks' epoch metrics (s)",
       {},
       0.1,
       kMaxSeconds},
      {"runtime.device", &rt.device, "auto | cpu | cuda | cuda:N"},
      {"runtime.bf16",
       &rt.bf16,
       "bf16 autocast of the training forward pass and the per-epoch validation (test metrics, "
       "effnet-evaluate and effnet-predict stay fp32): auto = on CUDA and on CPUs with "
       "AVX512-BF16 or AMX (the faster setting there), fp32 elsewhere; on = required (refused on "
       "a CPU without them); off = fp32",
       {"auto", "on", "off"}},
      {"runtime.threads",
       &rt.threads,
       "intra-op CPU threads; 0 = LibTorch's default (the cores), shared among the ranks mpirun "
       "starts on one host",
       {},
       0,
       1024},
      {"runtime.channels_last",
       &rt.channels_last,
       "NHWC memory format of weights and inputs: auto = on wherever bf16 autocast is on (with "
       "bf16 the fastest setting measured on CPU and CUDA), on, off",
       {"auto", "on", "off"}},
      {"runtime.fused_kernels",
       &rt.fused_kernels,
       "BN + SiLU as one fused CPU kernel, forward and backward: auto = where it applies "
       "(channels_last float or bf16 tensors on a CPU with AVX-512 and AVX512-BF16), off = "
       "LibTorch's separate ops everywhere",
       {"auto", "off"}},
      {"runtime.cuda_graphs",
       &rt.cuda_graphs,
       "capture forward, loss and backward of a training step as one CUDA graph per stage shape "
       "and replay it: auto = on CUDA in a process without gradient hooks (one GPU, effnet-train), "
       "on = required (refused where it cannot run), off = eager",
       {"auto", "on", "off"}},
      {"runtime.cudnn_benchmark",
       &rt.cudnn_benchmark,
       "cuDNN picks the fastest convolution algorithms per shape: auto = on CUDA, on, off",
       {"auto", "on", "off"}},
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

std::string Join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

std::vector<std::string> SplitKey(const std::string& key) {
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
  return parts;
}

std::string TypeName(const Field& f) {
  return std::visit(
      [](const auto& p) -> std::string {
        using P = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<P, bool*>) return "bool";
        if constexpr (std::is_same_v<P, int*> || std::is_same_v<P, uint64_t*>) return "int";
        if constexpr (std::is_same_v<P, double*>) return "float";
        if constexpr (std::is_same_v<P, EnumRef>) return "enum";
        return "string";
      },
      f.ptr);
}

// The value as YAML scalar text.
std::string ValueString(const Field& f) {
  std::ostringstream ss;
  std::visit(
      [&](const auto& p) {
        using P = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<P, bool*>) {
          ss << (*p ? "true" : "false");
        } else if constexpr (std::is_same_v<P, std::string*>) {
          ss << (p->empty() ? "\"\"" : *p);
        } else if constexpr (std::is_same_v<P, EnumRef>) {
          ss << f.allowed.at(static_cast<size_t>(p.get()));
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
  auto range = [&](const char* what) {
    std::ostringstream ss;
    ss << what << " in [" << f.min << ", " << f.max << "]";
    return ss.str();
  };
  if (!node.IsScalar()) return bad("a scalar");
  try {
    if (auto* p = std::get_if<int*>(&f.ptr)) {
      const double v = node.as<double>();
      if (v != std::floor(v)) return bad("an integer");
      if (v < f.min || v > f.max) return bad(range("an integer"));
      // An open upper bound still ends at INT_MAX: the cast below must not overflow.
      if (v > std::numeric_limits<int>::max() || v < std::numeric_limits<int>::min()) {
        return bad("an integer in [" + std::to_string(std::numeric_limits<int>::min()) + ", " +
                   std::to_string(std::numeric_limits<int>::max()) + "]");
      }
      **p = static_cast<int>(v);
    } else if (auto* p = std::get_if<uint64_t*>(&f.ptr)) {
      const std::string text = node.as<std::string>();
      if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos) {
        return bad("a non-negative integer");
      }
      **p = node.as<uint64_t>();
    } else if (auto* p = std::get_if<double*>(&f.ptr)) {
      const double v = node.as<double>();
      if (!std::isfinite(v) || v < f.min || v > f.max) return bad(range("a number"));
      **p = v;
    } else if (auto* p = std::get_if<bool*>(&f.ptr)) {
      **p = node.as<bool>();
    } else if (auto* p = std::get_if<std::string*>(&f.ptr)) {
      auto v = node.as<std::string>();
      // Note [legacy spellings]: values that older configs (and the config.yaml inside older
      // checkpoints) wrote for a field whose type changed; read as their meaning today.
      static const std::map<std::string, std::map<std::string, std::string>> kLegacy = {
          {"runtime.bf16", {{"true", "auto"}, {"false", "off"}}},          // was a bool (CUDA only)
          {"runtime.channels_last", {{"true", "on"}, {"false", "off"}}}};  // was a bool
      if (auto k = kLegacy.find(f.key); k != kLegacy.end()) {
        if (auto m = k->second.find(v); m != k->second.end()) v = m->second;
      }
      if (!f.allowed.empty() &&
          std::find(f.allowed.begin(), f.allowed.end(), v) == f.allowed.end()) {
        return bad(Join(f.allowed, "|"));
      }
      **p = v;
    } else if (auto* p = std::get_if<EnumRef>(&f.ptr)) {
      const auto v = node.as<std::string>();
      auto it = std::find(f.allowed.begin(), f.allowed.end(), v);
      if (it == f.allowed.end()) return bad(Join(f.allowed, "|"));
      p->set(static_cast<int>(it - f.allowed.begin()));
    }
  } catch (const YAML::Exception&) {
    if (std::holds_alternative<bool*>(f.ptr)) return bad("true|false");
    if (std::holds_alternative<int*>(f.ptr) || std::holds_alternative<uint64_t*>(f.ptr)) {
      return bad("an integer");
    }
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
  const std::vector<std::string> parts = SplitKey(key);
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
    if (!child.IsMap()) {
      return InvalidArgument("--set " + key + ": " + parts[i] + " is not a mapping");
    }
    YAML::Node next;
    next.reset(child);
    n.reset(next);
  }
  n[parts.back()] = parsed;
  return Status::Ok();
}

// Reads the mapping `node` found at `prefix` ("job" or "job.progressive") into the fields below it.
// A mapping key as a name; a sequence, mapping or alias used as a key is an error, not a throw.
Result<std::string> KeyName(const YAML::Node& key, const std::string& where) {
  if (!key.IsScalar()) return InvalidArgument(where + ": a key must be a plain name");
  return key.Scalar();
}

// Note [duplicate keys]: yaml-cpp keeps both entries of a repeated key; lookups see the first,
// iteration (ReadMapping) the last. Which value wins would depend on how the key is read, so a
// repeated key anywhere in the document is refused with both lines (1-based), before overrides.
Status CheckDuplicateKeys(const YAML::Node& node, const std::string& prefix) {
  if (node.IsSequence()) {
    for (size_t i = 0; i < node.size(); ++i) {
      EFFNET_RETURN_IF_ERROR(CheckDuplicateKeys(node[i], prefix + "[" + std::to_string(i) + "]"));
    }
    return Status::Ok();
  }
  if (!node.IsMap()) return Status::Ok();
  std::vector<std::pair<std::string, int>> seen;  // key, 1-based line
  for (const auto& kv : node) {
    if (!kv.first.IsScalar()) continue;  // KeyName refuses it later
    const std::string name = kv.first.Scalar();
    const std::string key = prefix.empty() ? name : prefix + "." + name;
    const int line = kv.first.Mark().line + 1;
    for (const auto& [other, first_line] : seen) {
      if (other != name) continue;
      return InvalidArgument("line " + std::to_string(line) + ": duplicate key '" + key +
                             "' (first at line " + std::to_string(first_line) + ")");
    }
    seen.emplace_back(name, line);
    EFFNET_RETURN_IF_ERROR(CheckDuplicateKeys(kv.second, key));
  }
  return Status::Ok();
}

Status ReadMapping(const YAML::Node& node, const std::string& prefix, std::vector<Field>& fields) {
  if (node.IsNull()) return Status::Ok();
  if (!node.IsMap()) return InvalidArgument(prefix + ": expected a mapping");
  for (const auto& kv : node) {
    EFFNET_ASSIGN_OR_RETURN(const std::string name, KeyName(kv.first, prefix));
    const std::string key = prefix + "." + name;
    auto it =
        std::find_if(fields.begin(), fields.end(), [&](const Field& f) { return f.key == key; });
    if (it != fields.end()) {
      EFFNET_RETURN_IF_ERROR(ReadField(*it, kv.second));
      continue;
    }
    const bool group = std::any_of(fields.begin(), fields.end(), [&](const Field& f) {
      return f.key.compare(0, key.size() + 1, key + ".") == 0;
    });
    if (group) {
      EFFNET_RETURN_IF_ERROR(ReadMapping(kv.second, key, fields));
      continue;
    }
    std::vector<std::string> allowed;
    for (const auto& f : fields) {
      if (f.key.compare(0, prefix.size() + 1, prefix + ".") != 0) continue;
      const std::string rest = f.key.substr(prefix.size() + 1);
      const std::string name = rest.substr(0, rest.find('.'));
      if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) allowed.push_back(name);
    }
    return InvalidArgument(key + ": unknown field (allowed: " + Join(allowed, ", ") + ")");
  }
  return Status::Ok();
}

Status Validate(const TrainConfig& c) {
  EFFNET_RETURN_IF_ERROR(ParseFreeze(c.transfer.freeze).status());
  EFFNET_RETURN_IF_ERROR(job::Validate(c.job.progressive).WithContext("job"));
  EFFNET_RETURN_IF_ERROR(dist::Validate(c.dist));
  if (c.augment.crop_area_min > c.augment.crop_area_max) {
    return InvalidArgument("augment.crop_area_min: must be <= augment.crop_area_max");
  }
  if (c.data.eval_image_size > 0 && c.data.eval_image_size < 32) {
    return InvalidArgument(
        "data.eval_image_size: expected 0 (= job.progressive.max_image_size) or "
        "32..4096, got " +
        std::to_string(c.data.eval_image_size));
  }
  if (c.schedule.min_lr > c.optimizer.lr) {
    return InvalidArgument(
        "schedule.min_lr: must be <= optimizer.lr (the floor is above the peak)");
  }
  if (c.augment.aspect_min > c.augment.aspect_max) {
    return InvalidArgument("augment.aspect_min: must be <= augment.aspect_max");
  }
  return Status::Ok();
}

// Emits `fields` (in table order) as nested YAML mappings, two spaces per level.
std::string FieldsToYaml(const std::vector<Field>& fields) {
  std::ostringstream ss;
  std::vector<std::string> open;  // the mapping path printed last
  for (const auto& f : fields) {
    const std::vector<std::string> parts = SplitKey(f.key);
    const std::vector<std::string> path(parts.begin(), parts.end() - 1);
    size_t common = 0;
    while (common < open.size() && common < path.size() && open[common] == path[common]) ++common;
    for (size_t i = common; i < path.size(); ++i) {
      ss << std::string(2 * i, ' ') << path[i] << ":\n";
    }
    open = path;
    std::string v = ValueString(f);
    if (std::holds_alternative<std::string*>(f.ptr) && v != "\"\"") {
      YAML::Emitter e;
      e << v;
      v = e.c_str();
    }
    ss << std::string(2 * path.size(), ' ') << parts.back() << ": " << v << "\n";
  }
  return ss.str();
}

std::string RangeText(const Field& f) {
  if (f.min <= -kInf && f.max >= kInf) return "";
  auto num = [](double v) {
    std::ostringstream ss;
    ss << v;
    return ss.str();
  };
  return "[" + (f.min > -kInf ? num(f.min) : "-inf") + ", " + (f.max < kInf ? num(f.max) : "inf") +
         "]";
}

// The leading comment block of a preset file, as one line.
std::string PresetSummary(const std::string& text) {
  std::string summary;
  std::stringstream ss(text);
  for (std::string line; std::getline(ss, line);) {
    if (line.rfind("#", 0) != 0) break;
    line = line.substr(1);
    if (!line.empty() && line[0] == ' ') line = line.substr(1);
    summary += (summary.empty() ? "" : " ") + line;
  }
  return summary;
}

}  // namespace

Result<int> PerRankBatch(const DataSection& d, int world_size) {
  if (world_size < 1) return InvalidArgument("world size must be >= 1");
  if (d.batch_size % world_size != 0) {
    const int lo = d.batch_size / world_size * world_size;
    return InvalidArgument("data.batch_size is the global batch (all ranks together): " +
                           std::to_string(d.batch_size) + " is not divisible by the world size " +
                           std::to_string(world_size) + "; use a multiple of it (" +
                           (lo > 0 ? std::to_string(lo) + " or " : std::string()) +
                           std::to_string(lo + world_size) + ") or another number of ranks");
  }
  return d.batch_size / world_size;
}

double PeakLr(const TrainConfig& c) {
  const auto& o = c.optimizer;
  if (o.lr_base_batch <= 0) return o.lr;
  return o.lr * static_cast<double>(c.data.batch_size) / static_cast<double>(o.lr_base_batch);
}

double DecayEpochs(const TrainConfig& c) {
  const auto& s = c.schedule;
  if (s.decay_reference_epochs <= 0) return s.decay_epochs;
  return s.decay_epochs * static_cast<double>(c.job.epochs) / s.decay_reference_epochs;
}

Result<int> ParseFreeze(const std::string& text) {
  if (text == "none") return -1;
  if (text == "backbone") return kFreezeBackbone;
  const std::string prefix = "stages:";
  if (text.rfind(prefix, 0) == 0) {
    const std::string n = text.substr(prefix.size());
    if (!n.empty() && n.size() < 4 && n.find_first_not_of("0123456789") == std::string::npos) {
      return std::stoi(n);
    }
  }
  return InvalidArgument("model.freeze: expected none|backbone|stages:N, got '" + text + "'");
}

namespace {

Result<TrainConfig> ParseTrainConfigOrThrow(const std::string& yaml_text,
                                            const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return InvalidArgument(std::string("config: YAML error: ") + e.what());
  }
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) return InvalidArgument("config: expected a mapping of sections");
  EFFNET_RETURN_IF_ERROR(CheckDuplicateKeys(root, ""));
  for (const auto& kv : overrides) EFFNET_RETURN_IF_ERROR(ApplyOverride(root, kv));
  TrainConfig c;
  auto fields = Fields(c);
  for (const auto& sec : root) {
    EFFNET_ASSIGN_OR_RETURN(const std::string name, KeyName(sec.first, "config"));
    const auto& sections = Sections();
    if (std::none_of(sections.begin(), sections.end(),
                     [&](const auto& s) { return s.first == name; })) {
      std::vector<std::string> names;
      for (const auto& s : sections) names.push_back(s.first);
      return InvalidArgument(name + ": unknown section (allowed: " + Join(names, ", ") + ")");
    }
    EFFNET_RETURN_IF_ERROR(ReadMapping(sec.second, name, fields));
  }
  EFFNET_RETURN_IF_ERROR(Validate(c));
  return c;
}

}  // namespace

Result<TrainConfig> ParseTrainConfig(const std::string& yaml_text,
                                     const std::vector<std::string>& overrides) {
  // Every yaml-cpp call is meant to be checked first; this catch keeps a missed case (a node of
  // an unexpected kind) an error instead of std::terminate (docs/fuzzing.md).
  try {
    return ParseTrainConfigOrThrow(yaml_text, overrides);
  } catch (const YAML::Exception& e) {
    return InvalidArgument(std::string("config: ") + e.what());
  }
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
  return FieldsToYaml(Fields(c));
}

std::string JobConfigToYaml(const job::JobConfig& job) {
  TrainConfig c;
  c.job = job;
  std::vector<Field> fields = Fields(c);
  fields.erase(std::remove_if(fields.begin(), fields.end(),
                              [](const Field& f) { return f.key.rfind("job.", 0) != 0; }),
               fields.end());
  return FieldsToYaml(fields);
}

std::vector<std::string> RunDifferences(const TrainConfig& before, const TrainConfig& now) {
  static const char* const kNotTheRun[] = {"runtime.",           "output.",    "client.",
                                           "checkpoint.",        "dist.comm.", "data.path",
                                           "data.prefetch_depth"};
  TrainConfig a = before, b = now;
  const auto fa = Fields(a), fb = Fields(b);
  std::vector<std::string> out;
  for (size_t i = 0; i < fa.size(); ++i) {
    const std::string& key = fa[i].key;
    if (std::any_of(std::begin(kNotTheRun), std::end(kNotTheRun),
                    [&](const char* p) { return key.rfind(p, 0) == 0; })) {
      continue;
    }
    const std::string va = ValueString(fa[i]), vb = ValueString(fb[i]);
    if (va != vb) out.push_back(key + ": " + va + " -> " + vb);
  }
  return out;
}

std::string ConfigDocMarkdown() {
  TrainConfig c;
  const auto fields = Fields(c);
  std::ostringstream ss;
  ss << "# Run configuration\n\n"
        "<!-- Generated by `effnet-train --config-doc` from the field table in "
        "worker/train/config.cpp; do not edit (tests/train/test_config.cpp checks it). -->\n\n"
        "`effnet-train`, `effnet-worker`, `effnet-evaluate` and `effnet-coordinator` read one YAML "
        "document with the sections below. Give it as `--config FILE` or `--preset NAME`, then "
        "override single fields with `--set section.field=value` (repeatable; the value is parsed "
        "as YAML, e.g. `--set ema.enabled=true`). The apps' other flags are shortcuts for `--set` "
        "(`--data FILE` is `data.path`, `--pretrained FILE` is `model.pretrained`, "
        "`--stop-after-epoch K` is `output.stop_after_epoch`). "
        "Unknown sections or fields and bad values are refused with the field and the allowed "
        "values named, e.g. `optimizer.name: expected adam|adamw|sgd|rmsproptf, got 'lamb'`. The "
        "resolved config is written to `<run>/config.yaml` and into every checkpoint. What the "
        "settings do in training: docs/training.md.\n\n"
        "## Presets (`--preset NAME`; YAML in worker/train/presets/, embedded in the binaries)\n\n"
        "| preset | what |\n|---|---|\n";
  for (const auto& name : PresetNames()) {
    ss << "| `" << name << "` | " << PresetSummary(PresetText(name).value()) << " |\n";
  }
  for (const auto& [section, about] : Sections()) {
    ss << "\n## `" << section << ":` " << about << "\n\n"
       << "| key | type | default | allowed | meaning |\n|---|---|---|---|---|\n";
    for (const auto& f : fields) {
      if (f.key.compare(0, section.size() + 1, section + ".") != 0) continue;
      std::string allowed = Join(f.allowed, " \\| ");
      if (allowed.empty()) allowed = RangeText(f);
      std::string doc;
      for (char ch : f.doc) doc += ch == '|' ? std::string("\\|") : std::string(1, ch);
      ss << "| `" << f.key << "` | " << TypeName(f) << " | `" << ValueString(f) << "` | " << allowed
         << " | " << doc << " |\n";
    }
  }
  return ss.str();
}

}  // namespace effnet::train
