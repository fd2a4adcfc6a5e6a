// The bf16 attention chunk of the fast CPU backend (Kernels::attend_chunk_bf16, contract: fast_kernels.h):
// AVX512_BF16 dot products (vdpbf16ps: 16 fp32 lanes, each += a pair of bf16 products), twice the FMA rate's
// multiply-adds per instruction. Used when q, k, v and out are bf16 (it reads the inputs' values exactly).
//
//   Q K^T:  S^T (12 keys, 32 rows) = 24 accumulators; per pair of d, 2 loads of Q pairs + 12 broadcasts of a
//           K pair, 24 dot products; scores times scale * log2(e) on the way out (16-row blocks at the tail).
//   softmax: the AVX-512 set's, on the fp32 scores.
//   P V:    P rounded to bf16 (round to nearest even) and paired by consecutive keys of the chunk, V paired
//           the same way (a zero key pads an odd count); O (12 rows, 32 dims) = 24 accumulators, per key pair
//           2 loads of V pairs + 12 broadcasts of a P pair, 24 dot products. l keeps the fp32 probabilities.
// Every sum is fp32. The only rounding beyond the AVX2 set's is P to bf16, as GPU flash-attention kernels do;
// tests/cpu_fast_test.cpp holds the outputs to the per-row rounding check. Stage 1 (sample_rows_bf16) takes
// its scores the same way and then runs the AVX-512 set's fp32 softmax and sums: no rounding of P there.
#include <cstdint>
#include <cstring>

#include "cpu/fast_kernels.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define SA_HAVE_BF16_KERNELS 1
#include <cpuid.h>
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 reports the intrinsics' own _mm512_undefined_* placeholders as maybe-uninitialized once inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif

namespace sampleattn::cpu::fast {

#ifdef SA_HAVE_BF16_KERNELS
namespace {

#define SA_BF16 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")))

constexpr int kKeys = 12;    // keys per Q K^T block
constexpr int kPvRows = 12;  // query rows per P V block

SA_BF16 inline __m512 dot(__m512 acc, __m512i a, __m512i b) {
  return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(a), reinterpret_cast<__m512bh>(b));
}

SA_BF16 inline __m512i broadcast_word(const void* p) {
  std::int32_t w;
  std::memcpy(&w, p, sizeof w);
  return _mm512_set1_epi32(w);
}

// S^T (R keys, 16 W rows) at s (ld rp) = scale * K rows k[0..R) . Q^T pairs (dim_pairs, 16 W columns at qp).
template <int R, int W>
SA_BF16 inline void qk_block(const std::uint32_t* qp, int rp, int d2, const std::uint16_t* const* k, float scale,
                             float* s) {
  __m512 a[R][W];
  const std::uint16_t* kr[R];
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r) {
    kr[r] = k[r];
#pragma GCC unroll 2
    for (int w = 0; w < W; ++w) a[r][w] = _mm512_setzero_ps();
  }
#pragma GCC unroll 2
  for (int c = 0; c < d2; ++c) {
    __m512i q[W];
#pragma GCC unroll 2
    for (int w = 0; w < W; ++w) q[w] = _mm512_loadu_si512(qp + static_cast<std::int64_t>(c) * rp + 16 * w);
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
      const __m512i b = broadcast_word(kr[r] + 2 * c);
#pragma GCC unroll 2
      for (int w = 0; w < W; ++w) a[r][w] = dot(a[r][w], b, q[w]);
    }
  }
  const __m512 sc = _mm512_set1_ps(scale);
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int w = 0; w < W; ++w)
      _mm512_storeu_ps(s + static_cast<std::int64_t>(r) * rp + 16 * w, _mm512_mul_ps(a[r][w], sc));
}

template <int W, int R>
SA_BF16 inline void qk_rest(int left, const std::uint32_t* qp, int rp, int d2, const std::uint16_t* const* k,
                            float scale, float* s) {
  if constexpr (R > 0) {
    if (left == R) {
      qk_block<R, W>(qp, rp, d2, k, scale, s);
      return;
    }
    qk_rest<W, R - 1>(left, qp, rp, d2, k, scale, s);
  }
}

template <int W>
SA_BF16 void qk_rows(const std::uint32_t* qp, int rp, int d2, const std::uint16_t* const* k, int n, float scale,
                     float* s) {
  int j = 0;
  for (; j + kKeys <= n; j += kKeys)
    qk_block<kKeys, W>(qp, rp, d2, k + j, scale, s + static_cast<std::int64_t>(j) * rp);
  qk_rest<W, kKeys - 1>(n - j, qp, rp, d2, k + j, scale, s + static_cast<std::int64_t>(j) * rp);
}

