#include "worker/report/run_summary.h"

#include <cctype>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/atomic_file.h"

namespace effnet::report {
namespace {

using nlohmann::json;

Status FieldError(const std::string& source, const char* field, const std::string& what) {
  return InvalidArgument(source + ": field \"" + field + "\": " + what);
}

Result<const json*> Field(const json& obj, const std::string& source, const char* field) {
  auto it = obj.find(field);
  if (it == obj.end()) return FieldError(source, field, "missing");
  return &*it;
}

Status GetString(const json& obj, const std::string& source, const char* field, std::string* out) {
  EFFNET_ASSIGN_OR_RETURN(const json* v, Field(obj, source, field));
  if (!v->is_string()) {
    return FieldError(source, field, std::string("expected a string, found ") + v->type_name());
  }
  *out = v->get<std::string>();
  if (out->empty()) return FieldError(source, field, "empty");
  return Status::Ok();
}

Status GetNumber(const json& obj, const std::string& source, const char* field, double* out) {
  EFFNET_ASSIGN_OR_RETURN(const json* v, Field(obj, source, field));
  if (!v->is_number()) {
    return FieldError(source, field, std::string("expected a number, found ") + v->type_name());
  }
  *out = v->get<double>();
  return Status::Ok();
}

Status GetInt(const json& obj, const std::string& source, const char* field, int min, int* out) {
  EFFNET_ASSIGN_OR_RETURN(const json* v, Field(obj, source, field));
  if (!v->is_number_integer()) {
    return FieldError(source, field,
                      std::string("expected an integer, found ") +
                          (v->is_number() ? "a fractional number" : v->type_name()));
  }
  const auto i = v->get<int64_t>();
  if (i < min || i > 1'000'000'000) {
    return FieldError(source, field, "out of range: " + std::to_string(i));
  }
  *out = static_cast<int>(i);
  return Status::Ok();
}

std::string AlnumLower(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c)) out += static_cast<char>(std::tolower(c));
  }
  return out;
}

}  // namespace

Result<RunSummary> ParseRunSummary(const std::string& json_text, const std::string& source) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgument(source + ": not valid JSON");
  if (!j.is_object()) return InvalidArgument(source + ": expected a JSON object");
  RunSummary s;
  EFFNET_RETURN_IF_ERROR(GetString(j, source, "model", &s.model));
  EFFNET_RETURN_IF_ERROR(GetString(j, source, "variant", &s.variant));
  EFFNET_RETURN_IF_ERROR(GetInt(j, source, "batch_size", 1, &s.batch_size));
  EFFNET_RETURN_IF_ERROR(GetNumber(j, source, "fit_time_s", &s.fit_time_s));
  if (s.fit_time_s < 0) {
    return FieldError(source, "fit_time_s", "negative: " + std::to_string(s.fit_time_s));
  }
  // null: no test images (test_count 0), the metrics were not computed.
  EFFNET_ASSIGN_OR_RETURN(const json* acc, Field(j, source, "test_accuracy"));
  if (!acc->is_null()) {
    double a = 0;
    EFFNET_RETURN_IF_ERROR(GetNumber(j, source, "test_accuracy", &a));
    if (!(a >= 0 && a <= 1)) {
      return FieldError(source, "test_accuracy", "outside [0, 1]: " + std::to_string(a));
    }
    s.test_accuracy = a;
  }
  EFFNET_RETURN_IF_ERROR(GetInt(j, source, "world_size", 1, &s.world_size));
  EFFNET_RETURN_IF_ERROR(GetString(j, source, "device", &s.device));
  if (auto it = j.find("test_loss"); it != j.end() && it->is_number()) {
    s.test_loss = it->get<double>();
  }
  s.test_count = j.value("test_count", int64_t{0});
  s.best_epoch = j.value("best_epoch", -1);
  s.stop_reason = j.value("stop_reason", std::string());
  s.reduced = j.value("reduced", false);
  s.start = j.value("start", std::string());
  if (auto it = j.find("epoch_world_sizes"); it != j.end()) {
    if (!it->is_array()) return FieldError(source, "epoch_world_sizes", "expected an array");
    for (const auto& w : *it) {
      if (!w.is_number_integer() || w.get<int64_t>() < 1 || w.get<int64_t>() > (1 << 20)) {
        return FieldError(source, "epoch_world_sizes",
                          "expected world sizes >= 1, found " + w.dump());
      }
      s.epoch_world_sizes.push_back(w.get<int>());
    }
  }
  return s;
}

std::string RunSummaryToJson(const RunSummary& s) {
  const json j = {{"model", s.model},
                  {"variant", s.variant},
                  {"batch_size", s.batch_size},
                  {"fit_time_s", s.fit_time_s},
                  {"test_accuracy", s.test_accuracy ? json(*s.test_accuracy) : json(nullptr)},
                  {"world_size", s.world_size},
                  {"device", s.device},
                  {"test_loss", s.test_loss ? json(*s.test_loss) : json(nullptr)},
                  {"test_count", s.test_count},
                  {"best_epoch", s.best_epoch},
                  {"stop_reason", s.stop_reason},
                  {"reduced", s.reduced},
                  {"start", s.start},
                  {"epoch_world_sizes", s.epoch_world_sizes}};
  return j.dump(2) + "\n";
}

Result<RunSummary> ReadRunSummary(const std::string& run_dir) {
  const std::string path = (std::filesystem::path(run_dir) / kRunSummaryJson).string();
  EFFNET_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseRunSummary(text, path);
}

std::string StartLabel(const std::string& pretrained_path) {
  if (pretrained_path.empty()) return "from scratch";
  return "from " + std::filesystem::path(pretrained_path).filename().string();
}

std::string WorldSizesLabel(const RunSummary& s) {
  std::string label;
  int last = 0;
  for (int w : s.epoch_world_sizes) {
    if (w == last) continue;
    label += (label.empty() ? "" : " -> ") + std::to_string(w);
    last = w;
  }
  // One size throughout (or an older file): the run's world size, as before.
  return label.find(' ') == std::string::npos ? std::to_string(s.world_size) : label;
}

ResultRow ToResultRow(const RunSummary& s) {
  std::string name = s.model;
  if (AlnumLower(s.model).find(AlnumLower(s.variant)) == std::string::npos) {
    std::string v = s.variant;
    for (auto& c : v) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    name += "-" + v;
  }
  ResultRow row;
  const std::string ranks = WorldSizesLabel(s);
  row.model = name + " (effnet-dist, " + ranks + (ranks == "1" ? " rank " : " ranks ") + s.device +
              (s.start.empty() ? "" : ", " + s.start) + ")";
  row.batch_size = s.batch_size;
  row.fit_time_s = s.fit_time_s;
  row.accuracy = s.test_accuracy.value_or(std::nan(""));  // shown as "-"
  return row;
}

}  // namespace effnet::report
