// effnet-train: one process, SingleProcess DataParallel + LocalJobControl.
//   effnet-train --preset tiny --data data.h5 --out runs/tiny [--set optimizer.lr=0.001]
#include <CLI/CLI.hpp>

#include "worker/apps/app_common.h"

int main(int argc, char** argv) {
  CLI::App app{"effnet-train: train EfficientNetV2 on an effnet HDF5 file (single process)"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  effnet::apps::TrainArgs args;
  effnet::apps::AddTrainOptions(app, &args);
  CLI11_PARSE(app, argc, argv);
  try {
    effnet::apps::Runtime rt;
    rt.dp = std::make_unique<effnet::train::SingleProcess>();
    return effnet::apps::RunTraining(args, rt);
  } catch (const effnet::StatusError& e) {
    return effnet::apps::ReportFailure(e.status().ToString());
  } catch (const std::exception& e) {
    return effnet::apps::ReportFailure(e.what());
  }
}
