#include "proto/convert.h"

#include <google/protobuf/util/json_util.h>

#include <chrono>

namespace effnet::wire {

void ToProto(const job::Stage& s, v1::Stage* out) {
  out->set_index(s.index);
  out->set_image_size(s.image_size);
  out->set_randaug_magnitude(s.randaug_magnitude);
  out->set_mixup_alpha(s.mixup_alpha);
  out->set_cutmix_alpha(s.cutmix_alpha);
  out->set_dropout(s.dropout);
}

job::Stage FromProto(const v1::Stage& s) {
  job::Stage out;
  out.index = s.index();
  out.image_size = s.image_size();
  out.randaug_magnitude = s.randaug_magnitude();
  out.mixup_alpha = s.mixup_alpha();
  out.cutmix_alpha = s.cutmix_alpha();
  out.dropout = s.dropout();
  return out;
}

void ToProto(const job::EpochDecision& d, v1::EpochDecision* out) {
  out->set_is_best(d.is_best);
  out->set_stop(d.stop);
  out->set_best_epoch(d.best_epoch);
  out->set_reason(d.reason);
}

job::EpochDecision FromProto(const v1::EpochDecision& d) {
  job::EpochDecision out;
  out.is_best = d.is_best();
  out.stop = d.stop();
  out.best_epoch = d.best_epoch();
  out.reason = d.reason();
  return out;
}

void ToProto(const job::RankMetrics& m, v1::RankMetrics* out) {
  out->set_rank(m.rank);
  out->set_epoch(m.epoch);
  out->set_train_samples(m.train_samples);
  out->set_train_loss(m.train_loss);
  out->set_train_accuracy(m.train_accuracy);
  out->set_val_loss(m.val_loss);
  out->set_val_accuracy(m.val_accuracy);
  out->set_images_per_second(m.images_per_second);
  out->set_step_time_ms(m.step_time_ms);
  out->set_image_size(m.image_size);
  out->set_host(m.host);
}

job::RankMetrics FromProto(const v1::RankMetrics& m) {
  job::RankMetrics out;
  out.rank = m.rank();
  out.epoch = m.epoch();
  out.train_samples = m.train_samples();
  out.train_loss = m.train_loss();
  out.train_accuracy = m.train_accuracy();
  out.val_loss = m.val_loss();
  out.val_accuracy = m.val_accuracy();
  out.images_per_second = m.images_per_second();
  out.step_time_ms = m.step_time_ms();
  out.image_size = m.image_size();
  out.host = m.host();
  return out;
}

void ToProto(const job::EpochPlan& p, v1::GetEpochPlanResponse* out) {
  out->set_epoch(p.epoch);
  out->set_stop(p.stop);
  out->set_stop_reason(p.stop_reason);
  ToProto(p.stage, out->mutable_stage());
  out->mutable_sample_indices()->Assign(p.sample_indices.begin(), p.sample_indices.end());
  out->set_num_train_samples(p.num_train_samples);
}

job::EpochPlan FromProto(const v1::GetEpochPlanResponse& p) {
  job::EpochPlan out;
  out.epoch = p.epoch();
  out.stop = p.stop();
  out.stop_reason = p.stop_reason();
  out.stage = FromProto(p.stage());
  out.sample_indices.assign(p.sample_indices().begin(), p.sample_indices().end());
  out.num_train_samples = p.num_train_samples();
  return out;
}

void ToProto(const job::EarlyStopping::State& s, v1::EarlyStoppingState* out) {
  out->set_best_val_loss(s.best_val_loss);
  out->set_best_loss_epoch(s.best_loss_epoch);
  out->set_best_score(s.best_score);
  out->set_best_epoch(s.best_epoch);
  out->set_epochs_without_improvement(s.epochs_without_improvement);
}

job::EarlyStopping::State FromProto(const v1::EarlyStoppingState& s) {
  job::EarlyStopping::State out;
  out.best_val_loss = s.best_val_loss();
  out.best_loss_epoch = s.best_loss_epoch();
  out.best_score = s.best_score();
  out.best_epoch = s.best_epoch();
  out.epochs_without_improvement = s.epochs_without_improvement();
  return out;
}

void ToProto(const job::CheckpointRef& c, v1::CheckpointRef* out) {
  out->set_epoch(c.epoch);
  out->set_path(c.path);
}

job::CheckpointRef FromProto(const v1::CheckpointRef& c) { return {c.epoch(), c.path()}; }

void ToProto(const job::EpochRecord& r, v1::EpochSummary* out) {
  out->set_epoch(r.epoch);
  ToProto(r.stage, out->mutable_stage());
  out->set_train_loss(r.train_loss);
  out->set_train_accuracy(r.train_accuracy);
  out->set_val_loss(r.val_loss);
  out->set_val_accuracy(r.val_accuracy);
  out->set_images_per_second(r.images_per_second);
  for (const auto& k : r.ranks) ToProto(k, out->add_ranks());
  ToProto(r.decision, out->mutable_decision());
  out->set_status_line(r.status_line);
  out->set_generation(r.generation);
  ToProto(r.early_stopping_after, out->mutable_early_stopping_after());
  out->set_world_size(r.world_size);
}

job::EpochRecord FromProto(const v1::EpochSummary& s) {
  job::EpochRecord out;
  out.epoch = s.epoch();
  out.stage = FromProto(s.stage());
  out.train_loss = s.train_loss();
  out.train_accuracy = s.train_accuracy();
  out.val_loss = s.val_loss();
  out.val_accuracy = s.val_accuracy();
  out.images_per_second = s.images_per_second();
  for (const auto& k : s.ranks()) out.ranks.push_back(FromProto(k));
  out.decision = FromProto(s.decision());
  out.status_line = s.status_line();
  out.generation = s.generation();
  out.early_stopping_after = FromProto(s.early_stopping_after());
  out.world_size = s.world_size();
  return out;
}

v1::Phase ToProto(job::Phase p) {
  switch (p) {
    case job::Phase::kWaitingForWorkers:
      return v1::PHASE_WAITING_FOR_WORKERS;
    case job::Phase::kRunning:
      return v1::PHASE_RUNNING;
    case job::Phase::kFinished:
      return v1::PHASE_FINISHED;
    case job::Phase::kFailed:
      return v1::PHASE_FAILED;
  }
  return v1::PHASE_UNSPECIFIED;
}

Result<job::Phase> FromProto(v1::Phase p) {
  switch (p) {
    case v1::PHASE_WAITING_FOR_WORKERS:
      return job::Phase::kWaitingForWorkers;
    case v1::PHASE_RUNNING:
      return job::Phase::kRunning;
    case v1::PHASE_FINISHED:
      return job::Phase::kFinished;
    case v1::PHASE_FAILED:
      return job::Phase::kFailed;
    default:
      return InvalidArgument("no job phase " + v1::Phase_Name(p) + " (" + std::to_string(p) + ")");
  }
}

void ToProto(const job::WorkerInfo& w, v1::WorkerIdentity* out) {
  out->set_rank(w.rank);
  out->set_world_size(w.world_size);
  out->set_generation(w.generation);
  out->set_worker_id(w.worker_id);
  out->set_host(w.host);
  out->set_device(w.device);
  out->set_pid(w.pid);
}

job::WorkerInfo FromProto(const v1::WorkerIdentity& w) {
  job::WorkerInfo out;
  out.rank = w.rank();
  out.world_size = w.world_size();
  out.generation = w.generation();
  out.worker_id = w.worker_id();
  out.host = w.host();
  out.device = w.device();
  out.pid = w.pid();
  return out;
}

void ToProto(const job::WorkerRecord& w, job::Clock::time_point now, v1::WorkerStatus* out) {
  out->set_rank(w.info.rank);
  out->set_host(w.info.host);
  out->set_device(w.info.device);
  out->set_pid(w.info.pid);
  out->set_state(job::WorkerStateName(w.state));
  out->set_seconds_since_heartbeat(std::chrono::duration<double>(now - w.last_seen).count());
  out->set_epoch(w.epoch);
  out->set_step(w.step);
  out->set_failure(w.failure);
}

void ToProto(const job::WorkerRecord& w, v1::WorkerRecord* out) {
  ToProto(w.info, out->mutable_identity());
  out->set_state(job::WorkerStateName(w.state));
  out->set_epoch(w.epoch);
  out->set_step(w.step);
  out->set_failure(w.failure);
}

Result<job::WorkerRecord> FromProto(const v1::WorkerRecord& w) {
  job::WorkerRecord out;
  out.info = FromProto(w.identity());
  const auto state = job::WorkerStateFromName(w.state());
  if (!state) {
    return InvalidArgument(out.info.Describe() + ": no worker state '" + w.state() + "'");
  }
  out.state = *state;
  out.epoch = w.epoch();
  out.step = w.step();
  out.failure = w.failure();
  return out;
}

std::string ToJsonText(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.always_print_primitive_fields = true;
  opts.preserve_proto_field_names = true;
  std::string out;
  // Printing a valid message cannot fail (only a broken descriptor pool would make it).
  (void)google::protobuf::util::MessageToJsonString(m, &out, opts);
  return out;
}

Status FromJsonText(const std::string& text, google::protobuf::Message* out) {
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;
  out->Clear();
  const auto st = google::protobuf::util::JsonStringToMessage(text, out, opts);
  if (!st.ok()) {
    return InvalidArgument(out->GetDescriptor()->full_name() +
                           " from JSON: " + std::string(st.message()));
  }
  return Status::Ok();
}

grpc::StatusCode ToGrpcCode(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return grpc::StatusCode::OK;
    case StatusCode::kInvalidArgument:
      return grpc::StatusCode::INVALID_ARGUMENT;
    case StatusCode::kNotFound:
      return grpc::StatusCode::NOT_FOUND;
    case StatusCode::kDataLoss:
      return grpc::StatusCode::DATA_LOSS;
    case StatusCode::kFailedPrecondition:
      return grpc::StatusCode::FAILED_PRECONDITION;
    case StatusCode::kDeadlineExceeded:
      return grpc::StatusCode::DEADLINE_EXCEEDED;
    case StatusCode::kUnavailable:
      return grpc::StatusCode::UNAVAILABLE;
    case StatusCode::kPermissionDenied:
      return grpc::StatusCode::PERMISSION_DENIED;
    case StatusCode::kAlreadyExists:
      return grpc::StatusCode::ALREADY_EXISTS;
    case StatusCode::kAborted:
      return grpc::StatusCode::ABORTED;
    case StatusCode::kUnauthenticated:
      return grpc::StatusCode::UNAUTHENTICATED;
    case StatusCode::kResourceExhausted:
      return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case StatusCode::kCancelled:
      return grpc::StatusCode::CANCELLED;
    case StatusCode::kInternal:
      return grpc::StatusCode::INTERNAL;
  }
  return grpc::StatusCode::UNKNOWN;
}

