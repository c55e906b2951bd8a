// Backend availability when the build has no NCCL (nccl_communicator.cpp defines these otherwise).
#include "worker/dist/communicator.h"

namespace effnet::dist {

#ifndef EFFNET_HAVE_NCCL
bool HaveNccl() { return false; }

Result<std::shared_ptr<Communicator>> CreateNcclCommunicator(std::shared_ptr<Communicator>, int,
                                                             const CommOptions&) {
  return FailedPrecondition("this build has no NCCL backend (EFFNET_HAVE_NCCL is OFF)");
}
#endif

}  // namespace effnet::dist
