// All-reduce bus bandwidth per message size (nccl-tests conventions: algbw = bytes / time,
// busbw = algbw * 2(n-1)/n). Run under mpirun; rank 0 prints the table and, with --json PATH,
// writes the rows. Usage: bench_dist_allreduce [--backend mpi|nccl] [--max-mb 64] [--json out]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>  // for set_num_threads

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "worker/dist/communicator.h"
#include "worker/dist/create.h"

using effnet::dist::Communicator;

int main(int argc, char** argv) {
  std::string backend = "mpi", json_path;
  double max_mb = 64;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--backend") backend = v;
    if (k == "--max-mb") max_mb = std::stod(v);
    if (k == "--json") json_path = v;
  }
  at::set_num_threads(1);
  const auto world = effnet::dist::InitMpi();
  effnet::dist::CommOptions opts;
  opts.timeout_s = 300;
  std::shared_ptr<Communicator> comm = effnet::dist::CreateMpiCommunicator(opts).ValueOrThrow();
  at::Device device = at::kCPU;
  if (backend == "nccl") {
    device = at::Device(at::kCUDA, world.local_rank);
    comm = effnet::dist::CreateNcclCommunicator(comm, world.local_rank, opts).ValueOrThrow();
  }
  const int n = comm->world_size();
  const double factor = n > 1 ? 2.0 * (n - 1) / n : 0.0;
  nlohmann::json rows = nlohmann::json::array();
  if (world.rank == 0) {
    std::printf("all-reduce (%s, %d ranks, float32 sum)\n", backend.c_str(), n);
    std::printf("%12s %8s %12s %12s %12s\n", "bytes", "iters", "time_us", "algbw_GB/s",
                "busbw_GB/s");
  }
  for (int64_t bytes = 4096; bytes <= static_cast<int64_t>(max_mb * 1048576); bytes *= 4) {
    at::Tensor t = at::ones({bytes / 4}, at::TensorOptions().dtype(at::kFloat).device(device));
    const int iters = static_cast<int>(std::clamp<int64_t>((64LL << 20) / bytes, 5, 200));
    for (int w = 0; w < 3; ++w)
      effnet::ThrowIfError(comm->AllReduce(t, effnet::dist::ReduceOp::kSum));
    effnet::ThrowIfError(comm->Barrier());
    const int64_t t0 = effnet::dist::NowNs();
    for (int i = 0; i < iters; ++i) {
      effnet::ThrowIfError(comm->AllReduce(t, effnet::dist::ReduceOp::kSum));
    }
    if (device.is_cuda()) t.cpu();  // wait for the stream
    double us = (effnet::dist::NowNs() - t0) / 1e3 / iters;
    // The slowest rank defines the time.
    std::vector<std::string> all = comm->AllGather(std::to_string(us)).ValueOrThrow();
    for (const auto& s : all) us = std::max(us, std::stod(s));
    const double algbw = bytes / (us * 1e-6) / 1e9;
    if (world.rank == 0) {
      std::printf("%12lld %8d %12.1f %12.3f %12.3f\n", static_cast<long long>(bytes), iters, us,
                  algbw, algbw * factor);
      rows.push_back({{"backend", backend},
                      {"ranks", n},
                      {"bytes", bytes},
                      {"time_us", us},
                      {"algbw_GBps", algbw},
                      {"busbw_GBps", algbw * factor}});
    }
  }
  if (world.rank == 0 && !json_path.empty()) std::ofstream(json_path) << rows.dump(2) << "\n";
  return 0;
}
