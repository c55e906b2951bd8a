#include "coordinator/server.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "common/atomic_file.h"
#include "common/log.h"
#include "coordinator/job_state.h"
#include "proto/convert.h"
#include "proto/coordinator.grpc.pb.h"

namespace effnet::coord {
namespace {

namespace v1 = ::effnet::v1;
using grpc::ServerContext;
using grpc::StatusCode;
using wire::FromProto;
using wire::ToGrpc;
using wire::ToProto;

// Constant-time comparison, so the token cannot be guessed byte by byte from response times.
bool SameSecret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i % std::max<size_t>(1, b.size())];
  return diff == 0;
}

// Note [metadata first]: gRPC's synchronous server reads a request's whole message before the
// handler runs, so a token check in the handler comes after the memory is spent (30 unauthenticated
// 60 MB calls once took 356 MiB). The check therefore runs in the transport's auth filter, on the
// call's metadata alone: core server credentials (plaintext or TLS) carry an auth metadata
// processor that refuses a call without the right "authorization: Bearer <token>" before its
// message is received; the refused stream is reset and its bytes dropped. gRPC C++ 1.51's
// InsecureServerCredentials() cannot take a processor, hence these credentials built on the C
// core API. The handlers check the token again (Authorize), so a processor that did not run
// could not open the door.
class TokenCheckingCredentials final : public grpc::ServerCredentials {
 public:
  // `pem_key` and `pem_cert` both empty: plaintext.
  TokenCheckingCredentials(std::string token, const std::string& pem_key,
                           const std::string& pem_cert)
      : token_(std::move(token)) {
    if (pem_cert.empty()) {
      creds_ = grpc_insecure_server_credentials_create();
    } else {
      grpc_ssl_pem_key_cert_pair pair{pem_key.c_str(), pem_cert.c_str()};
      creds_ = grpc_ssl_server_credentials_create_ex(
          nullptr, &pair, 1, GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE, nullptr);
    }
    // The core credentials outlive this wrapper (the server holds them): the processor owns its
    // copy of the token.
    grpc_auth_metadata_processor p{&TokenCheckingCredentials::Process,
                                   [](void* state) { delete static_cast<std::string*>(state); },
                                   new std::string(token_)};
    grpc_server_credentials_set_auth_metadata_processor(creds_, p);
  }
  ~TokenCheckingCredentials() override { grpc_server_credentials_release(creds_); }

  void SetAuthMetadataProcessor(const std::shared_ptr<grpc::AuthMetadataProcessor>&) override {
    // The token processor is the only one; ServerBuilder never calls this.
  }

  // Calls refused by the processor so far (tests read it).
  static int64_t refused() { return refused_.load(); }

 private:
  int AddPortToServer(const std::string& addr, grpc_server* server) override {
    return grpc_server_add_http2_port(server, addr.c_str(), creds_);
  }

  static void Process(void* state, grpc_auth_context*, const grpc_metadata* md, size_t n,
                      grpc_process_auth_metadata_done_cb done, void* user_data) {
    const std::string& token = *static_cast<const std::string*>(state);
    auto text = [](const grpc_slice& s) {
      return std::string(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(s)),
                         GRPC_SLICE_LENGTH(s));
    };
    std::string method = "call", value;
    bool found = false;
    for (size_t i = 0; i < n; ++i) {
      const std::string key = text(md[i].key);
      if (key == ":path") method = text(md[i].value);
      if (key == "authorization") {
        value = text(md[i].value);
        found = true;
      }
    }
    const std::string prefix = "Bearer ";
    std::string error;
    if (!found) {
      error = method + ": missing token (expected metadata 'authorization: Bearer <token>')";
    } else if (value.compare(0, prefix.size(), prefix) != 0 ||
               !SameSecret(value.substr(prefix.size()), token)) {
      error = method + ": wrong token";
    }
    if (error.empty()) {
      done(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_OK, nullptr);
    } else {
      ++refused_;
      done(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_UNAUTHENTICATED, error.c_str());
    }
  }

  std::string token_;
  grpc_server_credentials* creds_ = nullptr;
  static inline std::atomic<int64_t> refused_{0};
};

}  // namespace

int64_t CallsRefusedOnMetadata() { return TokenCheckingCredentials::refused(); }

