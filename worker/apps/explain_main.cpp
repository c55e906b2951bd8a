// effnet-explain: what a trained model looks at, as files a report can embed.
//   effnet-explain runs/x/checkpoints/best --data data.h5 [--split test] [--class NAME]
//                  [--limit N] [--occlusion] --out DIR
//   effnet-explain runs/x/checkpoints/best --images DIR --out DIR  (DIR/<class>/*.jpg: true class
//                  from the folder name when it is one of the model's classes)
// Writes into --out:
//   images/<name>_gradcam.png     Grad-CAM blended over the image as the model saw it
//   images/<name>_occlusion.png   occlusion sensitivity, same blend (--occlusion)
//   index.csv                     file, true, predicted, probability, ..., the PNGs (one row each)
//   class_mean_gradcam/<class>.png  mean Grad-CAM of the class's correctly classified images
//   gallery.csv                   the most confident right and most confident wrong predictions
//   confusion_examples.csv        up to --examples images per confusion-matrix cell with errors
//   summary.json                  counts, accuracy, options and the file names above
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>

#include "common/atomic_file.h"
#include "storage/dataset_reader.h"
#include "worker/apps/app_common.h"
#include "worker/data/augment.h"
#include "worker/explain/checkpoint_model.h"
#include "worker/explain/gradcam.h"
#include "worker/report/html_report.h"
#include "worker/report/report.h"

