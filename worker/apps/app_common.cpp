#include "worker/apps/app_common.h"

#include <ATen/Parallel.h>
#include <torch/utils.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/atomic_file.h"
#include "common/host_memory.h"
#include "common/log.h"
#include "common/utf8.h"
#include "storage/dataset_reader.h"
#include "worker/formats/pretrained.h"
#include "worker/model/efficientnet.h"
#include "worker/report/html_report.h"
#include "worker/report/report.h"
#include "worker/report/run_summary.h"
#include "worker/train/local_job_control.h"

namespace effnet::apps {
namespace fs = std::filesystem;

void AddTrainOptions(CLI::App& app, TrainArgs* a) {
  app.add_option("--config", a->config_file, "YAML config file");
  app.add_option("--preset", a->preset, "built-in preset (see --list-presets)");
  app.add_option("--data", a->data, "HDF5 data file (effnet-prepare); overrides data.path");
  app.add_option("--pretrained", a->pretrained,
                 "weights to start from (timm safetensors/torch zip, or Keras); overrides "
                 "model.pretrained");
  app.add_option("--out", a->out, "run directory (created; an existing one is resumed)");
  app.add_option("--set", a->sets, "override: section.field=value (repeatable)");
  app.add_option("--stop-after-epoch", a->stop_after_epoch,
                 "exit after this epoch's checkpoint (0-based; preemption drill)");
  app.add_flag("--config-doc", a->config_doc, "print the config fields as Markdown and exit");
  app.add_flag("--list-presets", a->list_presets, "print the preset names and exit");
  app.add_flag("--print-config", a->print_config, "print the resolved config and exit");
}

Result<train::TrainConfig> ResolveConfig(const TrainArgs& a) {
  if (!a.config_file.empty() && !a.preset.empty()) {
    return InvalidArgument("--config and --preset: give one of them, not both");
  }
  std::vector<std::string> sets = a.sets;
  if (!a.data.empty()) sets.push_back("data.path=" + a.data);
  if (!a.pretrained.empty()) sets.push_back("model.pretrained=" + a.pretrained);
  if (a.stop_after_epoch >= 0) {
    sets.push_back("output.stop_after_epoch=" + std::to_string(a.stop_after_epoch));
  }
  if (!a.config_file.empty()) return train::LoadTrainConfig(a.config_file, sets);
  std::string text = "{}";
  if (!a.preset.empty()) {
    EFFNET_ASSIGN_OR_RETURN(text, train::PresetText(a.preset));
  }
  auto c = train::ParseTrainConfig(text, sets);
  if (!c.ok() && !a.preset.empty()) return c.status().WithContext("preset " + a.preset);
  return c;
}

Result<train::ModelHandle> BuildModel(const train::TrainConfig& c, int num_classes) {
  model::ModelConfig mc = c.model;
  mc.num_classes = num_classes;
  mc.dropout = c.job.progressive.max_dropout;  // each progressive stage sets its own
  EFFNET_RETURN_IF_ERROR(model::ValidateConfig(mc).WithContext("model"));
  train::ModelHandle h;
  try {
    auto net = model::EfficientNetV2(mc);
    net->set_fused_kernels(c.runtime.fused_kernels != "off");
    h.module = net.ptr();
    h.forward = [net](const torch::Tensor& x) mutable { return net->forward(x); };
    h.set_dropout = [net](double r) mutable { net->set_dropout(r); };
    EFFNET_ASSIGN_OR_RETURN(int k, train::ParseFreeze(c.transfer.freeze));
    const int stages = static_cast<int>(net->architecture().stages.size());
    if (k == train::kFreezeBackbone) k = stages + 1;
    if (k > stages + 1) {
      return InvalidArgument("model.freeze: " + c.transfer.freeze + " but variant " +
                             c.model.variant + " has " + std::to_string(stages) +
                             " stages (stages:" + std::to_string(stages + 1) +
                             " = backbone, all but the classifier)");
    }
    if (k >= 0) {
      h.set_frozen = [net, k](bool on) mutable -> Status {
        try {
          net->freeze_stages(on ? k : -1);
        } catch (const StatusError& e) {
          return e.status();
        }
        return Status::Ok();
      };
    }
  } catch (const StatusError& e) {
    return e.status().WithContext("building the model");
  } catch (const std::exception& e) {
    return InvalidArgument(std::string("building the model: ") + e.what());
  }
  h.num_classes = num_classes;
  std::string v = c.model.variant;
  for (auto& ch : v) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  h.name = "EfficientNetV2-" + v;
  if (c.model.extra_width != 1.0 || c.model.extra_depth != 1.0) h.name += " (reduced)";
  return h;
}

Status StartFromPretrained(const train::TrainConfig& c, train::ModelHandle& model,
                           train::JobControl& jc) {
  const std::string& path = c.transfer.pretrained;
  if (path.empty()) return Status::Ok();
  EFFNET_ASSIGN_OR_RETURN(const std::string resume, train::ResumeCheckpointPath(c.checkpoint, jc));
  if (!resume.empty()) {
    log::Info("model.pretrained " + path + " not loaded: resuming from " + resume);
    return Status::Ok();
  }
  auto net = std::dynamic_pointer_cast<model::EfficientNetV2Impl>(model.module);
  if (!net) return InvalidArgument("model.pretrained: the model is not an EfficientNetV2");
  formats::TransferOptions options;
  options.normalize = c.augment.normalize;
  return formats::LoadPretrained(*net, path, options).WithContext("model.pretrained");
}

Result<std::vector<int64_t>> MapClassesByName(const std::vector<std::string>& model_names,
                                              const std::vector<std::string>& store_names,
                                              const std::string& store) {
  std::vector<int64_t> map;
  std::vector<std::string> unknown;
  for (const auto& name : store_names) {
    auto it = std::find(model_names.begin(), model_names.end(), name);
    if (it == model_names.end()) {
      unknown.push_back("'" + name + "'");
    } else {
      map.push_back(it - model_names.begin());
    }
  }
  if (!unknown.empty()) {
    std::string u, m;
    for (const auto& x : unknown) u += (u.empty() ? "" : ", ") + x;
    for (const auto& x : model_names) m += (m.empty() ? "" : ", ") + ("'" + x + "'");
    return InvalidArgument(store + ": class name(s) " + u +
                           " unknown to the model (its classes: " + m + "); refusing");
  }
  return map;
}

int ReportFailure(const std::string& what) {
  log::Error(what);
  std::cerr << "error: " << what << std::endl;
  return 1;
}

namespace {

// The test results and the run's hyper-parameters in TensorBoard, on the global-step axis
// (Note [TensorBoard step axis] in worker/train/trainer.cpp).
Status WriteTensorBoardResults(report::TensorBoardWriter& tb, const train::TrainConfig& c,
                               const train::EvalResult& test, const report::ConfusionMatrix& cm,
                               int world, const std::string& device, int64_t step) {
  EFFNET_RETURN_IF_ERROR(tb.AddScalar("test/accuracy", test.accuracy, step));
  EFFNET_RETURN_IF_ERROR(tb.AddScalar("test/loss", test.loss, step));
  EFFNET_ASSIGN_OR_RETURN(report::PngImage png, report::ConfusionMatrixPng(cm));
  std::string legend = "Test split, best checkpoint. Rows: true class, columns: predicted. ";
  for (size_t i = 0; i < cm.class_names.size(); ++i) {
    legend += (i ? ", " : "") + std::to_string(i) + " = " + cm.class_names[i];
  }
  EFFNET_RETURN_IF_ERROR(
      tb.AddImage("test/confusion_matrix", png.bytes, png.width, png.height, step, legend));
  const std::vector<report::HParam> hparams = {
      {"model.variant", c.model.variant},
      {"global_batch_size", static_cast<double>(c.data.batch_size)},  // Note [global batch]
      {"optimizer.name", c.optimizer.name},
      {"optimizer.lr", c.optimizer.lr},
      {"peak_lr", train::PeakLr(c)},  // optimizer.lr scaled to the global batch (lr_base_batch)
      {"optimizer.weight_decay", c.optimizer.weight_decay},
      {"schedule.name", c.schedule.name},
      {"job.epochs", static_cast<double>(c.job.epochs)},
      {"job.progressive.num_stages", static_cast<double>(c.job.progressive.num_stages)},
      {"job.progressive.max_image_size", static_cast<double>(c.job.progressive.max_image_size)},
      {"model.pretrained", !c.transfer.pretrained.empty()},
      {"world_size", static_cast<double>(world)},
      {"device", device}};
  EFFNET_RETURN_IF_ERROR(tb.AddHparams(
      hparams, {"test/accuracy", "test/loss", "epoch/val_accuracy", "epoch/val_loss"}, true));
  return tb.Flush();
}

Status WriteReports(const std::string& out, const train::TrainConfig& c,
                    const train::ModelHandle& model, const train::FitResult& fit,
                    const train::EvalResult& test, const std::vector<std::string>& classes,
                    int world, const std::string& device, int best_epoch,
                    report::TensorBoardWriter* tb, int64_t step) {
  // No test images: no confusion matrix and null test metrics (never "accuracy 0 on 0 images").
  report::ConfusionMatrix cm;
  cm.class_names = classes;
  cm.counts = test.confusion;
  if (test.count > 0) {
    const std::string title =
        model.name + " test split (best epoch " + std::to_string(best_epoch + 1) + ")";
    EFFNET_RETURN_IF_ERROR(
        report::WriteConfusionMatrixCsv(cm, out + "/" + report::kConfusionMatrixCsv));
    EFFNET_RETURN_IF_ERROR(
        report::WriteConfusionMatrixSvg(cm, out + "/" + report::kConfusionMatrixSvg, title));
  }
  EFFNET_RETURN_IF_ERROR(report::WriteLearningCurvesSvg(out + "/" + report::kMetricsJsonl,
                                                        out + "/" + report::kLearningCurvesSvg,
                                                        model.name + " learning curves"));
  report::RunSummary s;
  s.model = model.name;
  s.variant = c.model.variant;
  s.batch_size = c.data.batch_size;  // global (Note [global batch])
  s.fit_time_s = fit.fit_time_s;
  if (test.count > 0) {
    s.test_accuracy = test.accuracy;
    s.test_loss = test.loss;
  }
  s.world_size = world;
  s.device = device;
  s.test_count = test.count;
  s.best_epoch = best_epoch;
  s.stop_reason = fit.stop_reason;
  s.reduced = c.model.extra_width != 1.0 || c.model.extra_depth != 1.0;
  s.start = report::StartLabel(c.transfer.pretrained);
  // Note [elastic world size] (coordinator/job.h): each epoch's ranks, as its record says.
  if (auto epochs = report::ReadEpochRecords(out + "/" + report::kMetricsJsonl); epochs.ok()) {
    for (const auto& e : *epochs) {
      if (!e.world_size || e.epoch != static_cast<double>(s.epoch_world_sizes.size())) {
        s.epoch_world_sizes.clear();  // an older record, or a gap: unknown
        break;
      }
      s.epoch_world_sizes.push_back(static_cast<int>(*e.world_size));
    }
  }
  report::ResultRow row = report::ToResultRow(s);
  row.note = "best epoch " + std::to_string(best_epoch + 1) + ", " + fit.stop_reason;
  if (test.count == 0) row.note += "; no test images: test metrics not computed";
  // The study's rows are a reference only on the study's own data (not, e.g., on effnet-synth).
  EFFNET_RETURN_IF_ERROR(
      report::WriteResultsMarkdown({row}, out + "/results.md", report::IsStudyDataset(classes)));
  EFFNET_RETURN_IF_ERROR(
      WriteFileAtomic(out + "/" + report::kRunSummaryJson, report::RunSummaryToJson(s)));
  if (tb != nullptr && test.count > 0) {
    // TensorBoard is a convenience: a failure there is logged, the run's files still count.
    if (Status st = WriteTensorBoardResults(*tb, c, test, cm, world, device, step); !st.ok()) {
      log::Warn("tensorboard: " + st.ToString());
    }
  }
  // Built from the files just written, as effnet-results --html builds it.
  return report::WriteRunsReportHtml({out}, out + "/" + report::kReportHtml,
                                     report::IsStudyDataset(classes));
}

}  // namespace

int RunTraining(const TrainArgs& args, Runtime& rt) {
  if (args.config_doc) {
    std::cout << train::ConfigDocMarkdown();
    return 0;
  }
  if (args.list_presets) {
    for (const auto& n : train::PresetNames()) std::cout << n << "\n";
    return 0;
  }
  auto cfg_r = ResolveConfig(args);
  if (!cfg_r.ok()) return ReportFailure(cfg_r.status().ToString());
  train::TrainConfig cfg = std::move(cfg_r).value();
  if (args.print_config) {
    std::cout << train::TrainConfigToYaml(cfg);
    return 0;
  }
  if (cfg.data.path.empty()) return ReportFailure("no data file: give --data FILE.h5 or data.path");
  // Checkpoints record the data path in meta.json, which holds UTF-8 only (Note [text encoding]);
  // refuse here rather than at the first checkpoint.
  if (!IsValidUtf8(cfg.data.path)) {
    return ReportFailure("data path " + cfg.data.path +
                         " is not valid UTF-8; rename the file or link it under a UTF-8 name");
  }
  if (args.out.empty()) return ReportFailure("no run directory: give --out RUN_DIR");
  // Note [finished runs]: summary.json is written last, once the test split is evaluated; a run
  // folder holding it is finished and is never written again. Rerunning it with the same run
  // (RunDifferences, Note [what a run is]) says where the results are and exits 0; with another
  // one (more epochs, another variant...) it is refused: the learning-rate schedule and early
  // stopping depend on job.epochs, so continuing would not be the run the new config describes.
  const std::string summary_path = args.out + "/" + report::kRunSummaryJson;
  if (fs::exists(summary_path)) {
    auto before = train::LoadTrainConfig(args.out + "/config.yaml");
    if (!before.ok()) {
      return ReportFailure(args.out + " is a finished run (" + summary_path +
                           ") whose config cannot be read: " + before.status().ToString() +
                           "; its results are left as they are; train with another --out");
    }
    const auto diffs = train::RunDifferences(*before, cfg);
    if (diffs.empty()) {
      log::Info(args.out + " is a finished run: nothing to train; results in " + args.out +
                "/results.md and " + summary_path + " (left untouched)");
      return 0;
    }
    std::string text;
    for (const auto& d : diffs) text += (text.empty() ? "" : "; ") + d;
    return ReportFailure(args.out + " is a finished run and this config differs from its own (" +
                         text + "); a finished run's results are never rewritten: train with " +
                         "another --out (to start from its weights: --set model.pretrained=" +
                         args.out + "/checkpoints/best/model.safetensors)");
  }
  const int rank = rt.dp->rank(), world = rt.dp->world_size();
  // Note [one terminal]: with several ranks each keeps its whole log in <out>/logs/rank-N.log;
  // the terminal shows rank 0's lines and the others' warnings and errors (effnet-worker).
  if (world > 1) {
    std::string error;
    if (!log::AlsoLogToFile(args.out + "/logs/rank-" + std::to_string(rank) + ".log", &error)) {
      log::Warn("no per-rank log file: " + error);
    }
  }
  // Note [threads per rank]: runtime.threads 0 shares this host's default intra-op threads (its
  // cores, or OMP_NUM_THREADS) among the ranks mpirun started on it (OMPI_COMM_WORLD_LOCAL_SIZE),
  // so N ranks on one CPU machine do not run N x cores threads; measured on 2 cores (docs/
  // training.md), 2 ranks x 1 thread train as fast as 1 rank x 2 threads.
  if (cfg.runtime.threads > 0) {
    at::set_num_threads(cfg.runtime.threads);
  } else if (const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE")) {
    const int ranks_here = std::max(1, std::atoi(local));
    if (ranks_here > 1) at::set_num_threads(std::max(1, at::get_num_threads() / ranks_here));
  }
  if (const std::string why = KeepFreedHostMemory(); !why.empty()) {
    log::Info("host allocator left as it is: " + why);
  }
  if (world > 1) {
    log::Info("rank " + std::to_string(rank) + ": " + std::to_string(at::get_num_threads()) +
              " intra-op threads (runtime.threads " + std::to_string(cfg.runtime.threads) + ")");
  }

  auto reader_r = storage::DatasetReader::Open(cfg.data.path);
  if (!reader_r.ok()) return ReportFailure(reader_r.status().ToString());
  auto reader = std::move(reader_r).value();
  const auto& info = reader->info();
  if (cfg.model.num_classes > 0 && cfg.model.num_classes != info.num_classes()) {
    return ReportFailure("model.num_classes is " + std::to_string(cfg.model.num_classes) + " but " +
                         cfg.data.path + " has " + std::to_string(info.num_classes()) +
                         " classes (" + std::to_string(info.num_classes()) +
                         " expected); refusing to train");
  }
  // Note [short splits] (storage/splits.h): validation loss drives early stopping and, with
  // accuracy, the best checkpoint; without validation images every epoch would score 0.
  if (info.IndicesOf(storage::Split::kVal).empty()) {
    return ReportFailure(cfg.data.path +
                         " has no validation images: validation loss, early stopping and the best "
                         "checkpoint need them; prepare it again with more images or a larger "
                         "--val-fraction");
  }
  // Same initial weights on every rank even before Attach broadcasts them.
  torch::manual_seed(cfg.job.seed);
  auto model_r = BuildModel(cfg, info.num_classes());
  if (!model_r.ok()) return ReportFailure(model_r.status().ToString());
  auto model = std::move(model_r).value();

  std::error_code ec;
  fs::create_directories(args.out, ec);
  if (ec) return ReportFailure("creating " + args.out + ": " + ec.message());
  if (rank == 0) {
    auto st = WriteFileAtomic(args.out + "/config.yaml", train::TrainConfigToYaml(cfg));
    if (!st.ok()) return ReportFailure(st.ToString());
  }
  const std::string ckpt_dir = args.out + "/checkpoints";
  std::unique_ptr<train::JobControl> jc;
  auto train_idx = info.IndicesOf(storage::Split::kTrain);
  if (rt.make_job_control) {
    auto jr = rt.make_job_control(cfg.job, train_idx, ckpt_dir);
    if (!jr.ok()) return ReportFailure(jr.status().ToString());
    jc = std::move(jr).value();
  } else {
    jc = std::make_unique<train::LocalJobControl>(cfg.job, train_idx, rank, world, ckpt_dir);
  }
  // Note [failure causes] (coordinator/job.h): from here on an error also goes to the
  // JobControl, so a coordinator records it as this rank's failure, not only this log.
  auto fail = [&jc](const std::string& what) {
    const int rc = ReportFailure(what);
    jc->EndWithError(what);
    return rc;
  };
  auto train_and_report = [&]() -> int {
    if (auto pst = StartFromPretrained(cfg, model, *jc); !pst.ok()) {
      return fail(pst.ToString());
    }
    train::Trainer trainer(cfg, model, *reader, *rt.dp, *jc, args.out);
    std::unique_ptr<report::TensorBoardWriter> tb;
    if (rank == 0 && cfg.output.tensorboard) {
      auto tr = report::TensorBoardWriter::Create(args.out);
      if (tr.ok()) {
        tb = std::move(tr).value();
        trainer.on_scalar = [&tb](const std::string& tag, double v, int64_t step) {
          auto st = tb->AddScalar(tag, v, step);
          if (!st.ok()) log::Warn("tensorboard: " + st.ToString());
        };
      } else {
        log::Warn("tensorboard disabled: " + tr.status().ToString());
      }
    }
    auto st = trainer.Setup();
    if (!st.ok()) return fail(st.ToString());
    log::Info(model.name + ": " + std::to_string(model::CountParameters(*model.module)) +
              " parameters, " + std::to_string(info.num_classes()) + " classes, " +
              std::to_string(train_idx.size()) + " train images, world " + std::to_string(world) +
              ", device " + trainer.device().str());
    auto fit_r = trainer.Fit();
    if (tb) (void)tb->Flush();
    if (!fit_r.ok()) return fail(fit_r.status().ToString());
    auto fit = std::move(fit_r).value();
    if (fit.stopped_early_for_test) {
      log::Info("stopped after epoch " + std::to_string(fit.last_epoch + 1) +
                " as asked (output.stop_after_epoch " + std::to_string(fit.last_epoch) +
                ", 0-based); resume with the same --out");
      return 0;
    }
    // The TEST split is evaluated once, with the BEST checkpoint's weights only.
    std::string best = fit.best_checkpoint;
    if (best.empty()) best = fit.last_checkpoint;
    if (best.empty()) return fail("no checkpoint to evaluate (no epoch finished)");
    st = trainer.LoadWeights(best);
    if (!st.ok()) return fail(st.ToString());
    auto test_r = trainer.Evaluate(storage::Split::kTest);
    if (!test_r.ok()) return fail(test_r.status().ToString());
    const auto& test = *test_r;
    if (test.count == 0) {
      log::Warn("no test images in " + cfg.data.path + ": test metrics not computed (best epoch " +
                std::to_string(fit.best_epoch + 1) + ", fit time " +
                std::to_string(fit.fit_time_s) + " s)");
    } else {
      log::Info("test accuracy " + std::to_string(test.accuracy) + " on " +
                std::to_string(test.count) + " images (best epoch " +
                std::to_string(fit.best_epoch + 1) + "), fit time " +
                std::to_string(fit.fit_time_s) + " s");
    }
    if (rank == 0) {
      st = WriteReports(args.out, cfg, model, fit, test, info.class_names, world,
                        trainer.device().is_cuda() ? "cuda" : "cpu", fit.best_epoch, tb.get(),
                        trainer.global_step());
      if (!st.ok()) return fail(st.ToString());
    }
    return 0;
  };
  try {
    return train_and_report();
  } catch (const StatusError& e) {
    return fail(e.status().ToString());
  } catch (const std::exception& e) {
    return fail(e.what());
  }
}

}  // namespace effnet::apps
