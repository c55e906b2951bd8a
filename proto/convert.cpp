#include "proto/convert.h"

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
