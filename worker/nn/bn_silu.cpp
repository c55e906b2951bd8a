#include "worker/nn/bn_silu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define EFFNET_BN_SILU_KERNELS 1
#define EFFNET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define EFFNET_INLINE \
  inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#endif

namespace effnet::nn {
namespace {

#ifdef EFFNET_BN_SILU_KERNELS

// The kernels are written for AVX-512 with BF16 (the CPUs where bf16 autocast and channels_last
// are on by default, worker/train/config.h); elsewhere FusedBatchNormSilu declines and BN, SiLU
// run apart.
bool HaveKernels() {
  static const bool have =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bf16");
  return have;
}

using Bf16 = uint16_t;  // the bits of an at::BFloat16

// Lanes [0, left) of the 16 from here on.
EFFNET_INLINE __mmask16 Lanes(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
}
EFFNET_INLINE __m512 Load(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
EFFNET_INLINE __m512 Load(const Bf16* p, __mmask16 m) {
  const __m256i v = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}
EFFNET_INLINE void Store(float* p, __mmask16 m, __m512 v) { _mm512_mask_storeu_ps(p, m, v); }
// Round to nearest even, NaN stays NaN (vcvtneps2bf16, as c10::BFloat16).
EFFNET_INLINE void Store(Bf16* p, __mmask16 m, __m512 v) {
  _mm256_mask_storeu_epi16(p, m, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
}

// Note [bf16 sigmoid]: what is stored in bf16 carries 2^-9 relative rounding, so for bf16
// tensors exp uses a cubic (7.5e-5 relative on the reduced range, a near-minimax fit) and the
// reciprocal rcp14 alone (2^-14); float tensors get Cephes' quintic (within 2 ulp) and rcp14
// with one Newton step (about 2^-28). 2^n comes from scalef, which also gives 0 at the low
// end of the range.
template <bool kFast>
EFFNET_INLINE __m512 Exp(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p;
  if constexpr (kFast) {
    p = _mm512_set1_ps(0.1656682973f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5049633672f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.000164204f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.9999280708f));
  } else {
    p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  }
  return _mm512_scalef_ps(p, n);
}
// 1 / (1 + exp(-z)). -z stops at 88 so that 1 + exp(-z) stays finite (the Newton step would
// make inf * 0); the sigmoid is 0 in float there anyway.
template <bool kFast>
EFFNET_INLINE __m512 Sigmoid(__m512 z) {
  const __m512 e =
      Exp<kFast>(_mm512_min_ps(_mm512_sub_ps(_mm512_setzero_ps(), z), _mm512_set1_ps(88.0f)));
  const __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), e);
  const __m512 r = _mm512_rcp14_ps(d);
  if constexpr (kFast) return r;
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
}
// dy * d silu(z) / dz = dy * s * (1 + z * (1 - s))
template <bool kFast>
EFFNET_INLINE __m512 SiluGrad(__m512 dy, __m512 z) {
  const __m512 s = Sigmoid<kFast>(z);
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_mul_ps(_mm512_mul_ps(dy, s), _mm512_fmadd_ps(z, _mm512_sub_ps(one, s), one));
}
template <typename T>
constexpr bool kFast = std::is_same_v<T, Bf16>;

// Rows (Note [channel period]) of float partial sums added into double.
constexpr int64_t kFlushRows = 128;

// out[j, j + 16) += v (the lanes in m).
EFFNET_INLINE void AddToDouble(double* out, __mmask16 m, __m512 v) {
  const __mmask8 lo = static_cast<__mmask8>(m), hi = static_cast<__mmask8>(m >> 8);
  const __m512d vlo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
  const __m512d vhi =
      _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  _mm512_mask_storeu_pd(out, lo, _mm512_add_pd(_mm512_maskz_loadu_pd(lo, out), vlo));
  _mm512_mask_storeu_pd(out + 8, hi, _mm512_add_pd(_mm512_maskz_loadu_pd(hi, out + 8), vhi));
}

// out1[j] += sum_r (x - shift), out2[j] += sum_r (x - shift)^2 over `rows` rows of `len`. Within
// a block of kFlushRows rows the sums for 16 positions stay in registers.
template <typename T>
EFFNET_AVX512 void StatsKernel(const T* x, int64_t rows, int64_t len, const float* shift,
                               double* out1, double* out2) {
  for (int64_t r0 = 0; r0 < rows; r0 += kFlushRows) {
    const int64_t r1 = std::min(rows, r0 + kFlushRows);
    for (int64_t j = 0; j < len; j += 16) {
      const __mmask16 m = Lanes(len - j);
      const __m512 sh = Load(shift + j, m);
      __m512 s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps();
      for (int64_t r = r0; r < r1; ++r) {
        const __m512 d = _mm512_maskz_sub_ps(m, Load(x + r * len + j, m), sh);
        s1 = _mm512_add_ps(s1, d);
        s2 = _mm512_fmadd_ps(d, d, s2);
      }
      AddToDouble(out1 + j, m, s1);
      AddToDouble(out2 + j, m, s2);
    }
  }
}

// y = silu(x * a + b)
template <typename T>
EFFNET_AVX512 void ApplyKernel(const T* x, T* y, int64_t rows, int64_t len, const float* a,
                               const float* b) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < len; j += 16) {
      const __mmask16 m = Lanes(len - j);
      const int64_t i = r * len + j;
      const __m512 z = _mm512_fmadd_ps(Load(x + i, m), Load(a + j, m), Load(b + j, m));
      Store(y + i, m, _mm512_mul_ps(z, Sigmoid<kFast<T>>(z)));
    }
  }
}

