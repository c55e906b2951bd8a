// effnet-scripted-worker: a Torch-free worker for the launcher/coordinator end-to-end tests. It
// speaks to the coordinator exactly like effnet-worker (same flags, the real client library, rank
// and world size from mpirun's environment), but its "training" is a timed sleep and its metrics
// are a fixed function of the epoch, so the tests check the control plane (restarts, resume,
// generations, no epoch counted twice, elastic world sizes) in seconds; each rank traces its
// shard per epoch to <out>/trace-rank<r>.log. Rank 0 writes a checkpoint file per epoch
// atomically and commits it. Like effnet-worker it reports an error it ends on to the coordinator
// (JobControl::EndWithError) before it exits with code 1.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "common/atomic_file.h"
#include "common/log.h"
#include "worker/client/coordinator_job_control.h"

namespace {

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : fallback;
}

int Run(int argc, char** argv) {
  using namespace effnet;
  CLI::App app{"effnet-scripted-worker (tests)"};
  client::CoordinatorClientConfig c;
  std::string token_file, config, data, out, tls_ca;
  double epoch_seconds = 0.5;
  app.add_option("--coordinator", c.address)->required();
  app.add_option("--token", c.token);
  app.add_option("--token-file", token_file);
  app.add_option("--generation", c.generation);
  app.add_option("--config", config);
  app.add_option("--data", data);
  app.add_option("--out", out)->required();
  app.add_option("--tls-ca", c.tls_ca_file);
  app.add_option("--epoch-seconds", epoch_seconds, "simulated training time per epoch");
  CLI11_PARSE(app, argc, argv);
  if (!token_file.empty()) {
    auto t = ReadFile(token_file);
    if (!t.ok()) {
      std::cerr << t.status().ToString() << "\n";
      return 2;
    }
    c.token = *t;
    while (!c.token.empty() && (c.token.back() == '\n' || c.token.back() == ' ')) {
      c.token.pop_back();
    }
  }
  c.rank = EnvInt("OMPI_COMM_WORLD_RANK", 0);
  c.world_size = EnvInt("OMPI_COMM_WORLD_SIZE", 1);
  c.device = "cpu";
  c.timeouts.heartbeat_interval_s = 0.2;
  c.timeouts.call_timeout_s = 5;
  log::SetTag("rank " + std::to_string(c.rank));
  auto jc_or = client::ConnectCoordinator(c);
  if (!jc_or.ok()) {
    log::Error(jc_or.status().ToString());
    return 1;
  }
  auto jc = std::move(jc_or).value();
  auto fail = [&jc](const std::string& what) {
    log::Error(what);
    jc->EndWithError(what);
    return 1;
  };
  const std::string ckpt_dir = out + "/checkpoints";  // where effnet-run lets commits lie
  std::filesystem::create_directories(ckpt_dir);
  int start = 0;
  auto resume = jc->ResumeCheckpoint();
  if (!resume.ok()) return 1;
  if (!resume->empty()) {
    auto text = ReadFile(*resume);
    if (!text.ok()) return fail("resume: " + text.status().ToString());
    start = std::stoi(*text) + 1;
    log::Info("resuming from " + *resume + ": next epoch " + std::to_string(start + 1));
  }
  for (int epoch = start;; ++epoch) {
    auto plan = jc->PlanEpoch(epoch);
    if (!plan.ok()) return fail(plan.status().ToString());
    if (plan->stop) break;
    {
      std::ofstream trace(out + "/trace-rank" + std::to_string(c.rank) + ".log", std::ios::app);
      trace << "generation " << c.generation << " epoch " << epoch << " pid " << ::getpid()
            << " samples " << plan->sample_indices.size() << " world " << c.world_size
            << " indices";
      for (size_t i = 0; i < plan->sample_indices.size(); ++i) {
        trace << (i ? "," : " ") << plan->sample_indices[i];
      }
      trace << "\n";
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(epoch_seconds));
    job::RankMetrics m;
    m.epoch = epoch;
    m.rank = c.rank;
    m.train_samples = static_cast<int64_t>(plan->sample_indices.size());
    m.train_loss = 1.0 / (1 + epoch);
    m.train_accuracy = 1.0 - 0.5 / (1 + epoch);
    m.val_loss = 1.2 / (1 + epoch);
    m.val_accuracy = 1.0 - 0.6 / (1 + epoch);
    m.images_per_second = plan->sample_indices.size() / epoch_seconds;
    m.step_time_ms = 1000 * epoch_seconds;
    m.image_size = plan->stage.image_size;
    auto d = jc->EndEpoch(m);
    if (!d.ok()) return fail(d.status().ToString());
    if (c.rank == 0) {
      const std::string path = ckpt_dir + "/epoch-" + std::to_string(epoch) + ".txt";
      Status s = WriteFileAtomic(path, std::to_string(epoch) + "\n");
      if (!s.ok()) return fail("cannot write checkpoint: " + s.ToString());
      s = jc->CommitCheckpoint(epoch, path, d->is_best);
      if (!s.ok()) return fail(s.ToString());
    }
    if (d->stop) break;
  }
  jc.reset();  // leaves the job cleanly
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
