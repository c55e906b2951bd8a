// effnet-export: a checkpoint's weights as one timm-keyed file that
// timm.create_model("tf_efficientnetv2_<variant>", num_classes=C) loads strictly, plus FILE.json
// (class names, image size, normalisation) for whoever serves the model.
//   effnet-export runs/x/checkpoints/best --format safetensors --out model.safetensors [--ema]
#include <CLI/CLI.hpp>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/atomic_file.h"
#include "worker/apps/app_common.h"
#include "worker/formats/checkpoint.h"
#include "worker/formats/safetensors.h"
#include "worker/formats/torch_zip.h"

namespace {

// Mean and std per channel on the 0..1 scale, as timm's pretrained_cfg spells them.
nlohmann::json Normalisation(const std::string& mode) {
  if (mode == "imagenet") {
    return {{"name", mode}, {"mean", {0.485, 0.456, 0.406}}, {"std", {0.229, 0.224, 0.225}}};
  }
  if (mode == "inception") {
    return {{"name", mode}, {"mean", {0.5, 0.5, 0.5}}, {"std", {0.5, 0.5, 0.5}}};
  }
  return {{"name", mode}, {"mean", {0.0, 0.0, 0.0}}, {"std", {1.0, 1.0, 1.0}}};
}

int Run(const std::string& ckpt, const std::string& format, const std::string& out, bool ema) {
  using namespace effnet;
  if (format != "safetensors" && format != "pt") {
    return apps::ReportFailure("--format: expected safetensors|pt, got '" + format + "'");
  }
  auto meta_r = formats::ReadCheckpointMeta(ckpt);
  if (!meta_r.ok()) return apps::ReportFailure(meta_r.status().ToString());
  const formats::CheckpointMeta& meta = *meta_r;
  if (ema && !meta.has_ema) return apps::ReportFailure(ckpt + ": --ema but it has no EMA weights");
  auto cfg_r = train::ParseTrainConfig(meta.config_yaml);
  if (!cfg_r.ok()) return apps::ReportFailure(cfg_r.status().WithContext(ckpt).ToString());
  auto dict_r = formats::ReadCheckpointWeights(ckpt, ema);
  if (!dict_r.ok()) return apps::ReportFailure(dict_r.status().ToString());
  Status st = format == "safetensors" ? formats::WriteSafetensors(out, *dict_r)
                                      : formats::WriteTorchZip(out, *dict_r);
  if (!st.ok()) return apps::ReportFailure(st.ToString());
  const auto& m = meta.model;
  nlohmann::json timm_kwargs = {{"num_classes", m.num_classes}};
  if (m.extra_width != 1.0 || m.extra_depth != 1.0) {
    timm_kwargs["channel_multiplier"] = m.extra_width;
    timm_kwargs["depth_multiplier"] = m.extra_depth;
  }
  nlohmann::json side = {
      {"timm_model", "tf_efficientnetv2_" + m.variant},
      {"timm_kwargs", timm_kwargs},
      {"variant", m.variant},
      {"num_classes", m.num_classes},
      {"class_names", meta.class_names},
      {"image_size", meta.eval_image_size},
      {"eval_center_crop", cfg_r->augment.eval_center_crop},
      {"interpolation", "bicubic"},
      {"normalization", Normalisation(cfg_r->augment.normalize)},
      {"weights", ema ? "ema" : "model"},
      {"checkpoint", ckpt},
      {"epoch", meta.epoch},
  };
  st = WriteFileAtomic(out + ".json", side.dump(2) + "\n");
  if (!st.ok()) return apps::ReportFailure(st.ToString());
  std::cout << "wrote " << out << " (" << format << ", " << dict_r->size() << " tensors) and "
            << out << ".json" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"effnet-export: a checkpoint's weights as a timm-loadable file + JSON sidecar"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  std::string ckpt, format = "safetensors", out;
  bool ema = false;
  app.add_option("checkpoint", ckpt, "checkpoint directory (e.g. runs/x/checkpoints/best)")
      ->required();
  app.add_option("--format", format, "safetensors | pt (torch.save zip)");
  app.add_option("--out", out, "output file; the sidecar is FILE.json")->required();
  app.add_flag("--ema", ema, "export the EMA weights instead of the model's");
  CLI11_PARSE(app, argc, argv);
  try {
    return Run(ckpt, format, out, ema);
  } catch (const effnet::StatusError& e) {
    return effnet::apps::ReportFailure(e.status().ToString());
  } catch (const std::exception& e) {
    return effnet::apps::ReportFailure(e.what());
  }
}
