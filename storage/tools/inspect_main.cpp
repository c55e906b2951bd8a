// effnet-inspect: what an effnet HDF5 image store holds, and whether its splits leak.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "storage/inspect.h"

int main(int argc, char** argv) {
  std::string path;
  bool json = false;
  int near = 4;
  CLI::App app{
      "effnet-inspect: image count, classes, per-split per-class counts, storage size, schema\n"
      "version and duplicate groups across splits (recomputed from the stored content hashes;\n"
      "must be 0) of an effnet HDF5 image store. Exit status: 0 ok, 1 unreadable or foreign\n"
      "file, 3 duplicate groups across splits, 2 bad flags."};
  app.option_defaults()->always_capture_default();  // --help shows every default
  app.add_option("file", path, "the .h5 store")->required();
  app.add_flag("--json", json, "print JSON instead of text");
  app.add_option("--near-dup-distance", near,
                 "count near-duplicate pairs across splits within this dHash distance (-1: off)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  auto report = effnet::storage::Inspect(path, near);
  if (!report.ok()) {
    std::cerr << "effnet-inspect: " << report.status().ToString() << "\n";
    return 1;
  }
  const std::string out =
      json ? effnet::storage::ToJson(*report) : effnet::storage::ToText(*report);
  std::fputs(out.c_str(), stdout);
  return report->duplicate_groups_across_splits == 0 ? 0 : 3;
}
