// effnet-coordinator: serves one training job to its workers (see coordinator/server.h).
//
//   effnet-coordinator --data data.h5 --config run.yaml --world-size 2 --port 0
//       --port-file out/coordinator.port --state-dir out/coordinator --token-file out/token
//
// Exits 0 once the job finished and every worker left (unless --stay), 1 on a start-up error (2
// without --data, --config or --world-size), 130 on SIGINT/SIGTERM (the state file is kept: a
// restart resumes the job).
//
//   effnet-coordinator state --state-dir out/coordinator [--json]
//   effnet-coordinator state --address host:port --token-file out/token [--tls-ca ca.pem] [--json]
//
// Prints the job's state, read from a state dir through the state file's schema or asked from a
// live coordinator (GetJobState): with --json the JobState message in protobuf's JSON mapping,
// else the status line and the results table. Exits 0, 1 on an error (a refused or malformed
// state file, an unreachable coordinator), 2 unless exactly one of --state-dir and --address is
// given, 3 when the state dir holds no state file yet.
//
//   effnet-coordinator resize --address host:port --token-file out/token --world-size 3
//       [--reason text]
//
// Asks a live coordinator to end the running launch at the epoch boundary and open the next
// generation with that many ranks (Note [elastic world size] in coordinator/job.h); effnet-run
// does when ranks came back. Exits 0 (the new state on stdout as JSON), 1 when refused.
#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <iostream>
#include <numeric>

#include "common/atomic_file.h"
#include "common/log.h"
#include "coordinator/job_state.h"
#include "coordinator/server.h"
#include "proto/convert.h"
#include "storage/dataset_reader.h"
#include "worker/train/config.h"

