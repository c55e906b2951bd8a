// Every tunable of data parallelism with its default, each written once. Torch-, MPI- and
// NCCL-free, so a config parser or the coordinator can include it. The transport reads
// DistConfig::comm (communicator.h), the reducer DistConfig::reducer (reducer.h), and
// CreateDataParallel (create.h) the rest.
//
// Note [small first bucket]: gradients become ready back to front during backward, and a
// bucket's all-reduce can only start once all its gradients are ready. With one cap for every
// bucket, the first all-reduce would wait for bucket_cap_mb of gradients, leaving the network
// idle for much of the backward. A small first bucket (the head's gradients) starts communication
// almost at once; later buckets are large because each collective has a fixed latency. c10d's
// DDP does the same (1 MiB first bucket, 25 MiB after: `bucket_cap_mb` and
// `_DEFAULT_FIRST_BUCKET_BYTES`), and these defaults are its defaults.
#pragma once

#include <string>

#include "common/status.h"

namespace effnet::dist {

// Transport: every collective of a Communicator (communicator.h).
struct CommOptions {
  double timeout_s = 120.0;  // deadline of every collective (NCCL watchdog / MPI poll)
  // Progress exchange between ranks (MPI communicator), used to name missing ranks on a timeout.
  double heartbeat_interval_s = 0.25;
  double heartbeat_silence_s = 1.0;  // a peer not heard from this long is reported as silent
};

// Gradient buckets of the Reducer (reducer.h).
struct ReducerConfig {
  double first_bucket_mb = 1.0;  // cap of the first bucket (MiB); see Note [small first bucket]
  double bucket_cap_mb = 25.0;   // cap of every later bucket (MiB)
  bool compress_bf16 = false;    // all-reduce a bf16 copy of each fp32 bucket
  bool rebuild_buckets = true;   // once, after step 0, in rank 0's observed ready order
  bool record_events = true;     // keep the per-step event log (cheap)
};

struct DistConfig {
  std::string backend = "auto";  // auto (nccl on CUDA parameters, else mpi) | nccl | mpi
  bool sync_batchnorm = false;   // cross-rank BatchNorm statistics
  CommOptions comm;
  ReducerConfig reducer;
};

// InvalidArgument naming the first bad field ("dist.comm.timeout_s: ..."): unknown backend,
// non-positive timeout, heartbeat interval or bucket caps, silence shorter than the interval.
Status Validate(const DistConfig& config);

}  // namespace effnet::dist
