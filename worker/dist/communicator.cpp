// What every Communicator shares (NowNs, OpTypeName), and backend availability when the build has
// no NCCL (nccl_communicator.cpp defines HaveNccl / CreateNcclCommunicator otherwise).
#include "worker/dist/communicator.h"

#include <chrono>

namespace effnet::dist {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

const char* OpTypeName(OpType op) {
  switch (op) {
    case OpType::kAllReduce:
      return "all_reduce";
    case OpType::kBroadcast:
      return "broadcast";
    case OpType::kBarrier:
      return "barrier";
    case OpType::kAllGather:
      return "all_gather";
  }
  return "?";
}

#ifndef EFFNET_HAVE_NCCL
bool HaveNccl() { return false; }

Result<std::shared_ptr<Communicator>> CreateNcclCommunicator(std::shared_ptr<Communicator>, int,
                                                             const CommOptions&) {
  return FailedPrecondition("this build has no NCCL backend (EFFNET_HAVE_NCCL is OFF)");
}
#endif

}  // namespace effnet::dist