struct CoordinatorServer::Impl final : public v1::Coordinator::Service {
  CoordinatorConfig config;
  mutable std::mutex mu;
  mutable std::condition_variable cv;
  Job job;
  int64_t saved_version = 0;
  std::atomic<bool> shutting_down{false};
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  std::thread monitor;

  Impl(CoordinatorConfig c, Job j) : config(std::move(c)), job(std::move(j)) {}

  std::string StatePath() const { return StateFilePath(config.state_dir); }

  // Caller holds mu. Note [state on every change]: the state file is rewritten (atomically)
  // whenever the job's version moved, before the caller answers, so an answer a worker acted on
  // is never lost by a coordinator crash.
  void SaveLocked() {
    if (job.version() == saved_version) return;
    if (!config.state_dir.empty()) {
      Status s = WriteFileAtomic(StatePath(), job.ToJson());
      if (!s.ok()) log::Error("saving the job state: " + s.ToString());
    }
    saved_version = job.version();
    cv.notify_all();
  }

  grpc::Status Authorize(const ServerContext* ctx, const char* call) const {
    const auto& md = ctx->client_metadata();
    auto it = md.find("authorization");
    if (it == md.end()) {
      return {StatusCode::UNAUTHENTICATED,
              std::string(call) +
                  ": missing token (expected metadata 'authorization: Bearer "
                  "<token>')"};
    }
    const std::string value(it->second.data(), it->second.size());
    const std::string prefix = "Bearer ";
    if (value.compare(0, prefix.size(), prefix) != 0 ||
        !SameSecret(value.substr(prefix.size()), config.token)) {
      return {StatusCode::UNAUTHENTICATED, std::string(call) + ": wrong token"};
    }
    return grpc::Status::OK;
  }

  // How long a long-poll may wait: the request's wish, bounded by the configured maximum and by
  // the caller's deadline (minus a margin so the answer arrives in time).
  Clock::time_point PollUntil(const ServerContext* ctx, int wish_ms) const {
    int ms = std::clamp(wish_ms, 0, config.max_long_poll_ms);
    auto until = Clock::now() + std::chrono::milliseconds(ms);
    const auto deadline = ctx->deadline();
    const auto sys_now = std::chrono::system_clock::now();
    if (deadline < sys_now + std::chrono::hours(24 * 365)) {
      auto left = deadline - sys_now - std::chrono::milliseconds(200);
      auto by_deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(left);
      until = std::min(until, by_deadline);
    }
    return until;
  }

  grpc::Status RegisterWorker(ServerContext* ctx, const v1::RegisterWorkerRequest* req,
                              v1::RegisterWorkerResponse* resp) override {
    if (auto st = Authorize(ctx, "RegisterWorker"); !st.ok()) return st;
    const WorkerInfo who = FromProto(req->worker());
    std::unique_lock<std::mutex> lock(mu);
    if (Status mismatch = job.CheckJobConfig(who, req->job_config()); !mismatch.ok()) {
      log::Warn("RegisterWorker refused: " + mismatch.message());
      return ToGrpc(mismatch);
    }
    const Status st = job.Register(who, Clock::now());
    SaveLocked();
    if (!st.ok()) {
      log::Warn("RegisterWorker refused for " + who.Describe() + ": " + st.message());
      return ToGrpc(st);
    }
    const auto until = PollUntil(ctx, req->wait_for_start_ms());
    cv.wait_until(lock, until, [&] {
      return shutting_down || job.phase() != Phase::kWaitingForWorkers ||
             job.generation() != who.generation;
    });
    if (job.generation() != who.generation) return ToGrpc(job.Register(who, Clock::now()));
    job.ToProto(resp->mutable_job());
    resp->set_registered(job.registered());
    return grpc::Status::OK;
  }

  grpc::Status GetEpochPlan(ServerContext* ctx, const v1::GetEpochPlanRequest* req,
                            v1::GetEpochPlanResponse* resp) override {
    if (auto st = Authorize(ctx, "GetEpochPlan"); !st.ok()) return st;
    std::lock_guard<std::mutex> lock(mu);
    auto plan = job.Plan(FromProto(req->worker()), req->epoch());
    if (!plan.ok()) return ToGrpc(plan.status());
    ToProto(*plan, resp);
    return grpc::Status::OK;
  }