namespace {

namespace fs = std::filesystem;
using namespace effnet;

struct Options {
  std::string ckpt, images_dir, data, split = "test", class_name, target = "predicted", out;
  int limit = 0, layer = explain::kHeadLayer, patch = 0, stride = 0, batch = 16, gallery = 8,
      examples = 4, picture = 224;
  bool occlusion = false;
};

// One image to explain: its pixels as stored or decoded (RGB, HWC) and what is known about it.
struct Item {
  std::string file;  // source path (store) or path relative to --images
  std::string name;  // file-name stem of its PNGs
  int label = -1;    // true class, -1 when unknown
  int h = 0, w = 0;
  std::vector<uint8_t> rgb;
};

struct Row {
  std::string file;
  int label = -1, predicted = -1, target = -1;
  double probability = 0, true_probability = 0;
  std::string gradcam_png, occlusion_png;
};

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string SafeName(const std::string& s) {
  std::string r;
  for (char c : s) r += std::isalnum(static_cast<unsigned char>(c)) || c == '-' ? c : '_';
  return r;
}

// uint8 RGB [h,w,3] of the model's view (float 0..255 [3,h,w]).
cv::Mat ToBgr(const at::Tensor& chw) {
  auto hwc = chw.clamp(0, 255).round().to(at::kByte).permute({1, 2, 0}).contiguous();
  cv::Mat rgb(static_cast<int>(hwc.size(0)), static_cast<int>(hwc.size(1)), CV_8UC3,
              hwc.data_ptr<uint8_t>());
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  return bgr;
}

// The map ([h,w] in [0,1]) as a JET colour image at `side` x `side`.
cv::Mat HeatBgr(const at::Tensor& map, int side) {
  auto m = (map.clamp(0, 1) * 255.0).round().to(at::kByte).contiguous();
  cv::Mat grey(static_cast<int>(m.size(0)), static_cast<int>(m.size(1)), CV_8UC1,
               m.data_ptr<uint8_t>());
  cv::Mat big, heat;
  cv::resize(grey, big, cv::Size(side, side), 0, 0, cv::INTER_LINEAR);
  cv::applyColorMap(big, heat, cv::COLORMAP_JET);
  return heat;
}

// Heat map blended over the photo, `side` pixels square.
Status WriteBlend(const std::string& path, const cv::Mat& photo_bgr, const at::Tensor& map,
                  int side) {
  cv::Mat photo, out;
  cv::resize(photo_bgr, photo, cv::Size(side, side), 0, 0, cv::INTER_CUBIC);
  cv::addWeighted(photo, 0.55, HeatBgr(map, side), 0.45, 0.0, out);
  if (!cv::imwrite(path, out)) return Internal("cannot write " + path);
  return Status::Ok();
}

Status WriteHeat(const std::string& path, const at::Tensor& map, int side) {
  if (!cv::imwrite(path, HeatBgr(map, side))) return Internal("cannot write " + path);
  return Status::Ok();
}

// Items from the store's split (optionally one class), at most `limit` (0 = all).
Result<std::vector<Item>> StoreItems(const Options& o, const std::vector<std::string>& classes) {
  storage::Split split;
  if (o.split == "train") {
    split = storage::Split::kTrain;
  } else if (o.split == "val") {
    split = storage::Split::kVal;
  } else if (o.split == "test") {
    split = storage::Split::kTest;
  } else {
    return InvalidArgument("--split: expected train|val|test, got '" + o.split + "'");
  }
  EFFNET_ASSIGN_OR_RETURN(auto reader, storage::DatasetReader::Open(o.data));
  const auto& info = reader->info();
  if (info.class_names != classes) {
    return InvalidArgument(o.data + " has other classes than the checkpoint; refusing");
  }
  int only = -1;
  if (!o.class_name.empty()) {
    auto it = std::find(classes.begin(), classes.end(), o.class_name);
    if (it == classes.end()) return InvalidArgument("--class: no class '" + o.class_name + "'");
    only = static_cast<int>(it - classes.begin());
  }
  std::vector<int64_t> picked;
  for (int64_t i : info.IndicesOf(split)) {
    if (only >= 0 && info.labels[static_cast<size_t>(i)] != only) continue;
    if (o.limit > 0 && static_cast<int>(picked.size()) >= o.limit) break;
    picked.push_back(i);
  }
  std::vector<Item> items(picked.size());
  const int s = info.image_size;
  for (size_t k = 0; k < picked.size(); ++k) {
    const int64_t i = picked[k];
    Item& it = items[k];
    it.file = info.source_paths[static_cast<size_t>(i)];
    const std::string stem = SafeName(fs::path(it.file).stem().string());
    it.name = stem == std::to_string(i) ? stem : std::to_string(i) + "_" + stem;
    it.label = info.labels[static_cast<size_t>(i)];
    it.h = it.w = s;
    it.rgb.resize(reader->image_bytes());
    EFFNET_RETURN_IF_ERROR(reader->ReadImages({i}, it.rgb.data()));
  }
  return items;
}

// Items from the image files under a directory (sorted); the parent folder names the true class.
Result<std::vector<Item>> DirItems(const Options& o, const std::vector<std::string>& classes) {
  std::error_code ec;
  if (!fs::is_directory(o.images_dir, ec))
    return NotFound("--images: no directory " + o.images_dir);
  std::vector<fs::path> files;
  for (auto& e : fs::recursive_directory_iterator(o.images_dir)) {
    std::string ext = e.path().extension().string();
    for (auto& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (e.is_regular_file() &&
        (ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp" || ext == ".webp")) {
      files.push_back(e.path());
    }
  }
  std::sort(files.begin(), files.end());
  std::vector<Item> items;
  for (const auto& f : files) {
    Item it;
    it.file = fs::relative(f, o.images_dir).string();
    const std::string folder = f.parent_path().filename().string();
    auto c = std::find(classes.begin(), classes.end(), folder);
    if (c != classes.end()) it.label = static_cast<int>(c - classes.begin());
    if (!o.class_name.empty() && folder != o.class_name) continue;
    if (o.limit > 0 && static_cast<int>(items.size()) >= o.limit) break;
    cv::Mat bgr = cv::imread(f.string(), cv::IMREAD_COLOR);
    if (bgr.empty()) return InvalidArgument("cannot decode " + f.string());
    cv::Mat rgb;
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    it.h = rgb.rows;
    it.w = rgb.cols;
    it.rgb.assign(rgb.data, rgb.data + rgb.total() * 3);
    it.name = std::to_string(items.size()) + "_" + SafeName(f.stem().string());
    items.push_back(std::move(it));
  }
  return items;
}

int Run(const Options& o) {
  if (o.images_dir.empty() == o.data.empty()) {
    return apps::ReportFailure("give exactly one of --images DIR and --data FILE.h5");
  }
  auto m_r = explain::LoadCheckpointModel(o.ckpt);
  if (!m_r.ok()) return apps::ReportFailure(m_r.status().ToString());
  auto& m = *m_r;
  const auto& classes = m.class_names;
  const int C = static_cast<int>(classes.size());
  int fixed_target = -1;  // a class named by --target
  if (o.target != "predicted" && o.target != "true") {
    auto it = std::find(classes.begin(), classes.end(), o.target);
    if (it == classes.end()) {
      return apps::ReportFailure("--target: expected predicted|true|<class name>, got '" +
                                 o.target + "'");
    }
    fixed_target = static_cast<int>(it - classes.begin());
  }
  auto items_r = o.data.empty() ? DirItems(o, classes) : StoreItems(o, classes);
  if (!items_r.ok()) return apps::ReportFailure(items_r.status().ToString());
  auto& items = *items_r;
  if (items.empty()) return apps::ReportFailure("no images to explain");
  const int S = m.eval_image_size;
  const int side = std::max(S, o.picture);
  explain::OcclusionOptions occ;
  occ.patch = o.patch > 0 ? o.patch : std::max(4, S / 8);
  occ.stride = o.stride > 0 ? o.stride : std::max(2, occ.patch / 2);
  fs::create_directories(o.out + "/images");
  fs::create_directories(o.out + "/class_mean_gradcam");

  std::vector<Row> rows;
  std::vector<at::Tensor> class_sum(static_cast<size_t>(C));
  std::vector<int> class_n(static_cast<size_t>(C), 0);
  auto classify = [&](const at::Tensor& px) {
    return m.model->forward(data::Normalize(px, m.augment.normalize));
  };
  // Batches of same-sized images (store images all are; decoded files go one by one).
  for (size_t b0 = 0; b0 < items.size();) {
    size_t b1 = b0 + 1;
    while (b1 < items.size() && static_cast<int>(b1 - b0) < o.batch && items[b1].h == items[b0].h &&
           items[b1].w == items[b0].w) {
      ++b1;
    }
    const int64_t n = static_cast<int64_t>(b1 - b0);
    auto u8 = at::empty({n, items[b0].h, items[b0].w, 3}, at::kByte);
    for (int64_t k = 0; k < n; ++k) {
      std::memcpy(u8[k].data_ptr<uint8_t>(), items[b0 + k].rgb.data(), items[b0 + k].rgb.size());
    }
    auto raw = data::EvalResize(u8, S, m.augment.eval_center_crop);
    at::Tensor probs;
    {
      c10::NoGradGuard no_grad;
      probs = at::softmax(classify(raw), 1);
    }
    auto predicted = probs.argmax(1);
    std::vector<int64_t> tv;
    for (int64_t k = 0; k < n; ++k) {
      const int label = items[b0 + k].label;
      tv.push_back(fixed_target >= 0                  ? fixed_target
                   : o.target == "true" && label >= 0 ? label
                                                      : predicted[k].item<int64_t>());
    }
    auto targets = at::tensor(tv, at::kLong);
    auto cam =
        explain::GradCam(m.model, data::Normalize(raw, m.augment.normalize), targets, {o.layer});
    if (!cam.ok()) return apps::ReportFailure(cam.status().ToString());
    at::Tensor occ_maps;
    if (o.occlusion) {
      auto r = explain::OcclusionSensitivity(classify, raw, targets, occ);
      if (!r.ok()) return apps::ReportFailure(r.status().ToString());
      occ_maps = *r;
    }
    for (int64_t k = 0; k < n; ++k) {
      const Item& it = items[b0 + k];
      Row row;
      row.file = it.file;
      row.label = it.label;
      row.predicted = static_cast<int>(predicted[k].item<int64_t>());
      row.target = static_cast<int>(tv[static_cast<size_t>(k)]);
      row.probability = probs[k][row.predicted].item<double>();
      row.true_probability = it.label >= 0 ? probs[k][it.label].item<double>() : -1.0;
      cv::Mat photo = ToBgr(raw[k]);
      row.gradcam_png = "images/" + it.name + "_gradcam.png";
      auto st = WriteBlend(o.out + "/" + row.gradcam_png, photo, cam->heatmap[k], side);
      if (st.ok() && o.occlusion) {
        row.occlusion_png = "images/" + it.name + "_occlusion.png";
        st = WriteBlend(o.out + "/" + row.occlusion_png, photo, occ_maps[k], side);
      }
      if (!st.ok()) return apps::ReportFailure(st.ToString());
      if (row.label >= 0 && row.label == row.predicted && row.target == row.predicted) {
        auto& sum = class_sum[static_cast<size_t>(row.label)];
        sum = sum.defined() ? sum + cam->heatmap[k] : cam->heatmap[k].clone();
        ++class_n[static_cast<size_t>(row.label)];
      }
      rows.push_back(std::move(row));
    }
    b0 = b1;
  }

  auto name = [&](int c) { return c >= 0 ? classes[static_cast<size_t>(c)] : std::string(); };
  std::ostringstream index;
  index << "file,true,predicted,probability,true_probability,explained,gradcam_png,occlusion_png\n";
  for (const Row& r : rows) {
    index << CsvField(r.file) << "," << CsvField(name(r.label)) << ","
          << CsvField(name(r.predicted)) << "," << r.probability << ","
          << (r.label >= 0 ? std::to_string(r.true_probability) : "") << ","
          << CsvField(name(r.target)) << "," << r.gradcam_png << "," << r.occlusion_png << "\n";
  }
  auto st = WriteFileAtomic(o.out + "/index.csv", index.str());

  nlohmann::json class_means = nlohmann::json::object();
  for (int c = 0; c < C && st.ok(); ++c) {
    if (class_n[static_cast<size_t>(c)] == 0) continue;
    const std::string png =
        "class_mean_gradcam/" + SafeName(classes[static_cast<size_t>(c)]) + ".png";
    auto mean = class_sum[static_cast<size_t>(c)] / class_n[static_cast<size_t>(c)];
    st = WriteHeat(o.out + "/" + png, mean / mean.max().clamp_min(1e-12), side);
    class_means[classes[static_cast<size_t>(c)]] = {{"png", png},
                                                    {"images", class_n[static_cast<size_t>(c)]}};
  }

  // Gallery: the most confident right and most confident wrong predictions (known labels only).
  std::vector<const Row*> right, wrong;
  for (const Row& r : rows) {
    if (r.label < 0) continue;
    (r.label == r.predicted ? right : wrong).push_back(&r);
  }
  auto by_confidence = [](const Row* a, const Row* b) { return a->probability > b->probability; };
  std::stable_sort(right.begin(), right.end(), by_confidence);
  std::stable_sort(wrong.begin(), wrong.end(), by_confidence);
  std::ostringstream gallery;
  gallery << "kind,rank,file,true,predicted,probability,gradcam_png,occlusion_png\n";
  for (const auto& [kind, list] : {std::pair{"right", &right}, std::pair{"wrong", &wrong}}) {
    for (size_t i = 0; i < list->size() && static_cast<int>(i) < o.gallery; ++i) {
      const Row& r = *(*list)[i];
      gallery << kind << "," << i + 1 << "," << CsvField(r.file) << "," << CsvField(name(r.label))
              << "," << CsvField(name(r.predicted)) << "," << r.probability << "," << r.gradcam_png
              << "," << r.occlusion_png << "\n";
    }
  }
  if (st.ok()) st = WriteFileAtomic(o.out + "/gallery.csv", gallery.str());

  // Confusion-matrix cells with errors: count and the most confident examples.
  std::map<std::pair<int, int>, std::vector<const Row*>> cells;
  for (const Row* r : wrong) cells[{r->label, r->predicted}].push_back(r);
  std::ostringstream confusion;
  confusion << "true,predicted,count,rank,file,probability,gradcam_png,occlusion_png\n";
  for (const auto& [cell, list] : cells) {
    for (size_t i = 0; i < list.size() && static_cast<int>(i) < o.examples; ++i) {
      confusion << CsvField(name(cell.first)) << "," << CsvField(name(cell.second)) << ","
                << list.size() << "," << i + 1 << "," << CsvField(list[i]->file) << ","
                << list[i]->probability << "," << list[i]->gradcam_png << ","
                << list[i]->occlusion_png << "\n";
    }
  }
  if (st.ok()) st = WriteFileAtomic(o.out + "/confusion_examples.csv", confusion.str());

  int64_t known = 0, correct = 0;
  for (const Row& r : rows) {
    known += r.label >= 0;
    correct += r.label >= 0 && r.label == r.predicted;
  }
  nlohmann::json summary = {
      {"checkpoint", o.ckpt},
      {"source", o.data.empty() ? o.images_dir : o.data},
      {"split", o.data.empty() ? "" : o.split},
      {"images", rows.size()},
      {"labelled", known},
      {"accuracy", known > 0 ? static_cast<double>(correct) / known : 0.0},
      {"image_size", S},
      {"layer",
       o.layer == explain::kHeadLayer ? std::string("head") : "stage " + std::to_string(o.layer)},
      {"explained_class", o.target},
      {"ema_weights", m.ema},
      {"occlusion", o.occlusion ? nlohmann::json{{"patch", occ.patch}, {"stride", occ.stride}}
                                : nlohmann::json(nullptr)},
      {"files",
       {{"index", "index.csv"},
        {"gallery", "gallery.csv"},
        {"confusion_examples", "confusion_examples.csv"},
        {"class_mean_gradcam", class_means}}}};
  if (st.ok()) st = WriteFileAtomic(o.out + "/summary.json", summary.dump(2) + "\n");
  if (!st.ok()) return apps::ReportFailure(st.ToString());
  // Written into a finished run's explain/ folder: the run's report.html gains the galleries.
  fs::path out_path = fs::path(o.out).lexically_normal();
  if (!out_path.has_filename()) out_path = out_path.parent_path();  // "x/explain/"
  const fs::path run_dir = out_path.has_parent_path() ? out_path.parent_path() : fs::path(".");
  if (out_path.filename() == report::kExplainDir && fs::exists(run_dir / report::kRunSummaryJson)) {
    const fs::path html = run_dir / report::kReportHtml;
    auto classes_of_run =
        report::ReadConfusionMatrixCsv((run_dir / report::kConfusionMatrixCsv).string());
    st = report::WriteRunsReportHtml(
        {run_dir.string()}, html.string(),
        classes_of_run.ok() && report::IsStudyDataset(classes_of_run->class_names));
    // The explanations are written either way; a run folder the page cannot be built from (an
    // older or damaged run) is named, not a failure of effnet-explain.
    if (st.ok()) {
      std::cerr << "updated " << html.string() << " with the galleries" << std::endl;
    } else {
      std::cerr << "warning: " << html.string() << " not updated: " << st.ToString() << std::endl;
    }
  }
  std::cout << summary.dump(2) << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"effnet-explain: Grad-CAM and occlusion maps of a checkpoint's predictions"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  Options o;
  app.add_option("checkpoint", o.ckpt, "checkpoint directory (e.g. runs/x/checkpoints/best)")
      ->required();
  app.add_option("--images", o.images_dir, "directory of images (class = parent folder name)");
  app.add_option("--data", o.data, "HDF5 data file (effnet-prepare)");
  app.add_option("--split", o.split, "train | val | test (with --data)");
  app.add_option("--class", o.class_name, "only images whose true class is NAME");
  app.add_option("--target", o.target, "class the maps explain: predicted | true | <class name>");
  app.add_option("--limit", o.limit, "at most N images (0 = all)");
  app.add_option("--layer", o.layer, "Grad-CAM feature map: -1 = head (conv_head/bn2), or a stage");
  app.add_flag("--occlusion", o.occlusion,
               "also occlusion sensitivity (slow: one forward per patch)");
  app.add_option("--patch", o.patch, "occlusion patch side in pixels (default image size / 8)");
  app.add_option("--stride", o.stride, "occlusion stride in pixels (default patch / 2)");
  app.add_option("--batch", o.batch, "images per forward pass");
  app.add_option("--gallery", o.gallery, "images per gallery list (right, wrong)");
  app.add_option("--examples", o.examples, "example images per confusion-matrix cell");
  app.add_option("--picture", o.picture, "side of the written PNGs (at least the image size)");
  app.add_option("--out", o.out, "output directory")->required();
  CLI11_PARSE(app, argc, argv);
  try {
    return Run(o);
  } catch (const effnet::StatusError& e) {
    return effnet::apps::ReportFailure(e.status().ToString());
  } catch (const std::exception& e) {
    return effnet::apps::ReportFailure(e.what());
  }
}
