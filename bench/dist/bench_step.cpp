// Step-time cost of data parallelism at world size 1 (reducer on vs off) for EfficientNetV2, and
// a projection of step time and scaling efficiency to 8-256 GPUs from the measured per-bucket
// gradient-ready times (ring all-reduce cost model, with and without overlap).
//   bench_dist_step [--variant b0] [--image 128] [--batch 8] [--iters 6] [--rounds 2]
//                   [--device cpu|cuda] [--backend mpi|nccl] [--gpu-step-ms 44] [--json out]
//                   [--first-bucket-mb 1] [--bucket-cap-mb 25]
//   bench_dist_step --loss-curve 30 [--device cuda --backend nccl]   (prints per-step losses)
//
// Note [projection model]: per-GPU compute is taken from a GPU step time (--gpu-step-ms; default
// 44 ms = B0 at 224 px, batch 256 on an H100, 5,824 img/s, docs/build-notes.md), split
// into forward / backward / optimizer with the fractions measured here, and each bucket becomes
// ready at the same FRACTION of backward as measured here. One bucket's all-reduce costs
// 2(N-1)/N * bytes / B + 2(N-1) * a, with B = 450 GB/s and a = 2 us inside a node (N <= 8,
// NVLink) and B = 50 GB/s (400 Gb/s InfiniBand per GPU) and a = 6 us across nodes (8 GPUs per
// node; a flat ring is bounded by its slowest link). Buckets are reduced one after another in
// launch order. Without overlap: step = fwd + bwd + sum(comm) + opt. With overlap: bucket b
// starts at max(ready_b, end_{b-1}); step = fwd + max(bwd, end_last) + opt. Efficiency =
// compute-only step / step (weak scaling: per-GPU batch fixed).
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "worker/dist/create.h"
#include "worker/dist/dist_data_parallel.h"
#include "worker/model/efficientnet.h"

