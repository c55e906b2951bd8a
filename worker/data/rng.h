// Host-side random numbers for augmentation parameters (crop boxes, op choices, mixup lambdas).
//
// Note [portable randomness]: std::*_distribution algorithms are implementation-defined, so the
// same seed could give different augmentations with another standard library. HostRng draws
// from std::mt19937_64 (whose output the standard fixes) and turns bits into numbers itself, so
// a seed means the same augmentation everywhere. Per-sample parameters are drawn on the host
// (a few numbers per image) and uploaded as small tensors; the pixel work runs batched on the
// training device.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>

#include "common/hash.h"

namespace effnet::data {

class HostRng {
 public:
  explicit HostRng(uint64_t seed = 0) : gen_(seed) {}
  // Seed from several integers (seed, epoch, step, rank, stream) with a SplitMix64 mix.
  static uint64_t Mix(uint64_t a, uint64_t b) {
    return SplitMix64Finalize(a + kGoldenGamma * (b + 1));
  }
  uint64_t Bits() { return gen_(); }
  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(gen_() >> 11) * 0x1.0p-53; }
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform(); }
  // Uniform integer in [0, n).
  int64_t Int(int64_t n) { return n <= 1 ? 0 : static_cast<int64_t>(Uniform() * n); }
  bool Bernoulli(double p) { return Uniform() < p; }
  double Normal() {
    // Box-Muller; u1 in (0, 1].
    const double u1 = 1.0 - Uniform(), u2 = Uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  }
  // Gamma(shape, 1) by Marsaglia-Tsang (shape < 1 boosted with U^(1/shape)).
  double Gamma(double shape) {
    if (shape < 1.0) {
      const double u = 1.0 - Uniform();
      return Gamma(shape + 1.0) * std::pow(u, 1.0 / shape);
    }
    const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
    while (true) {
      double x, v;
      do {
        x = Normal();
        v = 1.0 + c * x;
      } while (v <= 0);
      v = v * v * v;
      const double u = 1.0 - Uniform();
      if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return d * v;
    }
  }
  double Beta(double a, double b) {
    const double x = Gamma(a), y = Gamma(b);
    return x + y > 0 ? x / (x + y) : 0.5;
  }

 private:
  std::mt19937_64 gen_;
};

}  // namespace effnet::data