StatusCode FromGrpcCode(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return StatusCode::kOk;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
      return StatusCode::kInvalidArgument;
    case grpc::StatusCode::NOT_FOUND:
      return StatusCode::kNotFound;
    case grpc::StatusCode::DATA_LOSS:
      return StatusCode::kDataLoss;
    case grpc::StatusCode::FAILED_PRECONDITION:
      return StatusCode::kFailedPrecondition;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return StatusCode::kDeadlineExceeded;
    case grpc::StatusCode::UNAVAILABLE:
      return StatusCode::kUnavailable;
    case grpc::StatusCode::PERMISSION_DENIED:
      return StatusCode::kPermissionDenied;
    case grpc::StatusCode::ALREADY_EXISTS:
      return StatusCode::kAlreadyExists;
    case grpc::StatusCode::ABORTED:
      return StatusCode::kAborted;
    case grpc::StatusCode::UNAUTHENTICATED:
      return StatusCode::kUnauthenticated;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return StatusCode::kResourceExhausted;
    case grpc::StatusCode::CANCELLED:
      return StatusCode::kCancelled;
    default:
      return StatusCode::kInternal;
  }
}

grpc::Status ToGrpc(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return {ToGrpcCode(s.code()), s.message()};
}

Status FromGrpc(const grpc::Status& s, const std::string& call) {
  if (s.ok()) return Status::Ok();
  return {FromGrpcCode(s.error_code()),
          call + ": " + GrpcCodeName(s.error_code()) + ": " + s.error_message()};
}

const char* GrpcCodeName(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    default:
      return "UNKNOWN";
  }
}

}  // namespace effnet::wire