// g = dy * silu'(x * a + b), kept in g_out when it is not null; out1[j] += sum_r g,
// out2[j] += sum_r g * (x - mean). Row by row (the three streams stay sequential), with the
// float sums of a block in a scratch row.
template <typename T>
EFFNET_AVX512 void GradStatsKernel(const T* x, const T* dy, T* g_out, int64_t rows, int64_t len,
                                   const float* a, const float* b, const float* mean, double* out1,
                                   double* out2) {
  const int64_t padded = (len + 15) / 16 * 16;
  std::vector<float> scratch(static_cast<size_t>(2 * padded));
  float *a1 = scratch.data(), *a2 = scratch.data() + padded;
  for (int64_t r0 = 0; r0 < rows; r0 += kFlushRows) {
    const int64_t r1 = std::min(rows, r0 + kFlushRows);
    std::fill(scratch.begin(), scratch.end(), 0.0f);
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t j = 0; j < len; j += 16) {
        const __mmask16 m = Lanes(len - j);
        const int64_t i = r * len + j;
        const __m512 xv = Load(x + i, m);
        const __m512 g = SiluGrad<kFast<T>>(Load(dy + i, m),
                                            _mm512_fmadd_ps(xv, Load(a + j, m), Load(b + j, m)));
        if (g_out != nullptr) Store(g_out + i, m, g);
        _mm512_storeu_ps(a1 + j, _mm512_add_ps(_mm512_loadu_ps(a1 + j), g));
        _mm512_storeu_ps(a2 + j, _mm512_fmadd_ps(g, _mm512_sub_ps(xv, Load(mean + j, m)),
                                                 _mm512_loadu_ps(a2 + j)));
      }
    }
    for (int64_t j = 0; j < len; j += 16) {
      const __mmask16 m = Lanes(len - j);
      AddToDouble(out1 + j, m, _mm512_loadu_ps(a1 + j));
      AddToDouble(out2 + j, m, _mm512_loadu_ps(a2 + j));
    }
  }
}

// g (in place) = p * g + q * x + k
template <typename T>
EFFNET_AVX512 void GradInputKernel(const T* x, T* g, int64_t rows, int64_t len, const float* p,
                                   const float* q, const float* k) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < len; j += 16) {
      const __mmask16 m = Lanes(len - j);
      const int64_t i = r * len + j;
      const __m512 v =
          _mm512_fmadd_ps(Load(p + j, m), Load(g + i, m),
                          _mm512_fmadd_ps(Load(q + j, m), Load(x + i, m), Load(k + j, m)));
      Store(g + i, m, v);
    }
  }
}

