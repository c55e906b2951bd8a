// One training step (forward + cross-entropy + backward, optionally an SGD step) of our
// EfficientNetV2, timed; the twin of timm_step.py for the same settings.
//   bench_model_step --variant b0 --image 128 --batch 16 --threads 2 [--device cuda --bf16
//                    --channels-last --optimizer --cuda-graph] --json
// The step is the Trainer's StepBody shape (worker/train/graph_step.h); --cuda-graph captures it
// once after the warm-up and replays it (Note [CUDA graph step]); the SGD step stays eager.
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>

#include "common/host_memory.h"
#include "common/status.h"
#include "worker/model/efficientnet.h"
#include "worker/train/graph_step.h"

int main(int argc, char** argv) {
  using namespace effnet::model;
  CLI::App app{"EfficientNetV2 training-step timing (ours)"};
  ModelConfig cfg;
  cfg.num_classes = 1000;
  int image = 128, batch = 16, threads = 0, warmup = 3, iters = 10;
  std::string device = "cpu";
  bool malloc_default = false, unfused = false;
  bool bf16 = false, channels_last = false, optimizer = false, json = false, cudnn_bench = false,
       graph = false;
  app.add_option("--variant", cfg.variant)->capture_default_str();
  app.add_option("--classes", cfg.num_classes)->capture_default_str();
  app.add_option("--image", image)->capture_default_str();
  app.add_option("--batch", batch)->capture_default_str();
  app.add_option("--threads", threads, "intra-op threads (0: LibTorch default)");
  app.add_option("--warmup", warmup)->capture_default_str();
  app.add_option("--iters", iters)->capture_default_str();
  app.add_option("--device", device, "cpu|cuda")->capture_default_str();
  app.add_flag("--bf16", bf16, "bf16 autocast for the forward pass (CUDA)");
  app.add_flag("--channels-last", channels_last);
  app.add_flag("--optimizer", optimizer, "include an SGD(momentum 0.9) step");
  app.add_flag("--cudnn-benchmark", cudnn_bench, "cuDNN autotuning (both twins alike)");
  app.add_flag("--cuda-graph", graph, "capture forward + loss + backward as a CUDA graph");
  app.add_flag("--json", json);
  app.add_flag("--malloc-default", malloc_default,
               "leave glibc malloc's thresholds as they are (Note [host allocator])");
  app.add_flag("--unfused", unfused,
               "BN and SiLU as two LibTorch ops (runtime.fused_kernels off, Note [fused BN+SiLU])");
  CLI11_PARSE(app, argc, argv);
  try {
    effnet::ThrowIfError(ValidateConfig(cfg));
    if (threads > 0) torch::set_num_threads(threads);
    // The trainer's host allocator setting (Note [host allocator]); --malloc-default measures
    // without it.
    if (!malloc_default) effnet::KeepFreedHostMemory();
    const torch::Device dev(device);
    const bool cuda = dev.is_cuda();
    at::globalContext().setBenchmarkCuDNN(cudnn_bench);
    torch::manual_seed(0);
    EfficientNetV2 model(cfg);  // reference dropout and drop_path 0.2, like timm_step.py
    model->to(dev);
    const auto fmt = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    if (channels_last) model->set_memory_format(fmt);
    model->set_fused_kernels(!unfused);
    model->train();
    torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
    auto x =
        torch::randn({batch, 3, image, image}, torch::TensorOptions().device(dev)).contiguous(fmt);
    auto y = torch::randint(cfg.num_classes, {batch},
                            torch::TensorOptions().dtype(torch::kLong).device(dev));
    const auto dt = cuda ? at::DeviceType::CUDA : at::DeviceType::CPU;
    using effnet::train::StepInputs;
    using effnet::train::StepOutputs;
    const effnet::train::StepBody body = [&](const StepInputs& in) {
      torch::Tensor logits;
      if (bf16) {
        at::autocast::set_autocast_enabled(dt, true);
        at::autocast::set_autocast_dtype(dt, at::kBFloat16);
        at::autocast::increment_nesting();
        logits = model->forward(in.images);
        if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
        at::autocast::set_autocast_enabled(dt, false);
      } else {
        logits = model->forward(in.images);
      }
      logits = logits.to(torch::kFloat);
      auto sum = (-(in.targets * torch::log_softmax(logits, 1)).sum(1) * in.weights).sum();
      (sum * in.scale).backward();
      return StepOutputs{logits, sum};
    };
    const StepInputs in{
        x, torch::one_hot(y, cfg.num_classes).to(torch::kFloat),
        torch::ones({batch}, torch::TensorOptions().device(dev)),
        torch::full({}, 1.0 / batch, torch::TensorOptions().dtype(torch::kFloat).device(dev))};
    if (graph && (!cuda || !effnet::train::CudaGraphsBuilt())) {
      throw std::runtime_error("--cuda-graph needs --device cuda and a build with CUDA graphs");
    }
    std::unique_ptr<effnet::train::GraphedStep> graphed;
    int steps_done = 0;
    auto step = [&] {
      for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
      if (graph && steps_done >= effnet::train::kGraphWarmupSteps) {
        if (!graphed) {
          std::vector<torch::Tensor> params = model->parameters();
          graphed = effnet::train::GraphedStep::Capture(body, in, params).ValueOrThrow();
        }
        effnet::ThrowIfError(graphed->Replay(in).status());
      } else {
        body(in);
      }
      ++steps_done;
      if (optimizer) sgd.step();
      if (cuda) torch::cuda::synchronize();
    };
    warmup = std::max(warmup, graph ? effnet::train::kGraphWarmupSteps + 1 : 0);
    for (int i = 0; i < warmup; ++i) step();
    std::vector<double> ms;
    for (int i = 0; i < iters; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      step();
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    const double median = ms[ms.size() / 2];
    double total = 0;
    for (double v : ms) total += v;
    const double img_s = batch * iters / (total / 1000.0);
    if (json) {
      std::printf(
          "{\"impl\": \"effnet\", \"variant\": \"%s\", \"image\": %d, \"batch\": %d, "
          "\"threads\": %d, \"device\": \"%s\", \"bf16\": %s, \"channels_last\": %s, "
          "\"optimizer\": %s, \"cuda_graph\": %s, \"fused_kernels\": %s, \"median_ms\": %.3f, "
          "\"min_ms\": %.3f, \"img_per_s\": %.2f}\n",
          cfg.variant.c_str(), image, batch, torch::get_num_threads(), device.c_str(),
          bf16 ? "true" : "false", channels_last ? "true" : "false", optimizer ? "true" : "false",
          graph ? "true" : "false", unfused ? "false" : "true", median, ms.front(), img_s);
    } else {
      std::printf("effnet %s %dpx batch %d on %s: median %.1f ms/step, %.1f img/s\n",
                  cfg.variant.c_str(), image, batch, device.c_str(), median, img_s);
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_model_step: " << e.what() << std::endl;
    return 2;
  }
}
