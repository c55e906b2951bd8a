// Validate(DistConfig): see dist_config.h.
#include "worker/dist/dist_config.h"

#include <cmath>

namespace effnet::dist {
namespace {

Status Positive(const char* field, double v) {
  if (std::isfinite(v) && v > 0) return Status::Ok();
  return InvalidArgument(std::string("dist.") + field + ": must be > 0, got " + std::to_string(v));
}

}  // namespace

Status Validate(const DistConfig& c) {
  if (c.backend != "auto" && c.backend != "mpi" && c.backend != "nccl") {
    return InvalidArgument("dist.backend: expected auto|nccl|mpi, got '" + c.backend + "'");
  }
  EFFNET_RETURN_IF_ERROR(Positive("comm.timeout_s", c.comm.timeout_s));
  EFFNET_RETURN_IF_ERROR(Positive("comm.heartbeat_interval_s", c.comm.heartbeat_interval_s));
  EFFNET_RETURN_IF_ERROR(Positive("comm.heartbeat_silence_s", c.comm.heartbeat_silence_s));
  if (c.comm.heartbeat_silence_s < c.comm.heartbeat_interval_s) {
    return InvalidArgument(
        "dist.comm.heartbeat_silence_s (" + std::to_string(c.comm.heartbeat_silence_s) +
        ") is shorter than dist.comm.heartbeat_interval_s (" +
        std::to_string(c.comm.heartbeat_interval_s) + "): every peer would be reported silent");
  }
  EFFNET_RETURN_IF_ERROR(Positive("reducer.first_bucket_mb", c.reducer.first_bucket_mb));
  EFFNET_RETURN_IF_ERROR(Positive("reducer.bucket_cap_mb", c.reducer.bucket_cap_mb));
  return Status::Ok();
}

}  // namespace effnet::dist
