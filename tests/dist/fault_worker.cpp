// Failure-injection worker for dist_fault_tests: trains a small model over 2 ranks; at step 3
// rank 1 either raises SIGKILL on itself (--mode kill) or stalls without joining (--mode stall).
// Rank 0 must stop within the deadline with an error naming rank 1, the operation and its
// sequence number, and exit non-zero.
#include <torch/torch.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>

#include "tests/dist/test_models.h"
#include "worker/dist/create.h"
#include "worker/dist/dist_data_parallel.h"

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "kill";
  const double deadline = argc > 2 ? std::stod(argv[2]) : 2.0;
  at::set_num_threads(1);
  effnet::dist::DistConfig cfg;
  cfg.comm.timeout_s = deadline;
  cfg.comm.heartbeat_interval_s = 0.1;
  cfg.comm.heartbeat_silence_s = 0.5;
  auto created = effnet::dist::CreateDataParallel(cfg);
  if (!created.ok()) {
    std::fprintf(stderr, "fault_worker: error: %s\n", created.status().ToString().c_str());
    return 2;
  }
  auto dp = std::move(created).value();
  auto model = effnet::dist::testing::SmallConvNet(0);
  if (auto s = dp->Attach(*model); !s.ok()) {
    std::fprintf(stderr, "fault_worker: error: %s\n", s.ToString().c_str());
    return 2;
  }
  torch::optim::SGD opt(model->parameters(), 0.1);
  for (int step = 0; step < 6; ++step) {
    auto batch = effnet::dist::testing::GlobalBatch(step, 8);
    auto loss = torch::nn::functional::cross_entropy(model->forward(batch.x), batch.y);
    if (step == 3 && dp->rank() == 1) {
      std::fprintf(stderr, "fault_worker: rank 1 injecting '%s' at step 3\n", mode.c_str());
      std::fflush(stderr);
      if (mode == "kill") std::raise(SIGKILL);
      std::this_thread::sleep_for(std::chrono::duration<double>(deadline * 6));
      return 0;
    }
    opt.zero_grad();
    if (auto s = dp->BeforeBackward(); !s.ok()) {
      std::fprintf(stderr, "fault_worker: error: %s\n", s.ToString().c_str());
      return 2;
    }
    loss.backward();
    const auto t0 = std::chrono::steady_clock::now();
    if (auto s = dp->AfterBackward(); !s.ok()) {
      const double waited =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "fault_worker: rank %d stopped after waiting %.2f s: %s\n", dp->rank(),
                   waited, s.ToString().c_str());
      return 3;
    }
    opt.step();
  }
  std::fprintf(stderr, "fault_worker: rank %d finished all steps\n", dp->rank());
  return 0;
}