SA_BF16 void scores(const QueryTile& t, const KeyChunk& c) {
  const int rp = t.rows_padded;
  int ib = 0;
  for (; ib + 32 <= rp; ib += 32) qk_rows<2>(t.qp + ib, rp, t.dim_pairs, c.k16, c.n, t.q_scale, t.s + ib);
  for (; ib < rp; ib += 16) qk_rows<1>(t.qp + ib, rp, t.dim_pairs, c.k16, c.n, t.q_scale, t.s + ib);
}

// P pairs (n/2 rounded up, rp) words: word (jj, i) = bf16(P[2jj][i]) | bf16(P[2jj + 1][i]) << 16 (zero for a
// key past n). V pairs (n/2 rounded up, dp) words: word (jj, x) = V[2jj][x] | V[2jj + 1][x] << 16.
SA_BF16 void make_pairs(const QueryTile& t, const KeyChunk& c, std::uint32_t* pp, std::uint32_t* vp) {
  const int rp = t.rows_padded, dp = t.dim_padded, pairs = (c.n + 1) / 2;
  // cvtne2ps_pbh(hi, lo) puts lo's 16 values in words 0..15 and hi's in 16..31; interleave them.
  alignas(64) static constexpr std::uint16_t kInterleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,
                                                                21, 6, 22, 7, 23, 8,  24, 9,  25, 10, 26,
                                                                11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i order = _mm512_load_si512(kInterleave);
  for (int jj = 0; jj < pairs; ++jj) {
    const float* s0 = t.s + static_cast<std::int64_t>(2 * jj) * rp;
    const bool second = 2 * jj + 1 < c.n;
    for (int ib = 0; ib < rp; ib += 16) {
      const __m512 p0 = _mm512_loadu_ps(s0 + ib);
      const __m512 p1 = second ? _mm512_loadu_ps(s0 + rp + ib) : _mm512_setzero_ps();
      const __m512i both = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(p1, p0));
      _mm512_storeu_si512(pp + static_cast<std::int64_t>(jj) * rp + ib, _mm512_permutexvar_epi16(order, both));
    }
    const std::uint16_t* v0 = c.v16[2 * jj];
    const std::uint16_t* v1 = second ? c.v16[2 * jj + 1] : nullptr;
    for (int x = 0; x < dp; x += 16) {
      const __mmask16 lanes = dp - x >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>(0x00ff);
      const __m512i w0 = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(lanes, v0 + x));
      const __m512i w1 =
          v1 != nullptr ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(lanes, v1 + x)) : _mm512_setzero_si512();
      _mm512_mask_storeu_epi32(vp + static_cast<std::int64_t>(jj) * dp + x, lanes,
                               _mm512_or_si512(w0, _mm512_slli_epi32(w1, 16)));
    }
  }
}

// O (R rows, V vectors of 16 dims at x0; the last vector's lanes limited by `last`) = O * corr + P . V.
template <int R, int V>
SA_BF16 inline void pv_block(const std::uint32_t* pp, int rp, const float* corr, int pairs, const std::uint32_t* vp,
                             int x0, __mmask16 last, float* o, int dp) {
  __m512 a[R][V];
  __mmask16 lanes[V];
#pragma GCC unroll 2
  for (int u = 0; u < V; ++u) lanes[u] = u == V - 1 ? last : static_cast<__mmask16>(0xffff);
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r) {
    const __m512 cr = _mm512_set1_ps(corr[r]);
#pragma GCC unroll 2
    for (int u = 0; u < V; ++u)
      a[r][u] = _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes[u], o + static_cast<std::int64_t>(r) * dp + x0 + 16 * u), cr);
  }
  for (int jj = 0; jj < pairs; ++jj) {
    __m512i vv[V];
#pragma GCC unroll 2
    for (int u = 0; u < V; ++u)
      vv[u] = _mm512_maskz_loadu_epi32(lanes[u], vp + static_cast<std::int64_t>(jj) * dp + x0 + 16 * u);
    const std::uint32_t* pj = pp + static_cast<std::int64_t>(jj) * rp;
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
      const __m512i b = broadcast_word(pj + r);
#pragma GCC unroll 2
      for (int u = 0; u < V; ++u) a[r][u] = dot(a[r][u], b, vv[u]);
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int u = 0; u < V; ++u)
      _mm512_mask_storeu_ps(o + static_cast<std::int64_t>(r) * dp + x0 + 16 * u, lanes[u], a[r][u]);
}