namespace {

struct Args {
  std::string variant = "b0", device = "cpu", backend = "mpi", json;
  int image = 128, batch = 8, iters = 6, rounds = 2, loss_curve = 0, classes = 1000;
  double gpu_step_ms = 44.0;
  effnet::dist::ReducerConfig reducer;  // --first-bucket-mb, --bucket-cap-mb
};

struct Timing {
  double fwd_ms = 0, bwd_ms = 0, opt_ms = 0, step_ms = 0;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

void Sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

Timing Measure(const Args& a, bool reducer, std::vector<double>* ready_frac,
               std::vector<int64_t>* bucket_bytes) {
  const torch::Device device(a.device);
  torch::manual_seed(0);
  effnet::model::ModelConfig mc;
  mc.variant = a.variant;
  mc.num_classes = a.classes;
  effnet::model::EfficientNetV2 model(mc);
  model->to(device);
  std::unique_ptr<effnet::dist::DistDataParallel> dp;
  if (reducer) {
    effnet::dist::DistConfig dc;
    dc.backend = a.backend;
    dc.reducer = a.reducer;
    auto host = effnet::dist::CreateMpiCommunicator(dc.comm).ValueOrThrow();
    dp = std::make_unique<effnet::dist::DistDataParallel>(dc, host);
    effnet::ThrowIfError(dp->Attach(*model));
  }
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  auto x = torch::randn({a.batch, 3, a.image, a.image}, device);
  auto y =
      torch::randint(0, a.classes, {a.batch}, torch::TensorOptions(torch::kLong).device(device));
  std::vector<double> f, b, o, s;
  for (int it = 0; it < a.iters + 2; ++it) {
    Sync(device);
    const int64_t t0 = effnet::dist::NowNs();
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    Sync(device);
    const int64_t t1 = effnet::dist::NowNs();
    if (dp) effnet::ThrowIfError(dp->BeforeBackward());
    loss.backward();
    if (dp) effnet::ThrowIfError(dp->AfterBackward());
    Sync(device);
    const int64_t t2 = effnet::dist::NowNs();
    opt.step();
    Sync(device);
    const int64_t t3 = effnet::dist::NowNs();
    if (it < 2) continue;  // warm-up (and the bucket rebuild after step 0)
    f.push_back((t1 - t0) / 1e6);
    b.push_back((t2 - t1) / 1e6);
    o.push_back((t3 - t2) / 1e6);
    s.push_back((t3 - t0) / 1e6);
    if (dp && ready_frac) {
      ready_frac->clear();
      for (double r : dp->reducer()->bucket_ready_s()) {
        ready_frac->push_back(std::clamp(r * 1e3 / ((t2 - t1) / 1e6), 0.0, 1.0));
      }
      *bucket_bytes = dp->reducer()->bucket_bytes();
    }
  }
  return {Median(f), Median(b), Median(o), Median(s)};
}

int LossCurve(const Args& a) {
  const torch::Device device(a.device);
  effnet::dist::DistConfig dc;
  dc.backend = a.backend;
  auto host = effnet::dist::CreateMpiCommunicator(dc.comm).ValueOrThrow();
  effnet::dist::DistDataParallel dp(dc, host);
  torch::manual_seed(0);
  effnet::model::ModelConfig mc;
  mc.variant = a.variant;
  mc.num_classes = 10;
  mc.dropout = 0.0;
  mc.drop_path = 0.0;
  effnet::model::EfficientNetV2 model(mc);
  model->to(device);
  effnet::ThrowIfError(dp.Attach(*model));
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  // A learnable synthetic task: the class is the brightest of 10 fixed image patterns.
  torch::manual_seed(1);
  auto patterns = torch::randn({10, 3, a.image, a.image});
  nlohmann::json losses = nlohmann::json::array();
  for (int step = 0; step < a.loss_curve; ++step) {
    torch::manual_seed(100 + step);
    auto y = torch::randint(0, 10, {a.batch}, torch::kLong);
    auto x = patterns.index_select(0, y) + 0.5 * torch::randn({a.batch, 3, a.image, a.image});
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model->forward(x.to(device)), y.to(device));
    effnet::ThrowIfError(dp.BeforeBackward());
    loss.backward();
    effnet::ThrowIfError(dp.AfterBackward());
    opt.step();
    losses.push_back(loss.item<double>());
  }
  nlohmann::json out = {
      {"device", a.device}, {"backend", dp.grad_comm().backend()}, {"losses", losses}};
  std::printf("%s\n", out.dump().c_str());
  if (!a.json.empty()) std::ofstream(a.json) << out.dump(2) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--variant") a.variant = v;
    if (k == "--image") a.image = std::stoi(v);
    if (k == "--batch") a.batch = std::stoi(v);
    if (k == "--iters") a.iters = std::stoi(v);
    if (k == "--rounds") a.rounds = std::stoi(v);
    if (k == "--device") a.device = v;
    if (k == "--backend") a.backend = v;
    if (k == "--gpu-step-ms") a.gpu_step_ms = std::stod(v);
    if (k == "--loss-curve") a.loss_curve = std::stoi(v);
    if (k == "--json") a.json = v;
    if (k == "--first-bucket-mb") a.reducer.first_bucket_mb = std::stod(v);
    if (k == "--bucket-cap-mb") a.reducer.bucket_cap_mb = std::stod(v);
  }
  if (a.device == "cpu") at::set_num_threads(std::max(1, at::get_num_threads()));
  effnet::dist::InitMpi();
  if (a.loss_curve > 0) return LossCurve(a);