// Note [channel period]: the kernels run along "rows" of per-position parameters. A row of C
// channels would leave a vector tail in every row (C = 24 is 16 + 8 lanes), which costs more
// than the arithmetic for the small C of the early stages. So a row is a period of
// P = C * 16 / gcd(C, 16) elements (a multiple of 16: 48 for C = 24), the per-channel parameters
// are repeated P / C times, and sums over the period fold back to channels. Rows that do not
// fill a last period go through the same kernel as one shorter row.
struct Layout {
  int64_t C, P, periods, tail;  // tail: elements after the last whole period
  explicit Layout(const at::Tensor& x) : C(x.size(1)) {
    P = C * (16 / std::gcd<int64_t>(C, 16));
    periods = x.numel() / P;
    tail = x.numel() - periods * P;
  }
  std::vector<float> Repeat(const std::vector<float>& v) const {
    std::vector<float> out(static_cast<size_t>(P));
    for (int64_t j = 0; j < P; ++j) out[j] = v[j % C];
    return out;
  }
};

// Per-channel sums: a fixed split of the periods into chunks (one per thread) summed in chunk
// order, so the result depends on the thread count only. chunk(e0, rows, len, ...) sums `rows`
// rows of `len` elements from element e0.
template <typename Chunk>
void ReduceRows(const Layout& l, std::vector<double>& s1, std::vector<double>& s2,
                const Chunk& chunk) {
  const int64_t P = l.P;
  const int64_t chunks =
      std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), l.periods / kFlushRows));
  std::vector<double> part(static_cast<size_t>(chunks * 2 * P), 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t r0 = l.periods * i / chunks, r1 = l.periods * (i + 1) / chunks;
      double* out = &part[i * 2 * P];
      chunk(r0 * P, r1 - r0, P, out, out + P);
      if (i == chunks - 1 && l.tail > 0) chunk(l.periods * P, 1, l.tail, out, out + P);
    }
  });
  s1.assign(static_cast<size_t>(l.C), 0.0);
  s2.assign(static_cast<size_t>(l.C), 0.0);
  for (int64_t i = 0; i < chunks; ++i) {
    for (int64_t j = 0; j < P; ++j) {
      s1[j % l.C] += part[i * 2 * P + j];
      s2[j % l.C] += part[i * 2 * P + P + j];
    }
  }
}

// Elementwise pass in parallel over periods, at least ~32k elements per task; fn(e0, rows, len).
template <typename Rows>
void ForRows(const Layout& l, const Rows& fn) {
  at::parallel_for(0, l.periods, std::max<int64_t>(1, 32768 / l.P),
                   [&](int64_t begin, int64_t end) { fn(begin * l.P, end - begin, l.P); });
  if (l.tail > 0) fn(l.periods * l.P, 1, l.tail);
}

template <typename T>
T* Data(const at::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

// Calls fn(T{}) with T the storage type of x (float or Bf16).
template <typename Fn>
void ByDtype(const at::Tensor& x, const Fn& fn) {
  if (x.scalar_type() == at::kFloat) {
    fn(float{});
  } else {
    fn(Bf16{});
  }
}

// An elementwise pass from x to out (same shape and storage type T):
// fn(const T* x rows, T* out rows, rows, len) over ForRows' blocks.
template <typename Fn>
void RowPass(const Layout& l, const at::Tensor& x, const at::Tensor& out, const Fn& fn) {
  ByDtype(x, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = Data<T>(x);
    T* op = Data<T>(out);
    ForRows(l, [&](int64_t e0, int64_t n, int64_t len) { fn(xp + e0, op + e0, n, len); });
  });
}

// y = silu(x * a + b), a and b per channel.
void Apply(const at::Tensor& x, const at::Tensor& y, const std::vector<float>& a,
           const std::vector<float>& b) {
  const Layout l(x);
  const std::vector<float> ra = l.Repeat(a), rb = l.Repeat(b);
  RowPass(l, x, y, [&](const auto* xr, auto* yr, int64_t n, int64_t len) {
    ApplyKernel(xr, yr, n, len, ra.data(), rb.data());
  });
}

at::Tensor FloatVector(const std::vector<float>& v) {
  return at::tensor(v, at::TensorOptions().dtype(at::kFloat));
}