template <int V, int R>
SA_BF16 inline void pv_rest(int left, const std::uint32_t* pp, int rp, const float* corr, int pairs,
                            const std::uint32_t* vp, int x0, __mmask16 last, float* o, int dp) {
  if constexpr (R > 0) {
    if (left == R) {
      pv_block<R, V>(pp, rp, corr, pairs, vp, x0, last, o, dp);
      return;
    }
    pv_rest<V, R - 1>(left, pp, rp, corr, pairs, vp, x0, last, o, dp);
  }
}

template <int V>
SA_BF16 void pv_columns(const QueryTile& t, const std::uint32_t* pp, const std::uint32_t* vp, int pairs, int x0,
                        __mmask16 last) {
  const int rp = t.rows_padded, dp = t.dim_padded;
  int i = 0;
  for (; i + kPvRows <= t.rows; i += kPvRows)
    pv_block<kPvRows, V>(pp + i, rp, t.corr + i, pairs, vp, x0, last, t.o + static_cast<std::int64_t>(i) * dp, dp);
  pv_rest<V, kPvRows - 1>(t.rows - i, pp + i, rp, t.corr + i, pairs, vp, x0, last,
                          t.o + static_cast<std::int64_t>(i) * dp, dp);
}

SA_BF16 void attend_chunk_bf16(const QueryTile& t, const KeyChunk& c) {
  scores(t, c);
  avx512_softmax_step(t, c);
  std::uint32_t* pp = t.pairs;
  std::uint32_t* vp = t.pairs + static_cast<std::int64_t>(kChunk / 2) * t.rows_padded;
  make_pairs(t, c, pp, vp);
  const int pairs = (c.n + 1) / 2;
  int x0 = 0;
  for (; x0 + 32 <= t.dim_padded; x0 += 32) pv_columns<2>(t, pp, vp, pairs, x0, 0xffff);
  if (x0 < t.dim_padded) {  // 8, 16 or 24 dims left (dim_padded is a multiple of 8)
    const int left = t.dim_padded - x0;
    if (left > 16) {
      pv_columns<2>(t, pp, vp, pairs, x0, 0x00ff);
    } else {
      pv_columns<1>(t, pp, vp, pairs, x0, left == 16 ? 0xffff : 0x00ff);
    }
  }
}

// Stage 1 (SampleTile) from bf16 pairs: scores of the 16 rows against keys [0, end) by bf16 dot products,
// then the AVX-512 set's softmax and column sums.
SA_BF16 void sample_rows_bf16(const SampleTile& t) {
  const std::uint16_t* ptrs[kChunk];
  for (std::int64_t j0 = 0; j0 < t.end; j0 += kChunk) {
    const int n = static_cast<int>(t.end - j0 < kChunk ? t.end - j0 : kChunk);
    for (int r = 0; r < n; ++r) ptrs[r] = t.k16 + (j0 + r) * t.k16_ld;
    qk_rows<1>(t.qp, kLanes, t.dim_pairs, ptrs, n, t.q_scale, t.s + j0 * kLanes);
  }
  avx512_sample_rows_from_scores(t);
}

#undef SA_BF16

// CPUID leaf 7 subleaf 1 EAX bit 5: AVX512_BF16 (the OS state checks are avx512_kernels()').
bool cpu_supports_avx512_bf16() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d) == 0) return false;
  return (a & (1u << 5)) != 0;
}

// CPUID leaf 0: the vendor string in EBX, EDX, ECX.
bool cpu_is_amd() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(0, &a, &b, &c, &d) == 0) return false;
  return b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u;  // "Auth" "enti" "cAMD"
}

}  // namespace

bool bf16_dot_preferred() {
  static const bool preferred = avx512_bf16_kernels() != nullptr && cpu_is_amd();
  return preferred;
}

const Kernels* avx512_bf16_kernels() {
  static const Kernels* const set = []() -> const Kernels* {
    const Kernels* base = avx512_kernels();
    if (base == nullptr || !cpu_supports_avx512_bf16()) return nullptr;
    static const Kernels k{"avx512bf16",      base->convert_row, base->store_row, base->attend_chunk,
                           base->sample_rows, attend_chunk_bf16, sample_rows_bf16};
    return &k;
  }();
  return set;
}

#else

const Kernels* avx512_bf16_kernels() { return nullptr; }
bool bf16_dot_preferred() { return false; }

#endif

}  // namespace sampleattn::cpu::fast
