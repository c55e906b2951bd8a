// The coordinator's gRPC server: the Coordinator service of proto/coordinator.proto over a Job
// (coordinator/job.h), token auth, optional TLS, a heartbeat monitor thread and the state file.
// No gRPC or protobuf types in this header.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"
#include "coordinator/job.h"

namespace effnet::coord {

struct CoordinatorConfig {
  std::string host = "0.0.0.0";  // listen address
  int port = 0;                  // 0: the OS picks a free port (see CoordinatorServer::port)
  std::string token;             // required: every call must carry "authorization: Bearer <token>"
  std::string tls_cert_file;     // PEM; both empty: plaintext
  std::string tls_key_file;
  std::string state_dir;   // "<state_dir>/state.json" is rewritten atomically on every
                           // change and read back at start; empty: no state file
  int64_t generation = 0;  // the launch generation to start with (a stored higher one wins)
  double heartbeat_timeout_s = 10.0;  // a registered worker silent this long is marked dead
  double reconnect_grace_s = 1.0;     // a worker whose heartbeat stream broke is marked dead
                                      // unless a new stream arrives within this
  double monitor_interval_s = 0.1;    // how often deadlines are checked
  int max_long_poll_ms = 10000;       // upper bound of a RegisterWorker/ReportMetrics wait
};

class CoordinatorServer {
 public:
  // Restores the job from <state_dir>/state.json when it exists, else starts a new one; then
  // listens. Errors name the address or the state file.
  static Result<std::unique_ptr<CoordinatorServer>> Start(const CoordinatorConfig& config,
                                                          JobSetup setup);
  ~CoordinatorServer();  // Shutdown()
  CoordinatorServer(const CoordinatorServer&) = delete;
  CoordinatorServer& operator=(const CoordinatorServer&) = delete;

  int port() const;
  // Stops serving (in-flight calls are cancelled) without touching the state file: a later
  // Start on the same state_dir resumes the job as it was.
  void Shutdown();

  Phase phase() const;
  std::string StatusLine() const;
  // Waits until the job state's version exceeds `version` or `timeout_s` passes; returns the
  // current version.
  int64_t WaitForChange(int64_t version, double timeout_s) const;
  // True when the job finished and no worker of the launch is still registered/alive.
  bool FinishedAndIdle() const;
  // Runs `fn` on the job under the server's lock (inspection in tests and the app).
  void Inspect(const std::function<void(const Job&)>& fn) const;

  struct Impl;

 private:
  explicit CoordinatorServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace effnet::coord
