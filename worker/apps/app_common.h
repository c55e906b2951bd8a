// Wiring shared by effnet-train, effnet-worker and effnet-evaluate: config from --config/--preset
// + --set, the EfficientNetV2 model handle, the training run with its reports.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/job/config.h"
#include "common/status.h"
#include "worker/train/config.h"
#include "worker/train/data_parallel.h"
#include "worker/train/job_control.h"
#include "worker/train/trainer.h"

namespace effnet::apps {

struct TrainArgs {
  std::string config_file, preset, data, out, pretrained;
  std::vector<std::string> sets;
  int stop_after_epoch = -1;
  bool config_doc = false, list_presets = false, print_config = false;
};
void AddTrainOptions(CLI::App& app, TrainArgs* args);

// Config from --config FILE or --preset NAME (exactly one; neither = all defaults), --set
// overrides, --data and --stop-after-epoch folded in.
Result<train::TrainConfig> ResolveConfig(const TrainArgs& args);

// EfficientNetV2 of the config's model section with `num_classes` outputs.
Result<train::ModelHandle> BuildModel(const train::TrainConfig& c, int num_classes);

// model.pretrained into `model` (formats::LoadPretrained) unless the run resumes from a checkpoint
// (checkpoint.resume, or the JobControl's last committed one under "auto"). Call before
// Trainer::Setup, which builds the optimiser over the (possibly replaced) classifier.
Status StartFromPretrained(const train::TrainConfig& c, train::ModelHandle& model,
                           train::JobControl& jc);

// Store class i -> model class by name. Identity when the names are equal; a name the model does
// not know is refused listing every such name with the model's names.
Result<std::vector<int64_t>> MapClassesByName(const std::vector<std::string>& model_names,
                                              const std::vector<std::string>& store_names,
                                              const std::string& store);

struct Runtime {
  std::unique_ptr<train::DataParallel> dp;
  // Makes the JobControl; default (empty): LocalJobControl.
  std::function<Result<std::unique_ptr<train::JobControl>>(
      const job::JobConfig&, const std::vector<int64_t>&, const std::string& ckpt_dir)>
      make_job_control;
};

// Trains, then evaluates the BEST checkpoint on the test split and (rank 0) writes the run's
// reports: config.yaml, metrics.jsonl, TensorBoard events, results.md, confusion matrix CSV/SVG,
// learning_curves.svg, summary.json, report.html (and in TensorBoard the test metrics, hparams and
// the confusion matrix). Returns the process exit code.
int RunTraining(const TrainArgs& args, Runtime& rt);

// main() helper: prints a StatusError/exception and returns 1.
int ReportFailure(const std::string& what);

}  // namespace effnet::apps
