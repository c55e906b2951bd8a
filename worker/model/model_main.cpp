// effnet-model: the resolved architecture of a variant, its parameter count and MACs.
//   effnet-model --variant b2 --classes 7 [--image 260] [--json]
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/status.h"
#include "worker/model/efficientnet.h"

int main(int argc, char** argv) {
  using namespace effnet::model;
  CLI::App app{"EfficientNetV2 architecture summary: parameters, MACs, blocks per stage"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  ModelConfig cfg;
  cfg.num_classes = 1000;  // timm's ImageNet head
  int image = 0;
  bool json = false;
  app.add_option("--variant", cfg.variant, "EfficientNetV2 variant")
      ->check(CLI::IsMember(KnownVariants()))
      ->capture_default_str();
  app.add_option("--classes", cfg.num_classes, "classifier outputs")->capture_default_str();
  app.add_option("--image", image, "square image side (default: the variant's eval size)");
  app.add_option("--extra-width", cfg.extra_width, "extra width multiplier")->capture_default_str();
  app.add_option("--extra-depth", cfg.extra_depth, "extra depth multiplier")->capture_default_str();
  app.add_flag("--json", json, "print one JSON object");
  CLI11_PARSE(app, argc, argv);
  try {
    effnet::ThrowIfError(ValidateConfig(cfg));
    if (image <= 0) image = ReferenceEvalImageSize(cfg.variant);
    const Architecture arch = ResolveArchitecture(cfg);
    // Built for real: the module's count must equal the analytic one.
    EfficientNetV2 model(cfg);
    const int64_t params = CountParameters(*model);
    const int64_t analytic = CountParametersAnalytic(cfg);
    if (params != analytic) {
      throw effnet::StatusError(
          effnet::Internal("parameter count of the built module (" + std::to_string(params) +
                           ") differs from the architecture's (" + std::to_string(analytic) + ")"));
    }
    const int64_t macs = CountMacs(cfg, image);
    nlohmann::ordered_json j;
    j["variant"] = cfg.variant;
    j["classes"] = cfg.num_classes;
    j["image"] = image;
    j["parameters"] = params;
    j["macs"] = macs;
    j["gmacs"] = static_cast<double>(macs) / 1e9;
    j["stem_channels"] = arch.stem_channels;
    j["head_channels"] = arch.head_channels;
    j["num_blocks"] = arch.num_blocks();
    j["dropout"] = model->dropout();
    j["stages"] = nlohmann::json::array();
    for (const auto& s : arch.stages) {
      j["stages"].push_back({{"type", s.block_type},
                             {"out_channels", s.out_channels},
                             {"repeats", s.repeats},
                             {"stride", s.stride},
                             {"expansion", s.expansion},
                             {"se", s.se}});
    }
    if (json) {
      std::cout << j.dump(2) << std::endl;
      return 0;
    }
    std::printf("EfficientNetV2-%s, %d classes, %dx%d\n", cfg.variant.c_str(), cfg.num_classes,
                image, image);
    std::printf("parameters %lld, MACs %.3f G, stem %d, head %d, %d blocks\n",
                static_cast<long long>(params), macs / 1e9, arch.stem_channels, arch.head_channels,
                arch.num_blocks());
    std::printf("%-6s %-5s %-4s %-7s %-7s %-3s\n", "stage", "type", "exp", "stride", "out x r",
                "se");
    for (size_t i = 0; i < arch.stages.size(); ++i) {
      const auto& s = arch.stages[i];
      std::printf("%-6zu %-5s %-4d %-7d %dx%-5d %-3s\n", i, s.block_type.c_str(), s.expansion,
                  s.stride, s.out_channels, s.repeats, s.se ? "yes" : "no");
    }
    return 0;
  } catch (const effnet::StatusError& e) {
    std::cerr << "effnet-model: " << e.what() << std::endl;
    return 2;
  }
}
