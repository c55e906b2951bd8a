#include "common/job/config.h"

#include <yaml-cpp/yaml.h>

#include <set>
#include <sstream>

namespace effnet::job {
namespace {

Status CheckKeys(const YAML::Node& node, const std::string& where,
                 const std::set<std::string>& allowed) {
  if (!node.IsMap()) return InvalidArgument(where + ": expected a mapping");
  for (const auto& kv : node) {
    const auto key = kv.first.as<std::string>();
    if (!allowed.count(key)) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      return InvalidArgument(where + "." + key + ": unknown field (allowed: " + list + ")");
    }
  }
  return Status::Ok();
}

template <typename T>
Status Read(const YAML::Node& node, const std::string& key, const std::string& where, T* out) {
  if (!node[key]) return Status::Ok();
  try {
    *out = node[key].as<T>();
  } catch (const YAML::Exception&) {
    return InvalidArgument(where + "." + key + ": cannot parse '" + YAML::Dump(node[key]) + "'");
  }
  return Status::Ok();
}

}  // namespace

Result<JobConfig> ParseJobConfig(const YAML::Node& job) {
  JobConfig c;
  if (!job || job.IsNull()) return c;
  EFFNET_RETURN_IF_ERROR(
      CheckKeys(job, "job", {"epochs", "seed", "progressive", "early_stopping"}));
  EFFNET_RETURN_IF_ERROR(Read(job, "epochs", "job", &c.epochs));
  EFFNET_RETURN_IF_ERROR(Read(job, "seed", "job", &c.seed));
  if (c.epochs < 1)
    return InvalidArgument("job.epochs: must be >= 1, got " + std::to_string(c.epochs));
  if (const auto p = job["progressive"]) {
    const std::string w = "job.progressive";
    EFFNET_RETURN_IF_ERROR(
        CheckKeys(p, w,
                  {"num_stages", "formula", "min_image_size", "max_image_size", "min_randaug",
                   "max_randaug", "min_mixup", "max_mixup", "min_cutmix", "max_cutmix",
                   "min_dropout", "max_dropout", "size_multiple"}));
    auto& g = c.progressive;
    EFFNET_RETURN_IF_ERROR(Read(p, "num_stages", w, &g.num_stages));
    std::string formula = g.formula == ScheduleFormula::kPaper ? "paper" : "official";
    EFFNET_RETURN_IF_ERROR(Read(p, "formula", w, &formula));
    if (formula == "paper") {
      g.formula = ScheduleFormula::kPaper;
    } else if (formula == "official") {
      g.formula = ScheduleFormula::kOfficial;
    } else {
      return InvalidArgument(w + ".formula: expected paper|official, got '" + formula + "'");
    }
    EFFNET_RETURN_IF_ERROR(Read(p, "min_image_size", w, &g.min_image_size));
    EFFNET_RETURN_IF_ERROR(Read(p, "max_image_size", w, &g.max_image_size));
    EFFNET_RETURN_IF_ERROR(Read(p, "min_randaug", w, &g.min_randaug));
    EFFNET_RETURN_IF_ERROR(Read(p, "max_randaug", w, &g.max_randaug));
    EFFNET_RETURN_IF_ERROR(Read(p, "min_mixup", w, &g.min_mixup));
    EFFNET_RETURN_IF_ERROR(Read(p, "max_mixup", w, &g.max_mixup));
    EFFNET_RETURN_IF_ERROR(Read(p, "min_cutmix", w, &g.min_cutmix));
    EFFNET_RETURN_IF_ERROR(Read(p, "max_cutmix", w, &g.max_cutmix));
    EFFNET_RETURN_IF_ERROR(Read(p, "min_dropout", w, &g.min_dropout));
    EFFNET_RETURN_IF_ERROR(Read(p, "max_dropout", w, &g.max_dropout));
    EFFNET_RETURN_IF_ERROR(Read(p, "size_multiple", w, &g.size_multiple));
    EFFNET_RETURN_IF_ERROR(Validate(g));
  }
  if (const auto e = job["early_stopping"]) {
    const std::string w = "job.early_stopping";
    EFFNET_RETURN_IF_ERROR(CheckKeys(e, w, {"patience", "min_delta", "best_metric"}));
    EFFNET_RETURN_IF_ERROR(Read(e, "patience", w, &c.early_stopping.patience));
    EFFNET_RETURN_IF_ERROR(Read(e, "min_delta", w, &c.early_stopping.min_delta));
    EFFNET_RETURN_IF_ERROR(Read(e, "best_metric", w, &c.early_stopping.best_metric));
    const auto& m = c.early_stopping.best_metric;
    if (m != "val_accuracy" && m != "val_loss") {
      return InvalidArgument(w + ".best_metric: expected val_accuracy|val_loss, got '" + m + "'");
    }
  }
  return c;
}

Result<JobConfig> LoadJobConfig(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    return InvalidArgument(path + ": " + e.what());
  }
  auto r = ParseJobConfig(root["job"]);
  if (!r.ok()) return r.status().WithContext(path);
  return r;
}

std::string JobConfigToYaml(const JobConfig& c) {
  YAML::Emitter out;
  const auto& g = c.progressive;
  out << YAML::BeginMap << YAML::Key << "epochs" << YAML::Value << c.epochs << YAML::Key << "seed"
      << YAML::Value << c.seed << YAML::Key << "progressive" << YAML::Value << YAML::BeginMap
      << YAML::Key << "num_stages" << YAML::Value << g.num_stages << YAML::Key << "formula"
      << YAML::Value << (g.formula == ScheduleFormula::kPaper ? "paper" : "official") << YAML::Key
      << "min_image_size" << YAML::Value << g.min_image_size << YAML::Key << "max_image_size"
      << YAML::Value << g.max_image_size << YAML::Key << "min_randaug" << YAML::Value
      << g.min_randaug << YAML::Key << "max_randaug" << YAML::Value << g.max_randaug << YAML::Key
      << "min_mixup" << YAML::Value << g.min_mixup << YAML::Key << "max_mixup" << YAML::Value
      << g.max_mixup << YAML::Key << "min_cutmix" << YAML::Value << g.min_cutmix << YAML::Key
      << "max_cutmix" << YAML::Value << g.max_cutmix << YAML::Key << "min_dropout" << YAML::Value
      << g.min_dropout << YAML::Key << "max_dropout" << YAML::Value << g.max_dropout << YAML::Key
      << "size_multiple" << YAML::Value << g.size_multiple << YAML::EndMap << YAML::Key
      << "early_stopping" << YAML::Value << YAML::BeginMap << YAML::Key << "patience" << YAML::Value
      << c.early_stopping.patience << YAML::Key << "min_delta" << YAML::Value
      << c.early_stopping.min_delta << YAML::Key << "best_metric" << YAML::Value
      << c.early_stopping.best_metric << YAML::EndMap << YAML::EndMap;
  return out.c_str();
}

}  // namespace effnet::job