std::vector<float> FromTensor(const at::Tensor& t) {
  const float* p = t.data_ptr<float>();
  return std::vector<float>(p, p + t.numel());
}

struct BnSiluTrain : public torch::autograd::Function<BnSiluTrain> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& weight, const at::Tensor& bias,
                            const at::Tensor& running_mean, const at::Tensor& running_var,
                            double momentum, double eps) {
    const Layout l(x);
    const int64_t C = l.C, rows = x.numel() / C;
    std::vector<float> shift(static_cast<size_t>(C));
    std::vector<double> s1, s2;
    ByDtype(x, [&](auto tag) {
      using T = decltype(tag);
      const T* xp = Data<T>(x);
      const at::Tensor first = x.select(0, 0).select(1, 0).select(1, 0).to(at::kFloat).contiguous();
      std::copy(first.data_ptr<float>(), first.data_ptr<float>() + C, shift.begin());
      const std::vector<float> rshift = l.Repeat(shift);
      ReduceRows(l, s1, s2, [&](int64_t e0, int64_t n, int64_t len, double* o1, double* o2) {
        StatsKernel(xp + e0, n, len, rshift.data(), o1, o2);
      });
    });
    std::vector<float> mean(C), invstd(C), a(C), b(C);
    const float* w = weight.data_ptr<float>();
    const float* bb = bias.data_ptr<float>();
    float* rm = running_mean.data_ptr<float>();
    float* rv = running_var.data_ptr<float>();
    const double n = static_cast<double>(rows);
    for (int64_t c = 0; c < C; ++c) {
      const double m1 = s1[c] / n;
      const double var = std::max(s2[c] / n - m1 * m1, 0.0);
      const double mu = shift[c] + m1;
      const double is = 1.0 / std::sqrt(var + eps);
      mean[c] = static_cast<float>(mu);
      invstd[c] = static_cast<float>(is);
      a[c] = static_cast<float>(w[c] * is);
      b[c] = static_cast<float>(bb[c] - mu * w[c] * is);
      rm[c] = static_cast<float>((1.0 - momentum) * rm[c] + momentum * mu);
      rv[c] = static_cast<float>((1.0 - momentum) * rv[c] + momentum * var * n / (n - 1.0));
    }
    at::Tensor y = at::empty_like(x);
    Apply(x, y, a, b);
    ctx->save_for_backward({x});
    ctx->saved_data["a"] = FloatVector(a);
    ctx->saved_data["b"] = FloatVector(b);
    ctx->saved_data["mean"] = FloatVector(mean);
    ctx->saved_data["invstd"] = FloatVector(invstd);
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    const at::Tensor dy = grads[0].to(x.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast);
    const Layout l(x);
    const int64_t C = l.C, rows = x.numel() / C;
    const std::vector<float> a = FromTensor(ctx->saved_data["a"].toTensor());
    const std::vector<float> b = FromTensor(ctx->saved_data["b"].toTensor());
    const std::vector<float> mean = FromTensor(ctx->saved_data["mean"].toTensor());
    const std::vector<float> invstd = FromTensor(ctx->saved_data["invstd"].toTensor());
    const std::vector<float> ra = l.Repeat(a), rb = l.Repeat(b);

    // Pass 1 keeps g (the gradient at the BN output) in dx's memory; pass 2 turns it into dx.
    const bool want_dx = ctx->needs_input_grad(0);
    at::Tensor dx = want_dx ? at::empty_like(x) : at::Tensor();
    std::vector<double> sum_g, sum_gx;
    ByDtype(x, [&](auto tag) {
      using T = decltype(tag);
      const T *xp = Data<T>(x), *dyp = Data<T>(dy);
      T* gp = want_dx ? Data<T>(dx) : nullptr;
      const std::vector<float> rmean = l.Repeat(mean);
      ReduceRows(l, sum_g, sum_gx, [&](int64_t e0, int64_t n, int64_t len, double* o1, double* o2) {
        GradStatsKernel(xp + e0, dyp + e0, gp == nullptr ? nullptr : gp + e0, n, len, ra.data(),
                        rb.data(), rmean.data(), o1, o2);
      });
    });
    // d weight = sum g * xhat, d bias = sum g, xhat = (x - mean) * invstd.
    std::vector<float> dw(C), db(C);
    for (int64_t c = 0; c < C; ++c) {
      dw[c] = static_cast<float>(sum_gx[c] * invstd[c]);
      db[c] = static_cast<float>(sum_g[c]);
    }
    if (want_dx) {
      // dx = a * (g - mean(g) - xhat * mean(g * xhat)) = p g + q x + k, p = a.
      const double n = static_cast<double>(rows);
      std::vector<float> q(C), k(C);
      for (int64_t c = 0; c < C; ++c) {
        const double mg = sum_g[c] / n;
        const double mgx = sum_gx[c] * invstd[c] / n;
        q[c] = static_cast<float>(-a[c] * invstd[c] * mgx);
        k[c] = static_cast<float>(-a[c] * mg + a[c] * invstd[c] * mgx * mean[c]);
      }
      const std::vector<float> rq = l.Repeat(q), rk = l.Repeat(k);
      RowPass(l, x, dx, [&](const auto* xr, auto* gr, int64_t n, int64_t len) {
        GradInputKernel(xr, gr, n, len, ra.data(), rq.data(), rk.data());
      });
    }
    return {dx,           FloatVector(dw), FloatVector(db), at::Tensor(),
            at::Tensor(), at::Tensor(),    at::Tensor()};
  }
};

