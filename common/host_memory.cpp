#include "common/host_memory.h"

#include <cstdlib>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace effnet {

std::string KeepFreedHostMemory() {
#if defined(__GLIBC__)
  // An explicit GLIBC_TUNABLES setting of either threshold wins (Note [host allocator]).
  if (const char* t = std::getenv("GLIBC_TUNABLES")) {
    const std::string s = t;
    if (s.find("mmap_threshold") != std::string::npos ||
        s.find("trim_threshold") != std::string::npos) {
      return "GLIBC_TUNABLES sets the malloc thresholds";
    }
  }
  constexpr int kMaxMmapThreshold = 32 * 1024 * 1024;  // glibc's limit on 64-bit: HEAP_MAX / 2
  if (mallopt(M_MMAP_THRESHOLD, kMaxMmapThreshold) != 1) return "mallopt(M_MMAP_THRESHOLD) refused";
  if (mallopt(M_TRIM_THRESHOLD, 1 << 30) != 1) return "mallopt(M_TRIM_THRESHOLD) refused";
  return "";
#else
  return "not glibc malloc";
#endif
}

}  // namespace effnet
