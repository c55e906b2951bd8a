// JobControl (worker/train/job_control.h) backed by the gRPC coordinator. No gRPC headers here.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "worker/client/client_config.h"
#include "worker/train/job_control.h"

namespace effnet::client {

struct CoordinatorClientConfig {
  std::string address = "127.0.0.1:50051";
  std::string token;        // the job's token, sent as metadata on every call
  std::string tls_ca_file;  // empty: insecure channel
  int rank = 0;
  int world_size = 1;
  int64_t generation = 0;   // launch generation; a stale one is refused
  std::string host;         // this worker's host name (for the live view)
  std::string device;       // "cpu" / "cuda:0"
  ClientTimeouts timeouts;  // the config's `client:` section
  std::string job_config;   // this worker's job: section (YAML), checked at registration
  // Note [exit on job failure]: when the coordinator says the job failed (another rank died) or
  // that this worker's generation is stale, the heartbeat thread ends the process (exit code 75)
  // rather than leave it blocked in a collective with a dead peer; mpirun then tears the launch
  // down and effnet-run relaunches. Off in in-process tests.
  bool exit_on_job_failure = true;
};

// Exit code of a worker ended by Note [exit on job failure].
inline constexpr int kExitJobFailed = 75;

// Registers this worker (blocking until the job starts running or the timeout passes) and starts
// the heartbeat thread. Errors name the refused call and the coordinator's reason.
Result<std::unique_ptr<train::JobControl>> ConnectCoordinator(const CoordinatorClientConfig& c);

}  // namespace effnet::client
