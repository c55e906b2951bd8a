// One training step (forward + cross-entropy + backward, optionally an SGD step) of our
// EfficientNetV2, timed; the twin of timm_step.py for the same settings.
//   bench_model_step --variant b0 --image 128 --batch 16 --threads 2 [--device cuda --bf16
//                    --channels-last --optimizer] --json
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>

#include "common/status.h"
#include "worker/model/efficientnet.h"

int main(int argc, char** argv) {
  using namespace effnet::model;
  CLI::App app{"EfficientNetV2 training-step timing (ours)"};
  ModelConfig cfg;
  cfg.num_classes = 1000;
  int image = 128, batch = 16, threads = 0, warmup = 3, iters = 10;
  std::string device = "cpu";
  bool bf16 = false, channels_last = false, optimizer = false, json = false, cudnn_bench = false;
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
  app.add_flag("--json", json);
  CLI11_PARSE(app, argc, argv);
  try {
    effnet::ThrowIfError(ValidateConfig(cfg));
    if (threads > 0) torch::set_num_threads(threads);
    const torch::Device dev(device);
    const bool cuda = dev.is_cuda();
    at::globalContext().setBenchmarkCuDNN(cudnn_bench);
    torch::manual_seed(0);
    EfficientNetV2 model(cfg);  // reference dropout and drop_path 0.2, like timm_step.py
    model->to(dev);
    const auto fmt = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    if (channels_last) model->set_memory_format(fmt);
    model->train();
    torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
    auto x =
        torch::randn({batch, 3, image, image}, torch::TensorOptions().device(dev)).contiguous(fmt);
    auto y = torch::randint(cfg.num_classes, {batch},
                            torch::TensorOptions().dtype(torch::kLong).device(dev));
    auto step = [&] {
      for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
      torch::Tensor loss;
      if (bf16) {
        const auto dt = cuda ? at::DeviceType::CUDA : at::DeviceType::CPU;
        at::autocast::set_autocast_enabled(dt, true);
        at::autocast::set_autocast_dtype(dt, at::kBFloat16);
        at::autocast::increment_nesting();
        loss = torch::nn::functional::cross_entropy(model->forward(x), y);
        if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
        at::autocast::set_autocast_enabled(dt, false);
      } else {
        loss = torch::nn::functional::cross_entropy(model->forward(x), y);
      }
      loss.backward();
      if (optimizer) sgd.step();
      if (cuda) torch::cuda::synchronize();
    };
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
          "\"optimizer\": %s, \"median_ms\": %.3f, \"min_ms\": %.3f, \"img_per_s\": %.2f}\n",
          cfg.variant.c_str(), image, batch, torch::get_num_threads(), device.c_str(),
          bf16 ? "true" : "false", channels_last ? "true" : "false", optimizer ? "true" : "false",
          median, ms.front(), img_s);
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