namespace {

std::atomic<int> g_signal{0};
void OnSignal(int sig) { g_signal = sig; }

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

constexpr int kExitNoState = 3;

effnet::Result<std::string> ReadToken(const std::string& token_file) {
  auto t = effnet::ReadFile(token_file);
  if (!t.ok()) return t.status().WithContext("--token-file");
  return Trim(*t);
}

struct StateArgs {
  std::string state_dir;
  effnet::coord::StateQuery query;
  std::string token_file;
  bool json = false;
};

// `effnet-coordinator state`: see the top of this file.
int PrintState(const StateArgs& a) {
  using namespace effnet;
  if (a.state_dir.empty() == a.query.address.empty()) {
    std::cerr << "state: give either --state-dir or --address\n";
    return 2;
  }
  v1::JobState state;
  if (!a.state_dir.empty()) {
    auto file = coord::ReadStateFile(a.state_dir);
    if (!file.ok()) {
      std::cerr << "effnet-coordinator state: " << file.status().ToString() << "\n";
      return file.status().code() == StatusCode::kNotFound ? kExitNoState : 1;
    }
    state = file->state();
  } else {
    coord::StateQuery q = a.query;
    if (!a.token_file.empty()) {
      auto t = ReadToken(a.token_file);
      if (!t.ok()) {
        std::cerr << "effnet-coordinator state: " << t.status().ToString() << "\n";
        return 1;
      }
      q.token = *t;
    }
    auto asked = coord::AskCoordinator(q);
    if (!asked.ok()) {
      std::cerr << "effnet-coordinator state: " << asked.status().ToString() << "\n";
      return 1;
    }
    state = *asked;
  }
  if (a.json) {
    std::cout << wire::ToJsonText(state);
  } else {
    std::cout << state.status_line() << "\n\n" << coord::ResultsTable(state) << "\n";
  }
  return 0;
}

struct ResizeArgs {
  effnet::coord::StateQuery query;
  std::string token_file;
  int world_size = 0;
  std::string reason = "asked by the operator";
};

// `effnet-coordinator resize`: see the top of this file.
int Resize(const ResizeArgs& a) {
  using namespace effnet;
  coord::StateQuery q = a.query;
  if (!a.token_file.empty()) {
    auto t = ReadToken(a.token_file);
    if (!t.ok()) {
      std::cerr << "effnet-coordinator resize: " << t.status().ToString() << "\n";
      return 1;
    }
    q.token = *t;
  }
  auto state = coord::AskResize(q, a.world_size, a.reason);
  if (!state.ok()) {
    std::cerr << "effnet-coordinator resize: " << state.status().ToString() << "\n";
    return 1;
  }
  std::cout << wire::ToJsonText(*state);
  return 0;
}

int Run(int argc, char** argv) {
  using namespace effnet;
  CLI::App app{"effnet-coordinator: the job's control plane (shards, schedule, decisions)"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  std::string data, config_path, port_file, token_file;
  int world_size = 0, min_world_size = 0;
  bool exit_when_done = true;
  coord::CoordinatorConfig c;
  // Required unless the state subcommand is given (checked after parsing).
  app.add_option("--data", data, "HDF5 data set (its train split is sharded); required");
  app.add_option("--config", config_path,
                 "the run's YAML config (docs/config.md), validated whole; its job: section drives "
                 "the job; required");
  app.add_option("--world-size", world_size, "number of worker ranks; required");
  app.add_option("--min-world-size", min_world_size,
                 "elastic: a launch may have this many ranks up to --world-size (a relaunch after "
                 "a lost rank continues with the ranks left); data.batch_size must be divisible "
                 "by every size in between; 0 = --world-size (not elastic)")
      ->capture_default_str();
  app.add_option("--host", c.host,
                 "listen address: 127.0.0.1 = this host only; 0.0.0.0 = every interface (other "
                 "hosts: use --tls-cert/--tls-key, docs/reliability.md)")
      ->capture_default_str();
  std::string checkpoint_dir;
  app.add_option("--checkpoint-dir", checkpoint_dir,
                 "the run's checkpoint folder (<out>/checkpoints): committed checkpoint paths "
                 "outside it are refused; empty: only '..' is refused");
  app.add_option("--port", c.port, "listen port; 0 = pick a free one")->capture_default_str();
  app.add_option("--port-file", port_file, "write the port here (atomically) once listening");
  app.add_option("--state-dir", c.state_dir, "state.json lives here; an existing one is resumed");
  app.add_option("--token", c.token, "job token (prefer --token-file: argv is visible in ps)");
  app.add_option("--token-file", token_file, "file holding the job token");
  app.add_option("--tls-cert", c.tls_cert_file, "PEM certificate (enables TLS)");
  app.add_option("--tls-key", c.tls_key_file, "PEM private key");
  app.add_option("--generation", c.generation, "launch generation")->capture_default_str();
  app.add_option("--heartbeat-timeout", c.heartbeat_timeout_s,
                 "seconds without a heartbeat "
                 "before a worker is marked dead")
      ->capture_default_str();
  app.add_option("--reconnect-grace", c.reconnect_grace_s,
                 "seconds a worker whose heartbeat stream broke has to reconnect before it is "
                 "marked dead")
      ->capture_default_str();
  app.add_flag("--exit-when-done,!--stay", exit_when_done,
               "exit once the job finished and all workers left (default) or stay")
      ->capture_default_str();
  StateArgs state_args;
  CLI::App* state_cmd = app.add_subcommand(
      "state", "print the job's state from a state dir or a live coordinator, then exit");
  state_cmd->add_option("--state-dir", state_args.state_dir, "read <dir>/state.json");
  state_cmd->add_option("--address", state_args.query.address,
                        "ask the coordinator at host:port (GetJobState)");
  state_cmd->add_option("--token", state_args.query.token, "job token (with --address)");
  state_cmd->add_option("--token-file", state_args.token_file, "file holding the job token");
  state_cmd->add_option("--tls-ca", state_args.query.tls_ca_file,
                        "CA (PEM) the coordinator's certificate is checked against");
  state_cmd->add_option("--timeout", state_args.query.timeout_s, "seconds the call may take")
      ->capture_default_str();
  state_cmd->add_flag("--json", state_args.json,
                      "the JobState message in protobuf's JSON mapping (default: a table)");
  ResizeArgs resize_args;
  CLI::App* resize_cmd = app.add_subcommand(
      "resize",
      "ask a live coordinator to continue at the next epoch boundary with another "
      "number of ranks, then exit");
  resize_cmd->add_option("--address", resize_args.query.address, "host:port")->required();
  resize_cmd->add_option("--token-file", resize_args.token_file, "file holding the job token")
      ->required();
  resize_cmd->add_option("--tls-ca", resize_args.query.tls_ca_file,
                         "CA (PEM) the coordinator's certificate is checked against");
  resize_cmd->add_option("--world-size", resize_args.world_size, "the next launch's ranks")
      ->required();
  resize_cmd->add_option("--reason", resize_args.reason, "recorded with the change")
      ->capture_default_str();
  resize_cmd->add_option("--timeout", resize_args.query.timeout_s, "seconds the call may take")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (*state_cmd) return PrintState(state_args);
  if (*resize_cmd) return Resize(resize_args);
  log::SetTag("coordinator");
  if (data.empty() || config_path.empty() || world_size == 0) {
    log::Error("--data, --config and --world-size are required (see --help)");
    return 2;
  }
  if (!token_file.empty()) {
    auto t = ReadToken(token_file);
    if (!t.ok()) {
      log::Error(t.status().ToString());
      return 1;
    }
    c.token = *t;
  }
  if (c.token.empty()) {
    log::Error("a job token is required (--token or --token-file)");
    return 1;
  }
  if (c.tls_cert_file.empty() != c.tls_key_file.empty()) {
    log::Error("--tls-cert and --tls-key go together");
    return 1;
  }
  auto cfg = train::LoadTrainConfig(config_path);
  if (!cfg.ok()) {
    log::Error("--config: " + cfg.status().ToString());
    return 1;
  }
  if (min_world_size < 0 || min_world_size > world_size) {
    log::Error("--min-world-size " + std::to_string(min_world_size) + " outside [1, --world-size " +
               std::to_string(world_size) + "] (0: --world-size)");
    return 1;
  }
  // Note [elastic world size]: the global batch stays; every allowed size must split it.
  const int min_size = min_world_size > 0 ? min_world_size : world_size;
  int64_t lcm = 1;  // of every allowed size: the batches an elastic job can use are its multiples
  for (int w = min_size; w <= world_size; ++w) lcm = std::lcm(lcm, static_cast<int64_t>(w));
  for (int w = min_size; w <= world_size; ++w) {
    if (auto b = train::PerRankBatch(cfg->data, w); !b.ok()) {
      std::string why = b.status().message();
      if (min_size < world_size) {
        const int64_t lo = cfg->data.batch_size / lcm * lcm;
        why += " (an elastic job may run on any number of ranks from --min-world-size " +
               std::to_string(min_size) + " to " + std::to_string(world_size) +
               ", so data.batch_size must be divisible by each: a multiple of " +
               std::to_string(lcm) + ", e.g. " + (lo > 0 ? std::to_string(lo) + " or " : "") +
               std::to_string(lo + lcm) + ")";
      }
      log::Error("--config: " + why);
      return 1;
    }
  }
  auto reader = storage::DatasetReader::Open(data);
  if (!reader.ok()) {
    log::Error("--data: " + reader.status().ToString());
    return 1;
  }
  coord::JobSetup setup;
  setup.world_size = world_size;
  setup.min_world_size = min_world_size;
  setup.config = cfg->job;
  setup.data_path = data;
  setup.checkpoint_dir = checkpoint_dir;
  setup.train_indices = (*reader)->info().IndicesOf(storage::Split::kTrain);
  reader->reset();  // the coordinator only needs the split

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  auto server = coord::CoordinatorServer::Start(c, std::move(setup));
  if (!server.ok()) {
    log::Error(server.status().ToString());
    return 1;
  }
  std::cout << "effnet-coordinator listening on port " << (*server)->port() << std::endl;
  if (!port_file.empty()) {
    Status s = WriteFileAtomic(port_file, std::to_string((*server)->port()) + "\n");
    if (!s.ok()) {
      log::Error("--port-file: " + s.ToString());
      return 1;
    }
  }
  int64_t version = 0;
  while (g_signal == 0) {
    version = (*server)->WaitForChange(version, 0.2);
    if (exit_when_done && (*server)->FinishedAndIdle()) {
      log::Info((*server)->StatusLine());
      return 0;
    }
  }
  log::Warn(std::string("stopping on signal ") + std::to_string(g_signal.load()) +
            "; state kept for a restart");
  (*server)->Shutdown();
  return 130;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {
    effnet::log::Error(std::string("effnet-coordinator: ") + e.what());
    return 1;
  }
}
