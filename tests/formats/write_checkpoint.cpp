// Writes checkpoints of a real and a reduced EfficientNetV2-B0 (5 classes, EMA on) for
// check_checkpoint.py, plus expected.safetensors next to each: an input and the C++ eval logits
// of the model and of the EMA weights.
//   write_checkpoint OUT_DIR  ->  OUT_DIR/{b0,b0_reduced}/{checkpoints/epoch-0000/,
//   expected.safetensors}
#include <sys/stat.h>
#include <torch/torch.h>

#include <iostream>

#include "worker/formats/checkpoint.h"
#include "worker/formats/safetensors.h"
#include "worker/model/efficientnet.h"

int main(int argc, char** argv) {
  using namespace effnet;
  if (argc != 2) {
    std::cerr << "usage: write_checkpoint OUT_DIR\n";
    return 2;
  }
  const std::string out = argv[1];
  ::mkdir(out.c_str(), 0755);
  struct Case {
    const char* name;
    double width, depth;
  };
  for (const Case& c : {Case{"b0", 1.0, 1.0}, Case{"b0_reduced", 0.25, 0.25}}) {
    torch::manual_seed(3);
    model::ModelConfig mc;
    mc.variant = "b0";
    mc.num_classes = 5;
    mc.extra_width = c.width;
    mc.extra_depth = c.depth;
    mc.dropout = 0.0;
    mc.drop_path = 0.0;
    model::EfficientNetV2 net(mc);
    {
      // Non-trivial BN statistics (and num_batches_tracked = 2) from two train-mode passes.
      torch::NoGradGuard g;
      net->train();
      net->forward(torch::randn({4, 3, 64, 64}));
      net->forward(torch::randn({4, 3, 64, 64}));
    }
    std::vector<std::pair<std::string, at::Tensor>> ema;
    for (const auto& item : formats::GetStateDict(*net)) {
      at::Tensor t = item.value().clone();
      if (t.is_floating_point() && item.key().find("running_var") == std::string::npos) {
        t.mul_(0.9);
      }
      ema.emplace_back(item.key(), t);
    }
    formats::CheckpointMeta meta;
    meta.model_name = std::string("EfficientNetV2-B0") + (c.width != 1.0 ? " (reduced)" : "");
    meta.model.variant = "b0";
    meta.model.num_classes = 5;
    meta.model.extra_width = c.width;
    meta.model.extra_depth = c.depth;
    meta.class_names = {"a", "b", "c", "d", "Ω e"};
    meta.config_yaml = "model: {variant: b0}\n";
    meta.epoch = 0;
    meta.next_epoch = 1;
    meta.fit_time_s = 1.25;
    formats::CheckpointSource source;
    source.model = net.ptr().get();
    source.ema = ema;
    source.ema_num_updates = 2;
    const std::string dir = out + "/" + c.name;
    auto st = formats::WriteCheckpoint(dir + "/checkpoints/epoch-0000", meta, source);
    if (!st.ok()) {
      std::cerr << st.ToString() << "\n";
      return 1;
    }
    torch::NoGradGuard g;
    net->eval();
    const at::Tensor x = torch::randn({2, 3, 64, 64});
    formats::StateDict expected;
    expected.insert("x", x);
    expected.insert("logits", net->forward(x));
    for (auto& item : formats::GetStateDict(*net)) {
      for (const auto& [name, t] : ema) {
        if (name == item.key()) item.value().copy_(t);
      }
    }
    expected.insert("ema_logits", net->forward(x));
    st = formats::WriteSafetensors(dir + "/expected.safetensors", expected);
    if (!st.ok()) {
      std::cerr << st.ToString() << "\n";
      return 1;
    }
    std::cout << c.name << ": " << formats::GetStateDict(*net).size() << " tensors written\n";
  }
  return 0;
}
