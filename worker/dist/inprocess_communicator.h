// In-process communicators: N ranks as N threads of one process, for tests that need several
// ranks but no mpirun (as XGBoost's collective tests do). They implement the whole Communicator
// interface, with the same sequence numbers and deadlines as MPI (Note [collective order and
// sequence numbers], Note [deadlines] in communicator.h).
//
// Note [in-process collectives]: the N communicators share one group. A collective #s is a slot
// of the group; each rank posts its tensor (or bytes) to slot #s when it issues the collective and
// does not block. The rank that posts last runs the collective on its own thread: sums in rank
// order 0..N-1 (one result, copied to every rank, so ranks agree bit for bit), or copies the
// root's tensor, or gathers the bytes; then the slot is done and every Wait() returns. Ranks that
// post different collectives under the same number (another op, shape or dtype) all get an
// Internal error naming both. A Wait() that passes its deadline returns DeadlineExceeded naming
// the ranks that never posted #s and the last number each did post; that communicator is then
// broken (every later call fails at once with that error), like the MPI one. Unlike MPI, a broken
// in-process communicator does not mark the process broken (AnyCommunicatorBroken), so a test can
// provoke timeouts and still exit normally.
#pragma once

#include <memory>
#include <vector>

#include "worker/dist/communicator.h"
#include "worker/dist/dist_config.h"

namespace effnet::dist {

// `world_size` communicators of one group; element r has rank r. Each must be used by one thread
// at a time (its rank's thread); the heartbeat fields of `options` are unused (the group sees who
// posted what).
std::vector<std::shared_ptr<Communicator>> CreateInProcessCommunicators(int world_size,
                                                                        const CommOptions& options);

}  // namespace effnet::dist
