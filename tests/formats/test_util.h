// Helpers for the model and formats tests: a temporary directory, a reduced B0 config, and
// state dict equality.
#pragma once

#include <ftw.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <stdexcept>
#include <string>

#include "worker/formats/state_dict.h"
#include "worker/model/efficientnet.h"

namespace effnet::formats_test {

// Note [no std::filesystem]: the torch wheel's libtorch.so exports its own std::filesystem
// symbols and calls into them crashed (seen: remove_all segfaults), so tests use POSIX calls.
struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/effnet_model_test_XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() { RemoveAll(path); }
  // Removes `p` and everything under it.
  static void RemoveAll(const std::string& p) {
    ::nftw(
        p.c_str(), [](const char* f, const struct stat*, int, struct FTW*) { return ::remove(f); },
        16, FTW_DEPTH | FTW_PHYS);
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
  std::string path;
};

// Reduced B0 for fast CPU tests: 6 stages, 1 block each, narrow.
inline model::ModelConfig Tiny(int classes = 10) {
  model::ModelConfig c;
  c.variant = "b0";
  c.num_classes = classes;
  c.extra_width = 0.25;
  c.extra_depth = 0.34;
  c.drop_path = 0.0;
  c.dropout = 0.0;
  return c;
}

inline bool SameStateDict(const formats::StateDict& a, const formats::StateDict& b) {
  if (a.size() != b.size()) return false;
  for (const auto& item : a) {
    const at::Tensor* o = b.find(item.key());
    if (!o || !item.value().equal(*o)) return false;
  }
  return true;
}

}  // namespace effnet::formats_test
