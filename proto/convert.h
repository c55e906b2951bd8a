// The one place where the job's C++ vocabulary (common/job/types.h) meets its wire form
// (proto/coordinator.proto), and where effnet::Status meets grpc::Status. The coordinator's
// server and the worker's client both convert through here; nothing else copies fields.
#pragma once

#include <grpcpp/support/status.h>

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

// Status codes both ways. Every effnet code has its gRPC namesake; gRPC codes without one
// (UNKNOWN, UNIMPLEMENTED, OUT_OF_RANGE, DATA_LOSS ...) map to the nearest effnet code.
grpc::StatusCode ToGrpcCode(StatusCode code);
StatusCode FromGrpcCode(grpc::StatusCode code);
grpc::Status ToGrpc(const Status& s);
// `call` names the RPC: "GetEpochPlan(epoch 3): PERMISSION_DENIED: <message>".
Status FromGrpc(const grpc::Status& s, const std::string& call);
const char* GrpcCodeName(grpc::StatusCode code);  // "PERMISSION_DENIED"

}  // namespace effnet::wire
