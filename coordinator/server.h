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

// Note [coordinator exposure]: the coordinator answers anyone who can reach its port, so it listens
// on loopback unless told otherwise (effnet-run, Slurm and Kubernetes pass --host explicitly).
// Every call must carry the job token; the token is checked on the call's metadata, before its
// message is read (Note [metadata first] in server.cpp), and no request may exceed
// max_request_bytes. Plaintext shows the token to anyone on the path: use TLS (tls_cert_file)
// for anything that leaves the host (docs/reliability.md).
struct CoordinatorConfig {
  std::string host = "127.0.0.1";  // listen address; 0.0.0.0 = every interface
  int port = 0;                    // 0: the OS picks a free port (see CoordinatorServer::port)
  std::string token;          // required: every call must carry "authorization: Bearer <token>"
  std::string tls_cert_file;  // PEM; both empty: plaintext
  std::string tls_key_file;
  std::string state_dir;   // "<state_dir>/state.json" is rewritten atomically on every
                           // change and read back at start; empty: no state file
  int64_t generation = 0;  // the launch generation to start with (a stored higher one wins)
  double heartbeat_timeout_s = 10.0;  // a registered worker silent this long is marked dead
  double reconnect_grace_s = 1.0;     // a worker whose heartbeat stream broke is marked dead
                                      // unless a new stream arrives within this
  double monitor_interval_s = 0.1;    // how often deadlines are checked
  int max_long_poll_ms = 10000;       // upper bound of a RegisterWorker/ReportMetrics wait
  // Largest request message accepted (bytes). The largest real one is a CommitCheckpointRequest
  // with a PATH_MAX (4096-byte) path, under 4.5 KiB (tests/coordinator measures it); this leaves
  // a wide margin while a 60 MB message is refused at its 5-byte length prefix.
  int max_request_bytes = 64 << 10;
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

// Calls refused by the token check on their metadata (Note [metadata first]), in this process.
int64_t CallsRefusedOnMetadata();

}  // namespace effnet::coord
