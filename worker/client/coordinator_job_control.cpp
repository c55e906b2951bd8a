#include "worker/client/coordinator_job_control.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "common/atomic_file.h"
#include "common/log.h"
#include "common/text.h"
#include "common/utf8.h"
#include "proto/convert.h"
#include "proto/coordinator.grpc.pb.h"

namespace effnet::client {
namespace {

namespace v1 = ::effnet::v1;
using Clock = std::chrono::steady_clock;
using Seconds = std::chrono::duration<double>;
using wire::GrpcCodeName;

// Transient: the coordinator is (re)starting or the network hiccuped; the call is retried. A
// coordinator that shuts down cancels the calls in flight (CANCELLED); this client never cancels
// a unary call itself.
bool Transient(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE ||
         s.error_code() == grpc::StatusCode::CANCELLED ||
         s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

// The job is over for this worker: another rank died, or a newer launch took over.
bool JobGone(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::ABORTED ||
         s.error_code() == grpc::StatusCode::PERMISSION_DENIED;
}

[[noreturn]] void ExitJobFailed(const std::string& why) {
  log::Error("exiting (code " + std::to_string(kExitJobFailed) + "): " + why);
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(kExitJobFailed);
}

class CoordinatorJobControl final : public train::JobControl {
 public:
  using ChannelFactory = std::function<std::shared_ptr<grpc::Channel>()>;
  CoordinatorJobControl(CoordinatorClientConfig c, ChannelFactory make_channel)
      : config_(std::move(c)),
        make_channel_(std::move(make_channel)),
        stub_(v1::Coordinator::NewStub(make_channel_())),
        last_reconnect_(Clock::now()) {
    job::WorkerInfo me;
    me.rank = config_.rank;
    me.world_size = config_.world_size;
    me.generation = config_.generation;
    me.worker_id = RandomHexId();
    me.host = config_.host.empty() ? HostName() : config_.host;
    me.device = config_.device;
    me.pid = ::getpid();
    wire::ToProto(me, &identity_);
  }

  ~CoordinatorJobControl() override { StopHeartbeat(); }

  Status Register() {
    const auto give_up = Clock::now() + Seconds(config_.timeouts.register_timeout_s);
    double backoff = 0.2;
    grpc::Status last;
    while (true) {
      v1::RegisterWorkerRequest req;
      *req.mutable_worker() = identity_;
      req.set_wait_for_start_ms(LongPollMs());
      req.set_job_config(config_.job_config);
      v1::RegisterWorkerResponse resp;
      grpc::ClientContext ctx;
      Prepare(&ctx, config_.timeouts.call_timeout_s);
      last = Stub()->RegisterWorker(&ctx, req, &resp);
      if (last.ok()) {
        job_ = resp.job();
        if (!heartbeat_.joinable()) {
          heartbeat_ = std::thread([this] { HeartbeatLoop(); });
        }
        if (job_.phase() != v1::PHASE_WAITING_FOR_WORKERS) {
          log::Info("registered with coordinator " + config_.address + ": job " + job_.job_id() +
                    ", generation " + std::to_string(job_.generation()) + ", next epoch " +
                    std::to_string(job_.next_epoch() + 1) + ", resume from " +
                    (job_.last_checkpoint().epoch() < 0 ? std::string("scratch")
                                                        : job_.last_checkpoint().path()));
          return Status::Ok();
        }
        if (Clock::now() > give_up) {
          return DeadlineExceeded("RegisterWorker: the job did not start within " +
                                  std::to_string(config_.timeouts.register_timeout_s) + " s (" +
                                  std::to_string(resp.registered()) + "/" +
                                  std::to_string(config_.world_size) + " ranks registered)");
        }
        continue;  // long poll again
      }
      if (!Transient(last)) return Refused("RegisterWorker", last);
      if (Clock::now() + Seconds(backoff) > give_up) {
        return DeadlineExceeded(
            "RegisterWorker: coordinator " + config_.address + " unreachable for " +
            std::to_string(config_.timeouts.register_timeout_s) + " s (last error " +
            GrpcCodeName(last.error_code()) + ": " + last.error_message() + ")");
      }
      std::this_thread::sleep_for(Seconds(backoff));
      ReconnectNow();
      backoff = std::min(backoff * 2, 5.0);
    }
  }

  Result<job::EpochPlan> PlanEpoch(int epoch) override {
    v1::GetEpochPlanRequest req;
    *req.mutable_worker() = identity_;
    req.set_epoch(epoch);
    v1::GetEpochPlanResponse resp;
    const std::string call = "GetEpochPlan(epoch " + std::to_string(epoch + 1) + ")";
    EFFNET_RETURN_IF_ERROR(CallWithRetry(call, [&](grpc::ClientContext* ctx) {
      resp.Clear();
      return Stub()->GetEpochPlan(ctx, req, &resp);
    }));
    job::EpochPlan plan = wire::FromProto(resp);
    if (plan.stop) log::Info("coordinator: stop (" + resp.stop_reason() + ")");
    {
      std::lock_guard<std::mutex> lock(mu_);
      shard_sizes_[epoch] = static_cast<int64_t>(plan.sample_indices.size());
      epoch_ = epoch;
    }
    return plan;
  }

  Result<job::EpochDecision> EndEpoch(const job::RankMetrics& metrics) override {
    job::RankMetrics m = metrics;
    m.rank = config_.rank;
    m.host = identity_.host();
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = shard_sizes_.find(m.epoch);
      m.train_samples = it == shard_sizes_.end() ? 0 : it->second;
    }
    v1::ReportMetricsRequest req;
    *req.mutable_worker() = identity_;
    req.set_wait_ms(LongPollMs());
    wire::ToProto(m, req.mutable_metrics());
    const std::string call = "ReportMetrics(epoch " + std::to_string(m.epoch + 1) + ")";
    const auto give_up = Clock::now() + Seconds(config_.timeouts.decision_timeout_s);
    v1::ReportMetricsResponse resp;
    while (true) {
      EFFNET_RETURN_IF_ERROR(CallWithRetry(call, [&](grpc::ClientContext* ctx) {
        resp.Clear();
        return Stub()->ReportMetrics(ctx, req, &resp);
      }));
      if (resp.ready()) break;
      if (Clock::now() > give_up) {
        std::string missing;
        for (int k : resp.missing_ranks()) missing += " " + std::to_string(k);
        return DeadlineExceeded(call + ": no decision within " +
                                std::to_string(config_.timeouts.decision_timeout_s) +
                                " s; ranks not reported:" + missing);
      }
    }
    return wire::FromProto(resp.decision());
  }

  Status CommitCheckpoint(int epoch, const std::string& path, bool is_best) override {
    v1::CommitCheckpointRequest req;
    *req.mutable_worker() = identity_;
    req.set_epoch(epoch);
    req.set_path(path);
    req.set_is_best(is_best);
    v1::CommitCheckpointResponse resp;
    return CallWithRetry(
        "CommitCheckpoint(epoch " + std::to_string(epoch + 1) + ", " + path + ")",
        [&](grpc::ClientContext* ctx) { return Stub()->CommitCheckpoint(ctx, req, &resp); });
  }

  void EndWithError(const std::string& cause) override {
    // The report fails the job; the heartbeat thread then learns that the job failed and must
    // not end the process with kExitJobFailed before the caller reports the error itself.
    ending_with_error_ = true;
    if (job_gone_) {  // the error is the coordinator's own refusal: it knows why already
      StopHeartbeat();
      return;
    }
    v1::ReportFailureRequest req;
    *req.mutable_worker() = identity_;
    req.set_cause(TruncateUtf8(ToUtf8(cause), job::kMaxFailureCauseBytes));
    v1::ReportFailureResponse resp;
    const Status st = CallWithRetry("ReportFailure", [&](grpc::ClientContext* ctx) {
      return Stub()->ReportFailure(ctx, req, &resp);
    });
    if (!st.ok()) log::Warn("the coordinator did not learn this rank's error: " + st.ToString());
    StopHeartbeat();  // the `leaving` beat comes after the cause
  }

  Status ResumedFromOlder(const std::string& unreadable, int epoch, const std::string& path,
                          const std::string& why) override {
    v1::FallBackCheckpointRequest req;
    *req.mutable_worker() = identity_;
    req.set_unreadable_path(unreadable);
    req.set_reason(TruncateUtf8(ToUtf8(why), job::kMaxFailureCauseBytes));
    wire::ToProto(job::CheckpointRef{epoch, path}, req.mutable_fallback());
    v1::JobInfo resp;
    EFFNET_RETURN_IF_ERROR(
        CallWithRetry("FallBackCheckpoint(epoch " + std::to_string(epoch + 1) + ", " + path + ")",
                      [&](grpc::ClientContext* ctx) {
                        resp.Clear();
                        return Stub()->FallBackCheckpoint(ctx, req, &resp);
                      }));
    job_ = resp;
    return Status::Ok();
  }

  Result<std::string> ResumeCheckpoint() override {
    return job_.last_checkpoint().epoch() < 0 ? std::string() : job_.last_checkpoint().path();
  }

 private:
  std::shared_ptr<v1::Coordinator::Stub> Stub() {
    std::lock_guard<std::mutex> lock(stub_mu_);
    return stub_;
  }

  // Note [reconnect now]: after a refused connection (coordinator restarting) gRPC 1.51 keeps the
  // channel in a sticky TRANSIENT_FAILURE and answers calls with the old error for seconds after
  // the coordinator is back. Each retry after a transient failure therefore gets a fresh channel
  // (with its own subchannels, GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL), which connects at once.
  void ReconnectNow() {
    std::lock_guard<std::mutex> lock(stub_mu_);
    if (Clock::now() - last_reconnect_ < Seconds(0.2)) return;
    stub_ = v1::Coordinator::NewStub(make_channel_());
    last_reconnect_ = Clock::now();
  }

  int LongPollMs() const {
    return static_cast<int>(std::max(0.0, std::min(10.0, config_.timeouts.call_timeout_s - 2.0)) *
                            1000);
  }

  void Prepare(grpc::ClientContext* ctx, double timeout_s) const {
    ctx->AddMetadata("authorization", "Bearer " + config_.token);
    ctx->set_deadline(
        std::chrono::system_clock::now() +
        std::chrono::duration_cast<std::chrono::system_clock::duration>(Seconds(timeout_s)));
  }

  Status Refused(const std::string& call, const grpc::Status& s) const {
    return wire::FromGrpc(s, call + " refused by coordinator " + config_.address);
  }

  // Runs `fn` with a fresh context per attempt; retries transient failures (coordinator
  // restarting) with backoff for up to unavailable_timeout_s. Every attempt has a deadline.
  template <typename Fn>
  Status CallWithRetry(const std::string& call, Fn fn) {
    const auto give_up = Clock::now() + Seconds(config_.timeouts.unavailable_timeout_s);
    double backoff = 0.1;
    while (true) {
      grpc::ClientContext ctx;
      Prepare(&ctx, config_.timeouts.call_timeout_s);
      grpc::Status s = fn(&ctx);
      if (s.ok()) return Status::Ok();
      if (JobGone(s)) job_gone_ = true;
      if (!Transient(s)) return Refused(call, s);
      if (Clock::now() + Seconds(backoff) > give_up) {
        return Status(StatusCode::kUnavailable,
                      call + ": coordinator " + config_.address + " unreachable for " +
                          std::to_string(config_.timeouts.unavailable_timeout_s) +
                          " s (last error " + GrpcCodeName(s.error_code()) + ": " +
                          s.error_message() + ")");
      }
      log::Warn(call + ": " + GrpcCodeName(s.error_code()) + " (" + s.error_message() +
                "), retrying in " + std::to_string(backoff) + " s");
      std::this_thread::sleep_for(Seconds(backoff));
      ReconnectNow();
      backoff = std::min(backoff * 2, 2.0);
    }
  }

  // Note [heartbeat stream]: one long-lived Heartbeat stream, a beat every interval. The stream is
  // re-opened (after a `closing` beat) well before its deadline, and a last `leaving` beat tells
  // the coordinator that this worker ended on purpose; a stream that simply breaks means the
  // process died, and the coordinator names this rank at once.
  void HeartbeatLoop() {
    const double rotate_after_s = std::max(60.0, 20 * config_.timeouts.heartbeat_interval_s);
    double backoff = 0.1;
    while (!stopping_) {
      grpc::ClientContext ctx;
      Prepare(&ctx, rotate_after_s + config_.timeouts.call_timeout_s);
      {
        std::lock_guard<std::mutex> lock(mu_);
        active_ctx_ = &ctx;
      }
      const auto stub = Stub();  // keeps the channel alive for the stream's life
      auto stream = stub->Heartbeat(&ctx);
      const auto opened = Clock::now();
      bool ok = true;
      bool left = false;
      while (ok) {
        v1::HeartbeatRequest req;
        *req.mutable_worker() = identity_;
        {
          std::lock_guard<std::mutex> lock(mu_);
          req.set_epoch(epoch_);
        }
        const bool rotate = Clock::now() - opened > Seconds(rotate_after_s);
        left = stopping_;
        req.set_leaving(left);
        req.set_closing(rotate);
        v1::HeartbeatResponse resp;
        ok = stream->Write(req) && stream->Read(&resp);
        if (ok) {
          backoff = 0.1;
          if (resp.phase() == v1::PHASE_FAILED) OnJobGone("the job failed: " + resp.message());
        }
        if (!ok || rotate || left) break;
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, Seconds(config_.timeouts.heartbeat_interval_s),
                     [&] { return stopping_.load(); });
      }
      stream->WritesDone();
      const grpc::Status st = stream->Finish();
      {
        std::lock_guard<std::mutex> lock(mu_);
        active_ctx_ = nullptr;
      }
      if (left) break;
      if (!st.ok() && !stopping_) {
        if (JobGone(st) || st.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
          OnJobGone(Refused("Heartbeat", st).message());
          break;
        }
        log::Warn("Heartbeat stream to " + config_.address + " broke (" +
                  GrpcCodeName(st.error_code()) + ": " + st.error_message() + "), reconnecting");
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, Seconds(backoff), [&] { return stopping_.load(); });
        lock.unlock();
        ReconnectNow();
        backoff = std::min(backoff * 2, 2.0);
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    heartbeat_done_ = true;
    cv_.notify_all();
  }

  void OnJobGone(const std::string& why) {
    job_gone_ = true;
    // While this object is being destroyed the process is ending on its own (normally, or with an
    // error its caller is about to report): exiting here would hide that error.
    if (config_.exit_on_job_failure && !stopping_ && !ending_with_error_) {
      ExitJobFailed("rank " + std::to_string(config_.rank) + ": " + why);
    }
    // A rank ending on its own error has reported it; that the job failed is its consequence.
    if (!ending_with_error_ && !job_gone_logged_.exchange(true)) log::Error(why);
  }

  void StopHeartbeat() {
    if (!heartbeat_.joinable()) return;
    std::unique_lock<std::mutex> lock(mu_);
    stopping_ = true;
    cv_.notify_all();
    // The leaving beat gets one call timeout; then the stream is cancelled.
    if (!cv_.wait_for(lock, Seconds(config_.timeouts.call_timeout_s),
                      [&] { return heartbeat_done_; })) {
      if (active_ctx_ != nullptr) active_ctx_->TryCancel();
    }
    lock.unlock();
    heartbeat_.join();
  }

  CoordinatorClientConfig config_;
  ChannelFactory make_channel_;
  std::mutex stub_mu_;
  std::shared_ptr<v1::Coordinator::Stub> stub_;  // replaced by ReconnectNow
  Clock::time_point last_reconnect_;
  v1::WorkerIdentity identity_;
  v1::JobInfo job_;
  std::thread heartbeat_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> ending_with_error_{false};
  std::atomic<bool> job_gone_{false};  // the coordinator said the job failed or moved on
  std::atomic<bool> job_gone_logged_{false};
  bool heartbeat_done_ = false;
  grpc::ClientContext* active_ctx_ = nullptr;
  std::map<int, int64_t> shard_sizes_;
  int epoch_ = -1;
};

}  // namespace

Result<std::unique_ptr<train::JobControl>> ConnectCoordinator(const CoordinatorClientConfig& c) {
  if (c.token.empty()) return InvalidArgument("coordinator client: empty token");
  if (c.rank < 0 || c.rank >= c.world_size) {
    return InvalidArgument("coordinator client: rank " + std::to_string(c.rank) +
                           " out of range [0, " + std::to_string(c.world_size) + ")");
  }
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (!c.tls_ca_file.empty()) {
    EFFNET_ASSIGN_OR_RETURN(std::string ca, ReadFile(c.tls_ca_file));
    grpc::SslCredentialsOptions opts;
    opts.pem_root_certs = ca;
    creds = grpc::SslCredentials(opts);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // Note [reconnect now]
  // A restarted coordinator is found again within ~2 s (gRPC's default backoff grows to 120 s).
  // GRPC_ARG_MIN_RECONNECT_BACKOFF_MS stays at its default: it is also the deadline of one
  // connection attempt, and a short one fails every handshake on a loaded machine.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  auto make_channel = [address = c.address, creds, args] {
    return grpc::CreateCustomChannel(address, creds, args);
  };
  auto control = std::make_unique<CoordinatorJobControl>(c, make_channel);
  EFFNET_RETURN_IF_ERROR(control->Register());
  return std::unique_ptr<train::JobControl>(std::move(control));
}

}  // namespace effnet::client
