// Hashes and seed mixing shared by storage (content hashes, split seeds), the coordinator (train
// split fingerprint), the reducer (cross-rank shape check) and augmentation (per-sample seeds).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace effnet {

// FNV-1a 64 over `n` bytes, continuing from `state` (start with kFnvOffsetBasis).
inline constexpr uint64_t kFnvOffsetBasis = 14695981039346656037ULL;
inline constexpr uint64_t kFnvPrime = 1099511628211ULL;
inline uint64_t Fnv1a64(const void* data, size_t n, uint64_t state = kFnvOffsetBasis) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) state = (state ^ p[i]) * kFnvPrime;
  return state;
}
inline uint64_t Fnv1a64(std::string_view s, uint64_t state = kFnvOffsetBasis) {
  return Fnv1a64(s.data(), s.size(), state);
}

// SplitMix64 (Steele, Lea, Flood 2014): the finaliser alone mixes one word into a well spread one.
inline uint64_t SplitMix64Finalize(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
inline constexpr uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ULL;

// A SplitMix64 generator: a seeded, portable stream of 64-bit words.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() { return SplitMix64Finalize(state_ += kGoldenGamma); }
  // Uniform in [0, n) without modulo bias (n >= 1).
  uint64_t Below(uint64_t n) {
    const uint64_t limit = ~uint64_t{0} - (~uint64_t{0} % n);
    uint64_t v;
    do {
      v = Next();
    } while (v >= limit);
    return v % n;
  }
  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

}  // namespace effnet
