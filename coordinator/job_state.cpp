#include "coordinator/job_state.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <vector>

#include "common/atomic_file.h"
#include "common/text.h"
#include "proto/convert.h"
#include "proto/coordinator.grpc.pb.h"

namespace effnet::coord {

std::string StateFilePath(const std::string& state_dir) { return state_dir + "/state.json"; }

Result<v1::JobStateFile> ParseStateFile(const std::string& text) {
  v1::JobStateFile file;
  if (Status st = wire::FromJsonText(text, &file); !st.ok()) {
    return DataLoss("malformed state file (" + st.message() +
                    "); move it away to start the job anew");
  }
  if (file.format() == kStateFormat) return file;
  if (file.format() == 0) {
    return DataLoss("not a coordinator state file: it has no format version");
  }
  std::string why = "state format " + std::to_string(file.format()) +
                    ", but this effnet-coordinator reads format " + std::to_string(kStateFormat) +
                    " only";
  if (file.format() < kStateFormat) {
    why += " (written by an older build, whose train-split fingerprint this one cannot check)";
  }
  return FailedPrecondition(why +
                            ": finish that job with the build that wrote the state, or move the "
                            "state dir away (or use another --state-dir) to start the job anew");
}

Result<v1::JobStateFile> ReadStateFile(const std::string& state_dir) {
  const std::string path = StateFilePath(state_dir);
  if (!std::filesystem::exists(path)) return NotFound(path + ": no state file");
  EFFNET_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  auto file = ParseStateFile(text);
  if (!file.ok()) return file.status().WithContext(path);
  return file;
}

namespace {

// A stub for `q` and a context carrying its token and deadline.
Result<std::unique_ptr<v1::Coordinator::Stub>> Connect(const StateQuery& q,
                                                       grpc::ClientContext* ctx) {
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!q.tls_ca_file.empty()) {
    EFFNET_ASSIGN_OR_RETURN(std::string ca, ReadFile(q.tls_ca_file));
    grpc::SslCredentialsOptions opts;
    opts.pem_root_certs = ca;
    creds = grpc::SslCredentials(opts);
  }
  ctx->AddMetadata("authorization", "Bearer " + q.token);
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(q.timeout_s * 1000)));
  return v1::Coordinator::NewStub(grpc::CreateChannel(q.address, creds));
}

}  // namespace

Result<v1::JobState> AskCoordinator(const StateQuery& q) {
  grpc::ClientContext ctx;
  EFFNET_ASSIGN_OR_RETURN(auto stub, Connect(q, &ctx));
  v1::JobState state;
  const grpc::Status st = stub->GetJobState(&ctx, v1::GetJobStateRequest(), &state);
  if (!st.ok()) return wire::FromGrpc(st, "GetJobState of coordinator " + q.address);
  return state;
}

Result<v1::JobState> AskResize(const StateQuery& q, int world_size, const std::string& reason) {
  grpc::ClientContext ctx;
  EFFNET_ASSIGN_OR_RETURN(auto stub, Connect(q, &ctx));
  v1::ResizeRequest req;
  req.set_world_size(world_size);
  req.set_reason(reason);
  v1::JobState state;
  const grpc::Status st = stub->Resize(&ctx, req, &state);
  if (!st.ok()) return wire::FromGrpc(st, "Resize of coordinator " + q.address);
  return state;
}

std::string ResultsTable(const v1::JobState& s) {
  if (s.history().empty()) return "no epoch finished";
  const std::vector<std::string> head = {"epoch",       "stage",    "px",      "train loss",
                                         "train acc",   "val loss", "val acc", "img/s",
                                         "max step ms", "gen",      "ranks",   ""};
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : s.history()) {
    double max_step = 0;
    for (const auto& k : r.ranks()) max_step = std::max(max_step, k.step_time_ms());
    std::string mark = r.decision().is_best() ? "best" : "";
    if (r.decision().stop()) mark += mark.empty() ? "stop" : " stop";
    rows.push_back({std::to_string(r.epoch() + 1), std::to_string(r.stage().index() + 1),
                    std::to_string(r.stage().image_size()), Fixed(r.train_loss(), 4),
                    Fixed(r.train_accuracy(), 4), Fixed(r.val_loss(), 4),
                    Fixed(r.val_accuracy(), 4), Fixed(r.images_per_second(), 1), Fixed(max_step, 1),
                    std::to_string(r.generation()),
                    // 0: an epoch recorded before world sizes were kept
                    r.world_size() > 0 ? std::to_string(r.world_size()) : "-", mark});
  }
  std::vector<size_t> width(head.size());
  for (size_t i = 0; i < head.size(); ++i) {
    width[i] = head[i].size();
    for (const auto& row : rows) width[i] = std::max(width[i], row[i].size());
  }
  std::ostringstream out;
  auto line = [&](const std::vector<std::string>& cells) {
    out << "|";
    for (size_t i = 0; i < cells.size(); ++i) {
      out << " " << std::string(width[i] - cells[i].size(), ' ') << cells[i] << " |";
    }
    out << "\n";
  };
  line(head);
  out << "|";
  for (size_t w : width) out << std::string(w + 2, '-') << "|";
  out << "\n";
  for (const auto& row : rows) line(row);
  const auto& job = s.job();
  const auto phase = wire::FromProto(job.phase());
  const std::string best_path = job.best_checkpoint().path();
  out << "best epoch " << s.best_epoch() + 1 << " (checkpoint "
      << (best_path.empty() ? "-" : best_path) << "), last committed epoch "
      << job.last_checkpoint().epoch() + 1 << ", generation " << job.generation() << ", phase "
      << (phase.ok() ? job::PhaseName(phase.value()) : "unknown")
      << " (epochs and stages counted from 1)";
  if (!s.failures().empty()) {
    out << "\nfailures survived:";
    for (const auto& f : s.failures()) out << "\n  - " << f;
  }
  if (!s.world_size_changes().empty()) {
    out << "\nworld size changes:";
    for (const auto& c : s.world_size_changes()) out << "\n  - " << c;
  }
  return out.str();
}

}  // namespace effnet::coord
