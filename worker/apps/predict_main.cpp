// effnet-predict: class predictions of a trained model, one CSV row per image.
//   effnet-predict runs/x/checkpoints/best --images photos/ --out preds.csv [--top-k 3]
//   effnet-predict model.safetensors --variant b0 --classes 7 --class-names names.txt \
//       --csv list.csv --out preds.csv
// A weights file written by effnet-export brings FILE.json (variant, multipliers, class names,
// eval size, crop, normalisation); flags override it.
//   effnet-predict runs/x/checkpoints/best --data data.h5 --split test --out preds.csv
// Images go through what evaluation sees: a photo is decoded and resized to the store's size as
// effnet-prepare does (storage/prepare.h), then data::AugmentEval at the evaluation size; stored
// images go straight to AugmentEval. The weights are the ones effnet-evaluate uses (the EMA
// weights when the run evaluated with them).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "common/atomic_file.h"
#include "storage/csv.h"
#include "storage/dataset_reader.h"
#include "storage/prepare.h"
#include "worker/apps/app_common.h"
#include "worker/data/augment.h"
#include "worker/formats/checkpoint.h"
#include "worker/formats/state_dict.h"
#include "worker/model/efficientnet.h"

namespace {

namespace fs = std::filesystem;
using namespace effnet;

struct Args {
  std::string model, images, csv, data, split = "test", out, variant, class_names;
  std::string image_column = "image", resize;
  std::vector<std::string> sets;  // weights file: config overrides (e.g. model.extra_width)
  int classes = 0, top_k = 1, image_size = 0, store_size = 0, batch = 32;
};

// The model and how its inputs were prepared.
struct Loaded {
  train::TrainConfig cfg;
  train::ModelHandle model;
  std::vector<std::string> class_names;
  int eval_size = 0;
  std::string train_data;  // the checkpoint's HDF5 file ("" for a weights file)
};

Result<std::vector<std::string>> ReadNames(const std::string& path) {
  std::ifstream f(path);
  if (!f) return NotFound("--class-names " + path + ": cannot open");
  std::vector<std::string> names;
  for (std::string line; std::getline(f, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  return names;
}

Result<Loaded> LoadModel(const Args& a) {
  Loaded l;
  if (fs::is_directory(a.model)) {
    EFFNET_ASSIGN_OR_RETURN(auto meta, formats::ReadCheckpointMeta(a.model));
    auto cfg = train::ParseTrainConfig(meta.config_yaml);
    if (!cfg.ok()) return cfg.status().WithContext(a.model);
    l.cfg = *cfg;
    l.class_names = meta.class_names;
    l.eval_size = meta.eval_image_size;
    l.train_data = meta.data_path;
    EFFNET_ASSIGN_OR_RETURN(l.model, apps::BuildModel(l.cfg, meta.model.num_classes));
    const bool ema = meta.has_ema && l.cfg.ema.enabled && l.cfg.ema.evaluate_with_ema;
    EFFNET_ASSIGN_OR_RETURN(auto dict, formats::ReadCheckpointWeights(a.model, ema));
    EFFNET_RETURN_IF_ERROR(formats::LoadStateDict(*l.model.module, dict).WithContext(a.model));
  } else {
    // effnet-export's sidecar FILE.json, when there, supplies the defaults; flags override it.
    std::vector<std::string> sets;
    std::string variant = a.variant;
    int eval_size = 0;
    if (fs::exists(a.model + ".json")) {
      EFFNET_ASSIGN_OR_RETURN(const std::string text, ReadFile(a.model + ".json"));
      const auto side = nlohmann::json::parse(text, nullptr, false);
      if (!side.is_object()) return InvalidArgument(a.model + ".json: not a JSON object");
      if (variant.empty()) variant = side.value("variant", "");
      const auto kw = side.value("timm_kwargs", nlohmann::json::object());
      if (kw.contains("channel_multiplier")) {
        sets.push_back("model.extra_width=" + kw["channel_multiplier"].dump());
        sets.push_back("model.extra_depth=" + kw["depth_multiplier"].dump());
      }
      if (side.contains("eval_center_crop")) {
        sets.push_back("augment.eval_center_crop=" + side["eval_center_crop"].dump());
      }
      if (side.contains("normalization")) {
        sets.push_back("augment.normalize=" +
                       side["normalization"].value("name", std::string("imagenet")));
      }
      l.class_names = side.value("class_names", std::vector<std::string>{});
      eval_size = side.value("image_size", 0);
    }
    if (variant.empty()) variant = "b0";
    sets.push_back("model.variant=" + variant);
    sets.insert(sets.end(), a.sets.begin(), a.sets.end());
    EFFNET_ASSIGN_OR_RETURN(l.cfg, train::ParseTrainConfig("{}", sets));
    if (!a.class_names.empty()) {
      EFFNET_ASSIGN_OR_RETURN(l.class_names, ReadNames(a.class_names));
    }
    int classes = a.classes > 0 ? a.classes : static_cast<int>(l.class_names.size());
    if (classes <= 0) return InvalidArgument(a.model + " is a weights file: give --classes N");
    if (!l.class_names.empty() && static_cast<int>(l.class_names.size()) != classes) {
      return InvalidArgument("--class-names has " + std::to_string(l.class_names.size()) +
                             " names, --classes is " + std::to_string(classes));
    }
    for (int i = static_cast<int>(l.class_names.size()); i < classes; ++i) {
      l.class_names.push_back(std::to_string(i));
    }
    l.eval_size = eval_size > 0 ? eval_size : model::ReferenceEvalImageSize(variant);
    EFFNET_ASSIGN_OR_RETURN(l.model, apps::BuildModel(l.cfg, classes));
    EFFNET_RETURN_IF_ERROR(formats::ImportWeights(*l.model.module, a.model));
  }
  if (a.image_size > 0) l.eval_size = a.image_size;
  if (l.eval_size <= 0) l.eval_size = l.cfg.job.progressive.max_image_size;
  l.model.module->eval();
  return l;
}

struct Row {
  std::string image, label;  // label: "" when unknown
  at::Tensor probs;          // [C]
};

Status Predict(const Loaded& l, const at::Tensor& nhwc_u8, std::vector<Row>* rows, size_t first) {
  torch::NoGradGuard no_grad;
  const auto x = data::AugmentEval(nhwc_u8, l.eval_size, l.cfg.augment);
  const auto probs = torch::softmax(l.model.forward(x).to(torch::kFloat), 1);
  for (int64_t i = 0; i < probs.size(0); ++i) (*rows)[first + i].probs = probs[i].clone();
  return Status::Ok();
}

// Store images of one split (or all): read, then AugmentEval, as effnet-evaluate does.
Status FromStore(const Args& a, const Loaded& l, std::vector<Row>* rows) {
  EFFNET_ASSIGN_OR_RETURN(auto reader, storage::DatasetReader::Open(a.data));
  const auto& info = reader->info();
  std::vector<int64_t> idx;
  if (a.split == "all") {
    for (int64_t i = 0; i < info.num_images; ++i) idx.push_back(i);
  } else {
    storage::Split s;
    if (a.split == "train") {
      s = storage::Split::kTrain;
    } else if (a.split == "val") {
      s = storage::Split::kVal;
    } else if (a.split == "test") {
      s = storage::Split::kTest;
    } else {
      return InvalidArgument("--split: expected train|val|test|all, got '" + a.split + "'");
    }
    idx = info.IndicesOf(s);
  }
  const int S = info.image_size;
  for (size_t b = 0; b < idx.size(); b += static_cast<size_t>(a.batch)) {
    std::vector<int64_t> part(idx.begin() + b,
                              idx.begin() + std::min(idx.size(), b + static_cast<size_t>(a.batch)));
    auto t = torch::empty({static_cast<int64_t>(part.size()), S, S, 3}, torch::kUInt8);
    EFFNET_RETURN_IF_ERROR(reader->ReadImages(part, t.data_ptr<uint8_t>()));
    for (int64_t i : part) {
      rows->push_back({info.source_paths.at(static_cast<size_t>(i)),
                       info.class_names.at(static_cast<size_t>(info.labels[i])),
                       {}});
    }
    EFFNET_RETURN_IF_ERROR(Predict(l, t, rows, rows->size() - part.size()));
  }
  return Status::Ok();
}

// How photos were turned into stored images: flags, else the checkpoint's training store.
struct StoreShape {
  int size = 0;
  storage::ResizeMode resize = storage::ResizeMode::kSquash;
  int pad_value = 0;
};

Result<StoreShape> StoreShapeFor(const Args& a, const Loaded& l) {
  StoreShape s;
  if (!l.train_data.empty() && fs::exists(l.train_data)) {
    EFFNET_ASSIGN_OR_RETURN(auto reader, storage::DatasetReader::Open(l.train_data));
    s.size = reader->info().image_size;
    const auto src = nlohmann::json::parse(reader->info().source, nullptr, false);
    if (src.is_object()) {
      if (src.contains("resize")) {
        EFFNET_ASSIGN_OR_RETURN(s.resize,
                                storage::ParseResizeMode(src.at("resize").get<std::string>()));
      }
      s.pad_value = src.value("pad_value", 0);
    }
  }
  if (a.store_size > 0) s.size = a.store_size;
  if (!a.resize.empty()) {
    EFFNET_ASSIGN_OR_RETURN(s.resize, storage::ParseResizeMode(a.resize));
  }
  if (s.size <= 0) s.size = l.eval_size;  // no store known: squash straight to the eval size
  return s;
}

Status FromFiles(const Args& a, const Loaded& l, std::vector<Row>* rows) {
  std::vector<std::string> files;
  if (!a.csv.empty()) {
    EFFNET_ASSIGN_OR_RETURN(auto table, storage::ReadCsvFile(a.csv));
    EFFNET_ASSIGN_OR_RETURN(size_t col, table.Column(a.image_column));
    for (const auto& r : table.rows) {
      files.push_back(a.images.empty() ? r[col] : (fs::path(a.images) / r[col]).string());
    }
  } else {
    static const std::vector<std::string> kExt = {".jpg",  ".jpeg", ".png", ".bmp",
                                                  ".webp", ".tif",  ".tiff"};
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(a.images, ec)) {
      std::string ext = e.path().extension().string();
      for (auto& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (e.is_regular_file() && std::find(kExt.begin(), kExt.end(), ext) != kExt.end()) {
        files.push_back(e.path().string());
      }
    }
    if (ec) return NotFound("--images " + a.images + ": " + ec.message());
    std::sort(files.begin(), files.end());
  }
  if (files.empty()) return NotFound("no images to predict");
  EFFNET_ASSIGN_OR_RETURN(const StoreShape shape, StoreShapeFor(a, l));
  const int S = shape.size;
  for (size_t b = 0; b < files.size(); b += static_cast<size_t>(a.batch)) {
    const size_t n = std::min(files.size() - b, static_cast<size_t>(a.batch));
    auto t = torch::empty({static_cast<int64_t>(n), S, S, 3}, torch::kUInt8);
    for (size_t i = 0; i < n; ++i) {
      auto img = storage::DecodeImageFile(files[b + i], 200'000'000);
      if (!img.ok()) return img.status().WithContext(files[b + i]);
      cv::Mat stored = storage::ResizeForStore(img->rgb, S, shape.resize, shape.pad_value);
      if (!stored.isContinuous()) stored = stored.clone();
      std::memcpy(t[static_cast<int64_t>(i)].data_ptr<uint8_t>(), stored.data,
                  static_cast<size_t>(S) * S * 3);
      rows->push_back({files[b + i], "", {}});
    }
    EFFNET_RETURN_IF_ERROR(Predict(l, t, rows, rows->size() - n));
  }
  return Status::Ok();
}

int Run(const Args& a) {
  const int inputs = (!a.images.empty() && a.csv.empty()) + !a.csv.empty() + !a.data.empty();
  if (inputs != 1) return apps::ReportFailure("give one of --images DIR, --csv FILE, --data FILE");
  if (a.top_k < 1) return apps::ReportFailure("--top-k: expected >= 1");
  auto l = LoadModel(a);
  if (!l.ok()) return apps::ReportFailure(l.status().ToString());
  std::vector<Row> rows;
  Status st = a.data.empty() ? FromFiles(a, *l, &rows) : FromStore(a, *l, &rows);
  if (!st.ok()) return apps::ReportFailure(st.ToString());
  const int C = static_cast<int>(l->class_names.size());
  const int k = std::min(a.top_k, C);
  std::vector<std::string> header = {"image"};
  if (!a.data.empty()) header.push_back("label");
  for (int i = 1; i <= k; ++i) {
    header.push_back("class_" + std::to_string(i));
    header.push_back("prob_" + std::to_string(i));
  }
  std::string csv = storage::CsvRecord(header);
  for (const auto& r : rows) {
    std::vector<std::string> f = {r.image};
    if (!a.data.empty()) f.push_back(r.label);
    const auto top = r.probs.topk(k);
    const auto vals = std::get<0>(top), ids = std::get<1>(top);
    for (int i = 0; i < k; ++i) {
      f.push_back(l->class_names.at(static_cast<size_t>(ids[i].item<int64_t>())));
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%.6f", vals[i].item<float>());
      f.push_back(buf);
    }
    csv += storage::CsvRecord(f);
  }
  st = WriteFileAtomic(a.out, csv);
  if (!st.ok()) return apps::ReportFailure(st.ToString());
  std::cout << "wrote " << a.out << ": " << rows.size() << " images" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"effnet-predict: class predictions of a checkpoint or weights file"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  Args a;
  app.add_option("model", a.model, "checkpoint directory, or a weights file with --variant")
      ->required();
  app.add_option("--images", a.images, "folder of photos (or the folder --csv paths are in)");
  app.add_option("--csv", a.csv, "CSV listing photos in column --image-column");
  app.add_option("--image-column", a.image_column, "the --csv column with the file names");
  app.add_option("--data", a.data, "effnet HDF5 store (its images are already stored-size)");
  app.add_option("--split", a.split, "with --data: train | val | test | all");
  app.add_option("--top-k", a.top_k, "classes per row, most probable first");
  app.add_option("--out", a.out, "output CSV")->required();
  app.add_option("--variant", a.variant,
                 "weights file: EfficientNetV2 variant (default: FILE.json's, else b0)");
  app.add_option("--classes", a.classes, "weights file: number of classes");
  app.add_option("--class-names", a.class_names,
                 "weights file: text file, one name a line (default: FILE.json's)");
  app.add_option("--image-size", a.image_size, "evaluation size (default: the checkpoint's)");
  app.add_option("--store-size", a.store_size,
                 "photos: stored size before the eval transform (default: the training store's)");
  app.add_option("--resize", a.resize, "photos: squash | center-crop | pad (default: the store's)");
  app.add_option("--batch", a.batch, "images per forward pass");
  app.add_option("--set", a.sets, "weights file: config override, e.g. model.extra_width=0.25");
  CLI11_PARSE(app, argc, argv);
  try {
    return Run(a);
  } catch (const effnet::StatusError& e) {
    return effnet::apps::ReportFailure(e.status().ToString());
  } catch (const std::exception& e) {
    return effnet::apps::ReportFailure(e.what());
  }
}