  std::vector<double> ready;
  std::vector<int64_t> bytes;
  Timing off{1e30, 1e30, 1e30, 1e30}, on{1e30, 1e30, 1e30, 1e30};
  for (int r = 0; r < a.rounds; ++r) {  // alternate, keep the best median of each
    Timing t = Measure(a, false, nullptr, nullptr);
    if (t.step_ms < off.step_ms) off = t;
    t = Measure(a, true, &ready, &bytes);
    if (t.step_ms < on.step_ms) on = t;
  }
  int64_t total_bytes = 0;
  for (auto v : bytes) total_bytes += v;
  std::printf(
      "\nstep time at world size 1: %s %dpx batch %d on %s (%d threads), backend %s, buckets "
      "%.1f / %.1f MB\n",
      a.variant.c_str(), a.image, a.batch, a.device.c_str(), at::get_num_threads(),
      a.backend.c_str(), a.reducer.first_bucket_mb, a.reducer.bucket_cap_mb);
  std::printf("%-12s %10s %10s %10s %10s\n", "reducer", "fwd_ms", "bwd_ms", "opt_ms", "step_ms");
  std::printf("%-12s %10.1f %10.1f %10.1f %10.1f\n", "off", off.fwd_ms, off.bwd_ms, off.opt_ms,
              off.step_ms);
  std::printf("%-12s %10.1f %10.1f %10.1f %10.1f\n", "on", on.fwd_ms, on.bwd_ms, on.opt_ms,
              on.step_ms);
  std::printf("overhead of the reducer: %+.1f %% of the step\n",
              100.0 * (on.step_ms - off.step_ms) / off.step_ms);
  std::printf("buckets (launch order): ");
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::printf("%s%.2f MB @ %.0f%%", i ? ", " : "", bytes[i] / 1048576.0, 100 * ready[i]);
  }
  std::printf(" of backward\n");

  // Projection (Note [projection model]).
  const double total = off.fwd_ms + off.bwd_ms + off.opt_ms;
  const double gpu_fwd = a.gpu_step_ms * off.fwd_ms / total;
  const double gpu_bwd = a.gpu_step_ms * off.bwd_ms / total;
  const double gpu_opt = a.gpu_step_ms * off.opt_ms / total;
  nlohmann::json proj = nlohmann::json::array();
  std::printf(
      "\nprojection: %.1f MB of gradients in %zu buckets, GPU compute %.1f ms/step "
      "(fwd %.1f, bwd %.1f, opt %.1f)\n",
      total_bytes / 1048576.0, bytes.size(), a.gpu_step_ms, gpu_fwd, gpu_bwd, gpu_opt);
  std::printf("%6s %6s %12s %14s %12s %14s %12s\n", "gpus", "nodes", "comm_ms", "step_no_ovl",
              "eff_no_ovl", "step_overlap", "eff_overlap");
  for (int n : {8, 16, 32, 64, 128, 256}) {
    const bool intra = n <= 8;
    const double bw = intra ? 450e9 : 50e9, alpha = intra ? 2e-6 : 6e-6;
    double comm_sum = 0, end = 0;
    for (size_t i = 0; i < bytes.size(); ++i) {
      const double c =
          (2.0 * (n - 1) / n * static_cast<double>(bytes[i]) / bw + 2.0 * (n - 1) * alpha) * 1e3;
      comm_sum += c;
      end = std::max(end, ready[i] * gpu_bwd) + c;
    }
    const double compute = gpu_fwd + gpu_bwd + gpu_opt;
    const double no_ovl = compute + comm_sum;
    const double ovl = gpu_fwd + std::max(gpu_bwd, end) + gpu_opt;
    std::printf("%6d %6d %12.2f %14.2f %11.1f%% %14.2f %11.1f%%\n", n, (n + 7) / 8, comm_sum,
                no_ovl, 100 * compute / no_ovl, ovl, 100 * compute / ovl);
    proj.push_back({{"gpus", n},
                    {"comm_ms", comm_sum},
                    {"step_ms_no_overlap", no_ovl},
                    {"efficiency_no_overlap", compute / no_ovl},
                    {"step_ms_overlap", ovl},
                    {"efficiency_overlap", compute / ovl}});
  }
  if (!a.json.empty()) {
    nlohmann::json out = {{"model", a.variant},
                          {"image", a.image},
                          {"batch", a.batch},
                          {"device", a.device},
                          {"threads", at::get_num_threads()},
                          {"reducer_off",
                           {{"fwd_ms", off.fwd_ms},
                            {"bwd_ms", off.bwd_ms},
                            {"opt_ms", off.opt_ms},
                            {"step_ms", off.step_ms}}},
                          {"reducer_on",
                           {{"fwd_ms", on.fwd_ms},
                            {"bwd_ms", on.bwd_ms},
                            {"opt_ms", on.opt_ms},
                            {"step_ms", on.step_ms}}},
                          {"bucket_bytes", bytes},
                          {"bucket_ready_fraction_of_backward", ready},
                          {"projection",
                           {{"gpu_step_ms", a.gpu_step_ms},
                            {"nvlink_GBps", 450},
                            {"ib_GBps", 50},
                            {"alpha_intra_us", 2},
                            {"alpha_inter_us", 6},
                            {"gpus_per_node", 8},
                            {"rows", proj}}}};
    std::ofstream(a.json) << out.dump(2) << "\n";
  }
  return 0;
}