  grpc::Status Heartbeat(
      ServerContext* ctx,
      grpc::ServerReaderWriter<v1::HeartbeatResponse, v1::HeartbeatRequest>* stream) override {
    if (auto st = Authorize(ctx, "Heartbeat"); !st.ok()) return st;
    v1::HeartbeatRequest req;
    WorkerInfo who;
    bool have_worker = false;
    bool ended_on_purpose = false;
    while (stream->Read(&req)) {
      who = FromProto(req.worker());
      have_worker = true;
      v1::HeartbeatResponse resp;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (req.leaving()) {
          job.StreamEnded(who, /*leaving=*/true, Clock::now());
          SaveLocked();
          ended_on_purpose = true;
        } else {
          const Status st = job.Beat(who, req.epoch(), req.step(), Clock::now());
          SaveLocked();
          if (!st.ok()) return ToGrpc(st);
          ended_on_purpose = req.closing();
        }
        resp.set_phase(ToProto(job.phase()));
        resp.set_generation(job.generation());
        resp.set_message(job.failure_reason());
      }
      stream->Write(resp);
      if (ended_on_purpose) return grpc::Status::OK;
    }
    // Note [broken stream]: the stream broke without a closing/leaving beat. A killed process's
    // socket is closed by its kernel before its parent (mpirun) learns of the death and tears down
    // the other ranks, so the earliest broken stream is the rank that died first; the monitor
    // names it once the reconnect grace has passed (Job::CheckDeadlines).
    if (have_worker && !shutting_down) {
      std::lock_guard<std::mutex> lock(mu);
      job.StreamEnded(who, /*leaving=*/false, Clock::now());
      SaveLocked();
    }
    return grpc::Status::OK;
  }

  grpc::Status ReportMetrics(ServerContext* ctx, const v1::ReportMetricsRequest* req,
                             v1::ReportMetricsResponse* resp) override {
    if (auto st = Authorize(ctx, "ReportMetrics"); !st.ok()) return st;
    const WorkerInfo who = FromProto(req->worker());
    const job::RankMetrics report = FromProto(req->metrics());
    std::unique_lock<std::mutex> lock(mu);
    bool decided = false;
    const Status st = job.Report(who, report, &decided);
    SaveLocked();
    if (!st.ok()) return ToGrpc(st);
    const auto until = PollUntil(ctx, req->wait_ms());
    cv.wait_until(lock, until, [&] {
      return shutting_down || job.Record(report.epoch) != nullptr ||
             job.phase() == Phase::kFailed || job.generation() != who.generation;
    });
    const EpochRecord* rec = job.Record(report.epoch);
    if (rec == nullptr || rec->generation != who.generation) {
      if (job.phase() == Phase::kFailed || job.generation() != who.generation) {
        return ToGrpc(job.Report(who, report, &decided));  // the refusal with its reason
      }
      resp->set_ready(false);
      for (int r : job.MissingReports()) resp->add_missing_ranks(r);
      return grpc::Status::OK;
    }
    resp->set_ready(true);
    ToProto(rec->decision, resp->mutable_decision());
    ToProto(*rec, resp->mutable_summary());
    return grpc::Status::OK;
  }

  grpc::Status CommitCheckpoint(ServerContext* ctx, const v1::CommitCheckpointRequest* req,
                                v1::CommitCheckpointResponse* resp) override {
    if (auto st = Authorize(ctx, "CommitCheckpoint"); !st.ok()) return st;
    std::lock_guard<std::mutex> lock(mu);
    const Status st =
        job.Commit(FromProto(req->worker()), req->epoch(), req->path(), req->is_best());
    SaveLocked();
    if (!st.ok()) return ToGrpc(st);
    ToProto(job.last_checkpoint(), resp->mutable_last_checkpoint());
    ToProto(job.best_checkpoint(), resp->mutable_best_checkpoint());
    return grpc::Status::OK;
  }

  grpc::Status ReportFailure(ServerContext* ctx, const v1::ReportFailureRequest* req,
                             v1::ReportFailureResponse*) override {
    if (auto st = Authorize(ctx, "ReportFailure"); !st.ok()) return st;
    const WorkerInfo who = FromProto(req->worker());
    std::lock_guard<std::mutex> lock(mu);
    const Status st = job.WorkerFailed(who, req->cause());
    SaveLocked();
    if (!st.ok()) log::Warn("ReportFailure refused for " + who.Describe() + ": " + st.message());
    return ToGrpc(st);
  }

  grpc::Status FallBackCheckpoint(ServerContext* ctx, const v1::FallBackCheckpointRequest* req,
                                  v1::JobInfo* resp) override {
    if (auto st = Authorize(ctx, "FallBackCheckpoint"); !st.ok()) return st;
    const WorkerInfo who = FromProto(req->worker());
    std::lock_guard<std::mutex> lock(mu);
    const Status st =
        job.FallBack(who, req->unreadable_path(), FromProto(req->fallback()), req->reason());
    SaveLocked();
    if (!st.ok()) {
      log::Warn("FallBackCheckpoint refused for " + who.Describe() + ": " + st.message());
      return ToGrpc(st);
    }
    job.ToProto(resp);
    return grpc::Status::OK;
  }

  grpc::Status GetJobState(ServerContext* ctx, const v1::GetJobStateRequest*,
                           v1::JobState* resp) override {
    if (auto st = Authorize(ctx, "GetJobState"); !st.ok()) return st;
    std::lock_guard<std::mutex> lock(mu);
    job.ToProto(Clock::now(), resp);
    return grpc::Status::OK;
  }

  grpc::Status Resize(ServerContext* ctx, const v1::ResizeRequest* req,
                      v1::JobState* resp) override {
    if (auto st = Authorize(ctx, "Resize"); !st.ok()) return st;
    std::lock_guard<std::mutex> lock(mu);
    const Status st = job.Resize(req->world_size(), req->reason());
    SaveLocked();  // wakes the old launch's long-polls: they are stale now
    if (!st.ok()) {
      log::Warn("Resize refused: " + st.message());
      return ToGrpc(st);
    }
    job.ToProto(Clock::now(), resp);
    return grpc::Status::OK;
  }

  grpc::Status WatchJobState(ServerContext* ctx, const v1::WatchJobStateRequest* req,
                             grpc::ServerWriter<v1::JobState>* writer) override {
    if (auto st = Authorize(ctx, "WatchJobState"); !st.ok()) return st;
    int64_t after = req->after_version();
    while (!ctx->IsCancelled()) {
      v1::JobState state;
      {
        std::unique_lock<std::mutex> lock(mu);
        // Short waits so a cancelled caller or a shutdown ends the stream promptly.
        cv.wait_for(lock, std::chrono::milliseconds(200),
                    [&] { return shutting_down || job.version() > after; });
        if (shutting_down) return {StatusCode::UNAVAILABLE, "coordinator shutting down"};
        if (job.version() <= after) continue;
        job.ToProto(Clock::now(), &state);
        after = job.version();
      }
      if (!writer->Write(state)) break;
      if (state.job().phase() == v1::PHASE_FINISHED) break;
    }
    return grpc::Status::OK;
  }

  void MonitorLoop() {
    const auto timeout = std::chrono::duration<double>(config.heartbeat_timeout_s);
    const auto grace = std::chrono::duration<double>(config.reconnect_grace_s);
    const auto every = std::chrono::duration<double>(config.monitor_interval_s);
    std::unique_lock<std::mutex> lock(mu);
    while (!shutting_down) {
      cv.wait_for(lock, every, [&] { return shutting_down.load(); });
      if (shutting_down) break;
      if (job.CheckDeadlines(Clock::now(), timeout, grace)) SaveLocked();
    }
  }
};

