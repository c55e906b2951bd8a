// effnet-synth: a small synthetic data set in the study's CSV format.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "storage/synth.h"

int main(int argc, char** argv) {
  effnet::storage::SynthConfig c;
  std::string classes;
  for (const auto& n : effnet::storage::SynthClassNames()) {
    classes += (classes.empty() ? "" : ", ") + n;
  }
  CLI::App app{
      "effnet-synth: writes a synthetic data set in the study's format: <out>/synth.csv (columns\n"
      "uniq_id, product_name, product_category_tree, image) and <out>/images/<uniq_id>.jpg.\n"
      "7 classes (" +
      classes +
      ") of\n"
      "shapes and textures with random colours, positions, scales and backgrounds (not separable\n"
      "by mean colour). The same flags give the same files. Then:\n"
      "  effnet-prepare --csv <out>/synth.csv --images <out>/images --out data.h5"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  app.add_option("--out", c.out_dir, "output folder (created)")->required();
  app.add_option("--per-class", c.per_class, "images per class")->capture_default_str();
  app.add_option("--size", c.size, "image width = height in pixels")->capture_default_str();
  app.add_option("--seed", c.seed, "random seed")->capture_default_str();
  app.add_option("--jpeg-quality", c.jpeg_quality, "JPEG quality")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  auto s = effnet::storage::WriteSynthDataset(c);
  if (!s.ok()) {
    std::cerr << "effnet-synth: " << s.status().ToString() << "\n";
    return 1;
  }
  std::printf("effnet-synth: %lld images in %s, table %s\n", static_cast<long long>(s->images),
              s->images_dir.c_str(), s->csv_path.c_str());
  return 0;
}
