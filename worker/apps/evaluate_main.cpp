// effnet-evaluate: accuracy, loss, confusion matrix and per-image predictions of a checkpoint on
// one split. Classes are matched by name (a store with the classes in another order is remapped).
//   effnet-evaluate runs/x/checkpoints/best --data data.h5 --split test [--out DIR]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/atomic_file.h"
#include "common/log.h"
#include "storage/dataset_reader.h"
#include "worker/apps/app_common.h"
#include "worker/formats/checkpoint.h"
#include "worker/report/report.h"
#include "worker/train/local_job_control.h"

namespace {

int Run(const std::string& ckpt, const std::string& data, const std::string& split_name,
        const std::string& out, const std::vector<std::string>& sets) {
  using namespace effnet;
  storage::Split split;
  if (split_name == "train") {
    split = storage::Split::kTrain;
  } else if (split_name == "val") {
    split = storage::Split::kVal;
  } else if (split_name == "test") {
    split = storage::Split::kTest;
  } else {
    return apps::ReportFailure("--split: expected train|val|test, got '" + split_name + "'");
  }
  auto meta_r = formats::ReadCheckpointMeta(ckpt);
  if (!meta_r.ok()) return apps::ReportFailure(meta_r.status().ToString());
  const formats::CheckpointMeta& meta = *meta_r;
  std::vector<std::string> overrides = sets;
  overrides.push_back("checkpoint.resume=never");
  overrides.push_back("output.progress=false");
  auto cfg_r = train::ParseTrainConfig(meta.config_yaml, overrides);
  if (!cfg_r.ok()) return apps::ReportFailure(cfg_r.status().WithContext(ckpt).ToString());
  auto cfg = std::move(cfg_r).value();
  auto reader_r = storage::DatasetReader::Open(data);
  if (!reader_r.ok()) return apps::ReportFailure(reader_r.status().ToString());
  auto reader = std::move(reader_r).value();
  const int ck_classes = meta.model.num_classes;
  const auto& store_names = reader->info().class_names;
  // Classes are matched by name: a store listing the model's classes in another order is
  // remapped. A checkpoint without names (older writers) falls back to the class count.
  std::vector<std::string> model_names = meta.class_names;
  std::vector<int64_t> label_map;
  if (model_names.empty()) {
    if (ck_classes != reader->info().num_classes()) {
      return apps::ReportFailure(ckpt + " was trained for " + std::to_string(ck_classes) +
                                 " classes but " + data + " has " +
                                 std::to_string(reader->info().num_classes()) + "; refusing");
    }
    model_names = store_names;
  } else {
    auto map_r = apps::MapClassesByName(model_names, store_names, data);
    if (!map_r.ok()) return apps::ReportFailure(map_r.status().ToString());
    label_map = std::move(map_r).value();
  }
  bool identity = label_map.size() == static_cast<size_t>(ck_classes);
  for (size_t i = 0; identity && i < label_map.size(); ++i) {
    identity = label_map[i] == static_cast<int64_t>(i);
  }
  auto model_r = apps::BuildModel(cfg, ck_classes);
  if (!model_r.ok()) return apps::ReportFailure(model_r.status().ToString());
  train::SingleProcess dp;
  train::LocalJobControl jc(cfg.job, {}, 0, 1, "");
  train::Trainer trainer(cfg, *model_r, *reader, dp, jc, "");
  if (!label_map.empty() && !identity) {
    log::Info(data + ": class order differs from the checkpoint's; labels remapped by name");
    trainer.SetLabelMap(label_map);
  }
  auto st = trainer.Setup();
  if (st.ok()) st = trainer.LoadWeights(ckpt);
  if (!st.ok()) return apps::ReportFailure(st.ToString());
  auto r = trainer.Evaluate(split);
  if (!r.ok()) return apps::ReportFailure(r.status().ToString());
  nlohmann::json images = nlohmann::json::array();
  const auto& info = reader->info();
  for (const auto& im : r->images) {
    const auto best = std::max_element(im.probabilities.begin(), im.probabilities.end());
    const auto k = static_cast<size_t>(best - im.probabilities.begin());
    images.push_back({{"index", im.index},
                      {"source", info.source_paths.at(static_cast<size_t>(im.index))},
                      {"label", model_names.at(static_cast<size_t>(im.label))},
                      {"predicted", model_names.at(k)},
                      {"probability", *best}});
  }
  // No images in the split: null metrics, no confusion matrix (never "accuracy 0 on 0 images").
  const bool measured = r->count > 0;
  if (!measured) {
    log::Warn("no " + split_name + " images in " + data + ": " + split_name +
              " metrics not computed");
  }
  nlohmann::json j = {{"checkpoint", ckpt},
                      {"data", data},
                      {"split", split_name},
                      {"accuracy", measured ? nlohmann::json(r->accuracy) : nlohmann::json()},
                      {"loss", measured ? nlohmann::json(r->loss) : nlohmann::json()},
                      {"count", r->count},
                      {"epoch", meta.epoch},
                      {"image_size", trainer.eval_image_size()},
                      {"class_names", model_names},
                      {"remapped_by_name", !label_map.empty() && !identity},
                      {"confusion", r->confusion},
                      {"predictions", images}};
  std::cout << j.dump(2) << std::endl;
  if (!out.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(out, ec);
    if (ec) return apps::ReportFailure("--out " + out + ": cannot create: " + ec.message());
    report::ConfusionMatrix cm;
    cm.class_names = model_names;
    cm.counts = r->confusion;
    st = Status::Ok();
    if (measured) {
      st = report::WriteConfusionMatrixCsv(cm, out + "/confusion_matrix_" + split_name + ".csv");
    }
    if (st.ok() && measured) {
      st = report::WriteConfusionMatrixSvg(cm, out + "/confusion_matrix_" + split_name + ".svg",
                                           model_r->name + " " + split_name + " split");
    }
    if (st.ok()) st = WriteFileAtomic(out + "/eval_" + split_name + ".json", j.dump(2) + "\n");
    if (!st.ok()) return apps::ReportFailure(st.ToString());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"effnet-evaluate: evaluate a checkpoint on one split of an effnet HDF5 file"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  std::string ckpt, data, split = "test", out;
  std::vector<std::string> sets;
  app.add_option("checkpoint", ckpt, "checkpoint directory (e.g. runs/x/checkpoints/best)")
      ->required();
  app.add_option("--data", data, "HDF5 data file")->required();
  app.add_option("--split", split, "train | val | test");
  app.add_option("--out", out, "directory for confusion matrix CSV/SVG and eval JSON");
  app.add_option("--set", sets, "override: section.field=value (e.g. runtime.device=cpu)");
  CLI11_PARSE(app, argc, argv);
  try {
    return Run(ckpt, data, split, out, sets);
  } catch (const effnet::StatusError& e) {
    return effnet::apps::ReportFailure(e.status().ToString());
  } catch (const std::exception& e) {
    return effnet::apps::ReportFailure(e.what());
  }
}