Result<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(const CoordinatorConfig& c,
                                                                    JobSetup setup) {
  if (c.token.empty()) return InvalidArgument("coordinator: a job token is required");
  if (setup.world_size < 1) {
    return InvalidArgument("coordinator: world size must be >= 1, got " +
                           std::to_string(setup.world_size));
  }
  if (setup.min_world_size < 0 || setup.min_world_size > setup.world_size) {
    return InvalidArgument("coordinator: minimum world size " +
                           std::to_string(setup.min_world_size) + " outside [1, " +
                           std::to_string(setup.world_size) + "] (0: the world size)");
  }
  if (setup.train_indices.empty()) {
    return InvalidArgument("coordinator: the train split of " + setup.data_path + " is empty");
  }
  if (c.heartbeat_timeout_s <= 0) return InvalidArgument("coordinator: heartbeat timeout <= 0");
  if (c.reconnect_grace_s < 0) return InvalidArgument("coordinator: reconnect grace < 0");
  EFFNET_RETURN_IF_ERROR(job::Validate(setup.config.progressive));

  // The job: restored from the state file, or new.
  std::optional<Job> job;
  if (!c.state_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(c.state_dir, ec);
    if (ec) return Internal("cannot create state dir " + c.state_dir + ": " + ec.message());
    const std::string path = StateFilePath(c.state_dir);
    if (std::filesystem::exists(path)) {
      EFFNET_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
      auto restored = Job::Restore(text, setup, c.generation, Clock::now());
      if (!restored.ok()) return restored.status().WithContext("restoring " + path);
      job.emplace(std::move(restored).value());
      log::Info("resumed job " + job->job_id() + " from " + path + ": generation " +
                std::to_string(job->generation()) + ", " + PhaseName(job->phase()) +
                ", next epoch " + std::to_string(job->next_epoch() + 1) + ", last checkpoint " +
                (job->last_checkpoint().epoch < 0
                     ? std::string("none")
                     : "of epoch " + std::to_string(job->last_checkpoint().epoch + 1)));
    }
  }
  if (!job) job.emplace(setup, c.generation);

  if (c.max_request_bytes < 1024) {
    return InvalidArgument("coordinator: max_request_bytes " + std::to_string(c.max_request_bytes) +
                           " is below 1 KiB");
  }
  auto impl = std::make_unique<Impl>(c, std::move(*job));
  std::string cert, key;
  if (!c.tls_cert_file.empty() || !c.tls_key_file.empty()) {
    EFFNET_ASSIGN_OR_RETURN(cert, ReadFile(c.tls_cert_file));
    EFFNET_ASSIGN_OR_RETURN(key, ReadFile(c.tls_key_file));
  }
  // Note [metadata first].
  auto creds = std::make_shared<TokenCheckingCredentials>(c.token, key, cert);
  const std::string address = c.host + ":" + std::to_string(c.port);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, creds, &impl->port);
  builder.RegisterService(impl.get());
  builder.SetMaxSendMessageSize(-1);
  builder.SetMaxReceiveMessageSize(c.max_request_bytes);
  impl->server = builder.BuildAndStart();
  if (!impl->server || impl->port == 0) {
    return Unavailable("coordinator: cannot listen on " + address +
                       " (port in use or address not local?)");
  }
  {
    std::lock_guard<std::mutex> lock(impl->mu);
    impl->saved_version = 0;
    impl->SaveLocked();
  }
  impl->monitor = std::thread([p = impl.get()] { p->MonitorLoop(); });
  const bool loopback =
      c.host == "127.0.0.1" || c.host == "localhost" || c.host == "::1" || c.host == "[::1]";
  if (!loopback && c.tls_cert_file.empty()) {
    log::Warn("coordinator listening on " + c.host + " in plaintext: the job token crosses the " +
              "network readable; use --tls-cert/--tls-key beyond one host (docs/reliability.md)");
  }
  log::Info("coordinator listening on " + c.host + ":" + std::to_string(impl->port) + " (" +
            (c.tls_cert_file.empty() ? "plaintext" : "TLS") + "), job " + impl->job.job_id() +
            ", world size " + std::to_string(impl->job.world_size()) + ", " +
            std::to_string(impl->job.setup().train_indices.size()) + " train samples, " +
            std::to_string(impl->job.setup().config.epochs) + " epochs");
  return std::unique_ptr<CoordinatorServer>(new CoordinatorServer(std::move(impl)));
}

CoordinatorServer::CoordinatorServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

int CoordinatorServer::port() const { return impl_->port; }

void CoordinatorServer::Shutdown() {
  if (impl_->shutting_down.exchange(true)) return;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->cv.notify_all();
  }
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  impl_->server->Wait();
  if (impl_->monitor.joinable()) impl_->monitor.join();
}

Phase CoordinatorServer::phase() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->job.phase();
}

std::string CoordinatorServer::StatusLine() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->job.StatusLine();
}

int64_t CoordinatorServer::WaitForChange(int64_t version, double timeout_s) const {
  std::unique_lock<std::mutex> lock(impl_->mu);
  impl_->cv.wait_for(lock, std::chrono::duration<double>(timeout_s),
                     [&] { return impl_->shutting_down || impl_->job.version() > version; });
  return impl_->job.version();
}

bool CoordinatorServer::FinishedAndIdle() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->job.phase() != Phase::kFinished) return false;
  for (const auto& [rank, w] : impl_->job.workers()) {
    if (w.state == WorkerState::kRegistered || w.state == WorkerState::kAlive) return false;
  }
  return true;
}

void CoordinatorServer::Inspect(const std::function<void(const Job&)>& fn) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  fn(impl_->job);
}

}  // namespace effnet::coord
