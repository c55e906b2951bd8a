// The one place where the job's C++ vocabulary (common/job/types.h, common/job/records.h) meets
// its wire form (proto/coordinator.proto), and where effnet::Status meets grpc::Status. The
// coordinator's server and state file and the worker's client all convert through here; nothing
// else copies fields.
#pragma once

#include <google/protobuf/message.h>
#include <grpcpp/support/status.h>

#include <string>

#include "common/job/records.h"
#include "common/job/types.h"
#include "common/status.h"
#include "proto/coordinator.pb.h"

namespace effnet::wire {

void ToProto(const job::Stage& s, v1::Stage* out);
job::Stage FromProto(const v1::Stage& s);

void ToProto(const job::EpochDecision& d, v1::EpochDecision* out);
job::EpochDecision FromProto(const v1::EpochDecision& d);

void ToProto(const job::RankMetrics& m, v1::RankMetrics* out);
job::RankMetrics FromProto(const v1::RankMetrics& m);

void ToProto(const job::EpochPlan& p, v1::GetEpochPlanResponse* out);
job::EpochPlan FromProto(const v1::GetEpochPlanResponse& p);

void ToProto(const job::EarlyStopping::State& s, v1::EarlyStoppingState* out);
job::EarlyStopping::State FromProto(const v1::EarlyStoppingState& s);

void ToProto(const job::CheckpointRef& c, v1::CheckpointRef* out);
job::CheckpointRef FromProto(const v1::CheckpointRef& c);

void ToProto(const job::EpochRecord& r, v1::EpochSummary* out);
job::EpochRecord FromProto(const v1::EpochSummary& s);

v1::Phase ToProto(job::Phase p);
// PHASE_UNSPECIFIED and unknown numbers are an InvalidArgument.
Result<job::Phase> FromProto(v1::Phase p);

void ToProto(const job::WorkerInfo& w, v1::WorkerIdentity* out);
job::WorkerInfo FromProto(const v1::WorkerIdentity& w);

// The live view of a worker; `now` gives seconds_since_heartbeat.
void ToProto(const job::WorkerRecord& w, job::Clock::time_point now, v1::WorkerStatus* out);
// The state file's record; last_seen is left for the caller (it is not persisted).
void ToProto(const job::WorkerRecord& w, v1::WorkerRecord* out);
Result<job::WorkerRecord> FromProto(const v1::WorkerRecord& w);

// Protobuf's JSON mapping with the field names of the .proto, every field printed (also those at
// their default), indented: the form of the coordinator's state file and of `effnet-coordinator
// state --json`.
std::string ToJsonText(const google::protobuf::Message& m);
// Parses `text` into `out` (cleared first). Fields unknown to this build are skipped, so a newer
// writer that only added fields stays readable. Errors are InvalidArgument with protobuf's reason.
Status FromJsonText(const std::string& text, google::protobuf::Message* out);

// Status codes both ways. Every effnet code has its gRPC namesake; gRPC codes without one
// (UNKNOWN, UNIMPLEMENTED, OUT_OF_RANGE, DATA_LOSS ...) map to the nearest effnet code.
grpc::StatusCode ToGrpcCode(StatusCode code);
StatusCode FromGrpcCode(grpc::StatusCode code);
grpc::Status ToGrpc(const Status& s);
// `call` names the RPC: "GetEpochPlan(epoch 3): PERMISSION_DENIED: <message>".
Status FromGrpc(const grpc::Status& s, const std::string& call);
const char* GrpcCodeName(grpc::StatusCode code);  // "PERMISSION_DENIED"

}  // namespace effnet::wire