// Below this many elements the fused node's fixed cost (autograd node, parameter rows, saved
// statistics) is more than the passes it saves: the tiny preset's 2-rank demo (batch 4 per
// rank, 48-64 px) ran 91 s fused against 54 s with the ATen ops. B0's smallest BN + SiLU at
// 224 px and batch 16 has 527k elements.
constexpr int64_t kFusedMinElements = int64_t{1} << 18;

bool IsFloatVector(const at::Tensor& t, int64_t C) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 1 &&
         t.size(0) == C && t.is_contiguous();
}

#endif  // EFFNET_BN_SILU_KERNELS

}  // namespace

at::Tensor FusedBatchNormSilu(BatchNorm2dImpl& bn, const at::Tensor& x) {
#ifndef EFFNET_BN_SILU_KERNELS
  return {};
#else
  if (!HaveKernels()) return {};
  if (bn.has_custom_forward() || !bn.options.affine() || !bn.options.track_running_stats()) {
    return {};
  }
  if (x.dim() != 4 || !x.device().is_cpu() || x.numel() < kFusedMinElements) return {};
  if (x.scalar_type() != at::kFloat && x.scalar_type() != at::kBFloat16) return {};
  if (!x.is_contiguous(at::MemoryFormat::ChannelsLast)) return {};
  const int64_t C = x.size(1), rows = x.numel() / C;
  for (const at::Tensor* t : {&bn.weight, &bn.bias, &bn.running_mean, &bn.running_var}) {
    if (!IsFloatVector(*t, C)) return {};
  }
  const double eps = bn.options.eps();
  if (bn.is_training()) {
    if (rows <= 1) return {};  // torch's own error: more than 1 value per channel
    double momentum = 0.0;
    {
      at::NoGradGuard no_grad;
      bn.num_batches_tracked += 1;
      momentum = bn.options.momentum().has_value() ? *bn.options.momentum()
                                                   : 1.0 / bn.num_batches_tracked.item<double>();
    }
    return BnSiluTrain::apply(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, momentum,
                              eps);
  }
  if (at::GradMode::is_enabled() &&
      (x.requires_grad() || bn.weight.requires_grad() || bn.bias.requires_grad())) {
    return {};
  }
  std::vector<float> a(C), b(C);
  const float *w = bn.weight.data_ptr<float>(), *bb = bn.bias.data_ptr<float>();
  const float *rm = bn.running_mean.data_ptr<float>(), *rv = bn.running_var.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    const double s = w[c] / std::sqrt(static_cast<double>(rv[c]) + eps);
    a[c] = static_cast<float>(s);
    b[c] = static_cast<float>(bb[c] - rm[c] * s);
  }
  at::Tensor y = at::empty_like(x);
  Apply(x, y, a, b);
  return y;
#endif
}

}  // namespace effnet::nn
