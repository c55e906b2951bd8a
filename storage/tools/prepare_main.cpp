// effnet-prepare: images (a CSV of the study's format, or one folder per class) -> HDF5 store.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "common/log.h"
#include "storage/inspect.h"
#include "storage/prepare.h"

int main(int argc, char** argv) {
  using namespace effnet::storage;
  PrepareConfig c;
  std::string resize = "squash", progress = "auto";
  CLI::App app{
      "effnet-prepare: decode images (OpenCV, all cores), resize them to S x S RGB, split them\n"
      "(stratified, seeded; identical images kept in one split) and write an effnet HDF5 image\n"
      "store (docs/hdf5-layout.md). Rejected inputs are logged and listed in <out>.rejected.csv;\n"
      "duplicate reports go to <out>.duplicates.csv. The store appears under --out only when\n"
      "complete. Exit status: 0 ok, 1 failure (or any rejection with --strict), 2 bad flags.\n\n"
      "  effnet-prepare --csv data.csv --images DIR --out data.h5\n"
      "  effnet-prepare --folders DIR --out data.h5   (DIR/<class>/<image files>)"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  app.add_option("--csv", c.csv_path, "CSV table (RFC 4180), one row per image");
  app.add_option("--images", c.images_dir, "folder holding the CSV's image files");
  app.add_option("--label-column", c.label_column,
                 "CSV column of the label; its first category is used: "
                 "'[\"A >> B >> ...\"]' -> 'A'")
      ->capture_default_str();
  app.add_option("--image-column", c.image_column, "CSV column of the image file name")
      ->capture_default_str();
  app.add_option("--folders", c.folders_dir, "one sub-folder per class, instead of --csv");
  app.add_option("--out", c.out_path, "output .h5 file")->required();
  app.add_option("--size", c.image_size, "stored image size S (S x S x 3)")->capture_default_str();
  app.add_option("--resize", resize, "squash | center-crop | pad")->capture_default_str();
  app.add_option("--pad-value", c.pad_value, "grey level of the border for --resize pad")
      ->capture_default_str();
  app.add_option("--seed", c.split.seed, "split seed")->capture_default_str();
  app.add_option("--test-fraction", c.split.test_fraction, "share of each class put in test")
      ->capture_default_str();
  app.add_option("--val-fraction", c.split.val_fraction,
                 "share of each class's non-test images put in val")
      ->capture_default_str();
  app.add_flag("--augment-offline", c.augment_offline,
               "add horizontal-flip, vertical-flip and 90-degree-rotation copies of every train "
               "and val image (the study's offline augmentation; never test)");
  app.add_option("--max-pixels", c.max_pixels, "reject images with more pixels than this")
      ->capture_default_str();
  app.add_option("--near-dup-distance", c.near_duplicate_distance,
                 "report images in different splits whose 64-bit dHashes differ in at most this "
                 "many bits (-1: off)")
      ->capture_default_str();
  app.add_flag("--allow-outside-images", c.allow_outside_images,
               "accept CSV image names that leave --images (absolute, or with '..')");
  app.add_flag("--strict", c.strict, "fail (exit 1, no output) if any input is rejected");
  app.add_option("--threads", c.threads, "decode threads (0: all cores)")->capture_default_str();
  app.add_option("--progress", progress, "auto | bar | lines")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  auto mode = ParseResizeMode(resize);
  if (!mode.ok()) {
    std::cerr << "effnet-prepare: " << mode.status().message() << "\n";
    return 2;
  }
  c.resize = *mode;
  c.progress_tty = progress == "bar" ? 1 : progress == "lines" ? 0 : -1;

  auto summary = RunPrepare(c);
  if (!summary.ok()) {
    effnet::log::Error("effnet-prepare: " + summary.status().ToString());
    return 1;
  }
  const auto& s = *summary;
  std::printf(
      "effnet-prepare: stored %lld images (%lld originals of %lld inputs, %zu rejected) in "
      "%s\n  decode %.1f img/s (%.2f s), total %.2f s; %lld groups of identical images (kept in "
      "one split), %lld near-duplicate pairs across splits\n  rejected list: %s\n  duplicates: "
      "%s\n\n",
      static_cast<long long>(s.stored_total), static_cast<long long>(s.stored_originals),
      static_cast<long long>(s.candidates), s.rejections.size(), c.out_path.c_str(),
      s.decode_seconds > 0 ? s.candidates / s.decode_seconds : 0.0, s.decode_seconds,
      s.total_seconds, static_cast<long long>(s.exact_duplicate_groups),
      static_cast<long long>(s.near_duplicate_pairs), s.rejected_csv.c_str(),
      s.duplicates_csv.c_str());
  auto report = Inspect(c.out_path, -1);
  if (!report.ok()) {
    effnet::log::Error("effnet-prepare: re-reading the output: " + report.status().ToString());
    return 1;
  }
  std::fputs(ToText(*report).c_str(), stdout);
  return 0;
}
