// Tunables of the worker's coordinator client, without gRPC (the `client:` section of the config
// table in worker/train/config.cpp documents each field).
#pragma once

namespace effnet::client {

struct ClientTimeouts {
  double call_timeout_s = 30.0;  // deadline of each RPC
  double heartbeat_interval_s = 2.0;
  double register_timeout_s = 120.0;  // keep retrying registration until all ranks are in
  // While the coordinator is unreachable (e.g. restarting from its state dir), calls are retried
  // with backoff for this long before they fail.
  double unavailable_timeout_s = 120.0;
  // How long EndEpoch waits for the other ranks' metrics (stragglers, validation).
  double decision_timeout_s = 1800.0;
};

}  // namespace effnet::client
