// effnet-worker: one rank of a data-parallel job, started by mpirun (or effnet-run).
//   mpirun -np 2 effnet-worker --preset tiny --data data.h5 --out runs/x
//   ... --coordinator HOST:PORT --token T   (decisions and shards from the coordinator)
// World and rank come from MPI; on CUDA each rank uses the GPU of its local rank. Only rank 0
// writes reports and checkpoints.
#include <torch/cuda.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>

#include "common/atomic_file.h"
#include "common/log.h"
#include "common/text.h"
#include "worker/apps/app_common.h"
#include "worker/dist/create.h"
#include "worker/train/config.h"
#include "worker/train/local_job_control.h"
#if __has_include("worker/client/coordinator_job_control.h") && defined(EFFNET_HAVE_CLIENT)
#include "worker/client/coordinator_job_control.h"
#endif

int main(int argc, char** argv) {
  CLI::App app{"effnet-worker: one rank of data-parallel EfficientNetV2 training"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  effnet::apps::TrainArgs args;
  effnet::apps::AddTrainOptions(app, &args);
  std::string coordinator, token, token_file, tls_ca;
  int64_t generation = 0;
  // Shortcuts for --set of dist.* fields (docs/config.md): one set of settings, not two.
  auto set_option = [&](const char* flag, const std::string& key) {
    app.add_option_function<std::string>(
        flag, [&args, key](const std::string& v) { args.sets.push_back(key + "=" + v); },
        "shortcut for --set " + key + "=VALUE");
  };
  auto set_flag = [&](const char* flag, const std::string& key) {
    app.add_flag_callback(
        flag, [&args, key] { args.sets.push_back(key + "=true"); },
        "shortcut for --set " + key + "=true");
  };
  set_option("--backend", "dist.backend");
  set_option("--first-bucket-mb", "dist.reducer.first_bucket_mb");
  set_option("--bucket-cap-mb", "dist.reducer.bucket_cap_mb");
  set_flag("--sync-bn", "dist.sync_batchnorm");
  set_flag("--compress-bf16", "dist.reducer.compress_bf16");
  set_option("--collective-timeout", "dist.comm.timeout_s");
  app.add_option("--coordinator", coordinator, "coordinator address HOST:PORT");
  app.add_option("--token", token, "the job's token (with --coordinator)");
  app.add_option("--token-file", token_file,
                 "file holding the job's token (keeps it out of the process list)");
  app.add_option("--tls-ca", tls_ca, "CA certificate (PEM) to verify the coordinator's TLS");
  app.add_option("--generation", generation, "launch generation (with --coordinator)");
  CLI11_PARSE(app, argc, argv);
  try {
    const auto world = effnet::dist::InitMpi();
    effnet::log::SetTag("rank " + std::to_string(world.rank));
    if (torch::cuda::is_available()) {
      bool device_given = false;
      for (const auto& s : args.sets) device_given |= s.rfind("runtime.device=", 0) == 0;
      if (!device_given) {
        const int n = static_cast<int>(torch::cuda::device_count());
        args.sets.push_back("runtime.device=cuda:" + std::to_string(world.local_rank % n));
      }
    }
    if (world.rank != 0) args.sets.push_back("output.progress=false");
    // Note [one terminal] (worker/apps/app_common.cpp): under mpirun every rank's stderr reaches
    // one terminal; ranks other than 0 show warnings and errors only there (their whole log is in
    // <out>/logs/rank-N.log). EFFNET_LOG_ALL_RANKS=1 shows every rank's lines.
    const char* all_ranks = std::getenv("EFFNET_LOG_ALL_RANKS");
    if (world.rank != 0 && !(all_ranks && std::string(all_ranks) == "1")) {
      effnet::log::SetTerminalLevel(effnet::log::Level::kWarn);
    }
    if (!token_file.empty()) {
      auto contents = effnet::ReadFile(token_file);
      if (!contents.ok()) {
        return effnet::apps::ReportFailure("--token-file: " + contents.status().ToString());
      }
      token = *contents;
      while (!token.empty() &&
             (token.back() == '\n' || token.back() == '\r' || token.back() == ' ')) {
        token.pop_back();
      }
    }
    // The data-parallel and client settings come from the same resolved config as training's.
    auto cfg = effnet::apps::ResolveConfig(args);
    if (!cfg.ok()) return effnet::apps::ReportFailure(cfg.status().ToString());
    effnet::apps::Runtime rt;
    auto dp = effnet::dist::CreateDataParallel(cfg->dist);
    if (!dp.ok()) return effnet::apps::ReportFailure(dp.status().ToString());
    rt.dp = std::move(dp).value();
    if (!coordinator.empty()) {
#if defined(EFFNET_HAVE_CLIENT)
      rt.make_job_control =
          [&](const effnet::job::JobConfig& job, const std::vector<int64_t>&,
              const std::string&) -> effnet::Result<std::unique_ptr<effnet::train::JobControl>> {
        effnet::client::CoordinatorClientConfig cc;
        cc.address = coordinator;
        cc.timeouts = cfg->client;
        cc.job_config = effnet::train::JobConfigToYaml(job);
        cc.token = token;
        cc.tls_ca_file = tls_ca;
        cc.rank = world.rank;
        cc.world_size = world.world_size;
        cc.generation = generation;
        cc.host = effnet::HostName();
        cc.device =
            torch::cuda::is_available() ? "cuda:" + std::to_string(world.local_rank) : "cpu";
        return effnet::client::ConnectCoordinator(cc);
      };
#else
      return effnet::apps::ReportFailure(
          "--coordinator: this effnet-worker was built without the coordinator client");
#endif
    }
    return effnet::apps::RunTraining(args, rt);
  } catch (const effnet::StatusError& e) {
    return effnet::apps::ReportFailure(e.status().ToString());
  } catch (const std::exception& e) {
    return effnet::apps::ReportFailure(e.what());
  }
}
