// AVX-512 kernels of the fast CPU backend (contract: fast_kernels.h): attention chunks and stage-1 tiles with
// 16 query rows per zmm vector (kLanes), 32 vector registers. Row conversion and stores are the AVX2 set's
// (memory-bound). Per-function target attributes, as in fast_kernels_avx2.cpp: the library still runs where
// AVX-512 is missing (avx512_kernels() then returns null).
//
// Register blocking (32 zmm registers):
//   Q K^T:  S^T (12 keys, 32 rows) = 24 accumulators; per d step 2 loads of Q^T + 12 broadcasts of K, 24 FMAs
//           (16 rows, one vector, where the tile has fewer than 32 rows left).
//   P V:    O (12 rows, 32 dims) = 24 accumulators; per key 2 loads of V + 12 broadcasts of P, 24 FMAs.
// Every score, probability and output element is computed with the same operations in the same order as in
// the AVX2 set (the d sum and the key sum run in order per element, the same exp2 polynomial, the same two
// row-sum accumulators), so attention outputs are bit-identical to it; tests/cpu_fast_test.cpp checks that.
// Stage 1's column sums add the rows in another order (fp32 rounding differs; the totals are kept in fp64).
#include <cstdint>
#include <limits>

#include "cpu/fast_kernels.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define SA_HAVE_AVX512_KERNELS 1
#include <cpuid.h>
#include <immintrin.h>

#include "cpu/fast_simd_x86.h"
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 reports the intrinsics' own _mm512_undefined_* placeholders as maybe-uninitialized once inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif

namespace sampleattn::cpu::fast {

#ifdef SA_HAVE_AVX512_KERNELS
namespace {

#define SA_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,f16c")))

constexpr int kKeys = 12;     // keys per Q K^T block
constexpr int kPvRows = 12;   // query rows per P V block

// 2^x as exp2_ps of fast_kernels_avx2.cpp, 16 lanes: the same clamp, rounding and polynomial.
SA_AVX512 inline __m512 exp2_ps(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-127.0f));
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);
  __m512 p = _mm512_set1_ps(kExp2Poly[0]);
#pragma GCC unroll 6
  for (int i = 1; i < 7; ++i) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2Poly[i]));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

SA_AVX512 inline __m256 fold(__m512 x) {
  return _mm256_add_ps(_mm512_castps512_ps256(x), _mm512_extractf32x8_ps(x, 1));
}

// S^T (R keys, 16 W rows) at s (ld rp) = K rows k[0..R) . Q^T (d, 16 W columns starting at qt, ld rp).
template <int R, int W>
SA_AVX512 inline void qk_block(const float* qt, int rp, int d, const float* const* k, float* s) {
  __m512 a[R][W];
  const float* kr[R];
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r) {
    kr[r] = k[r];
#pragma GCC unroll 2
    for (int w = 0; w < W; ++w) a[r][w] = _mm512_setzero_ps();
  }
#pragma GCC unroll 2
  for (int c = 0; c < d; ++c) {
    __m512 q[W];
#pragma GCC unroll 2
    for (int w = 0; w < W; ++w) q[w] = _mm512_loadu_ps(qt + static_cast<std::int64_t>(c) * rp + 16 * w);
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
      const __m512 b = _mm512_set1_ps(kr[r][c]);
#pragma GCC unroll 2
      for (int w = 0; w < W; ++w) a[r][w] = _mm512_fmadd_ps(b, q[w], a[r][w]);
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int w = 0; w < W; ++w) _mm512_storeu_ps(s + static_cast<std::int64_t>(r) * rp + 16 * w, a[r][w]);
}

// The last `left` (< kKeys) keys of a row block.
template <int W, int R>
SA_AVX512 inline void qk_rest(int left, const float* qt, int rp, int d, const float* const* k, float* s) {
  if constexpr (R > 0) {
    if (left == R) {
      qk_block<R, W>(qt, rp, d, k, s);
      return;
    }
    qk_rest<W, R - 1>(left, qt, rp, d, k, s);
  }
}

template <int W>
SA_AVX512 void qk_rows(const float* qt, int rp, int d, const float* const* k, int n, float* s) {
  int j = 0;
  for (; j + kKeys <= n; j += kKeys) qk_block<kKeys, W>(qt, rp, d, k + j, s + static_cast<std::int64_t>(j) * rp);
  qk_rest<W, kKeys - 1>(n - j, qt, rp, d, k + j, s + static_cast<std::int64_t>(j) * rp);
}

// S^T (n, rp) = K (n keys by row pointer, d) . Q^T (d, rp); rp a multiple of 16.
SA_AVX512 void scores(const float* qt, int rp, int d, const float* const* k, int n, float* s) {
  int ib = 0;
  for (; ib + 32 <= rp; ib += 32) qk_rows<2>(qt + ib, rp, d, k, n, s + ib);
  for (; ib < rp; ib += 16) qk_rows<1>(qt + ib, rp, d, k, n, s + ib);
}

// O (R rows, V vectors of 16 dims at x0; the last vector's lanes limited by `last`) = O * corr + P . V.
template <int R, int V>
SA_AVX512 inline void pv_block(const float* s, int rp, const float* corr, int n, const float* const* v, int x0,
                               __mmask16 last, float* o, int dp) {
  __m512 a[R][V];
  __mmask16 lanes[V];
#pragma GCC unroll 2
  for (int u = 0; u < V; ++u) lanes[u] = u == V - 1 ? last : static_cast<__mmask16>(0xffff);
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r) {
    const __m512 c = _mm512_set1_ps(corr[r]);
#pragma GCC unroll 2
    for (int u = 0; u < V; ++u)
      a[r][u] = _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes[u], o + static_cast<std::int64_t>(r) * dp + x0 + 16 * u), c);
  }
  for (int j = 0; j < n; ++j) {
    const float* vr = v[j] + x0;
    __m512 vv[V];
#pragma GCC unroll 2
    for (int u = 0; u < V; ++u) vv[u] = _mm512_maskz_loadu_ps(lanes[u], vr + 16 * u);
    const float* pj = s + static_cast<std::int64_t>(j) * rp;
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
      const __m512 b = _mm512_set1_ps(pj[r]);
#pragma GCC unroll 2
      for (int u = 0; u < V; ++u) a[r][u] = _mm512_fmadd_ps(b, vv[u], a[r][u]);
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int u = 0; u < V; ++u)
      _mm512_mask_storeu_ps(o + static_cast<std::int64_t>(r) * dp + x0 + 16 * u, lanes[u], a[r][u]);
}

template <int V, int R>
SA_AVX512 inline void pv_rest(int left, const float* s, int rp, const float* corr, int n, const float* const* v,
                              int x0, __mmask16 last, float* o, int dp) {
  if constexpr (R > 0) {
    if (left == R) {
      pv_block<R, V>(s, rp, corr, n, v, x0, last, o, dp);
      return;
    }
    pv_rest<V, R - 1>(left, s, rp, corr, n, v, x0, last, o, dp);
  }
}

template <int V>
SA_AVX512 void pv_columns(const QueryTile& t, const KeyChunk& c, int x0, __mmask16 last) {
  const int rp = t.rows_padded, dp = t.dim_padded;
  int i = 0;
  for (; i + kPvRows <= t.rows; i += kPvRows)
    pv_block<kPvRows, V>(t.s + i, rp, t.corr + i, c.n, c.v, x0, last, t.o + static_cast<std::int64_t>(i) * dp, dp);
  pv_rest<V, kPvRows - 1>(t.rows - i, t.s + i, rp, t.corr + i, c.n, c.v, x0, last,
                          t.o + static_cast<std::int64_t>(i) * dp, dp);
}

}  // namespace

// Mask, then the online-softmax step for 16 rows at a time (as softmax_step of the AVX2 set):
//   m' = max(m, max_j s_j);  corr = 2^(m - m');  p_j = 2^(s_j - m');  l' = l * corr + sum_j p_j.
SA_AVX512 void avx512_softmax_step(const QueryTile& t, const KeyChunk& c) {
  const int rp = t.rows_padded;
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int ib = 0; ib < rp; ib += 16) {
    float* s = t.s + ib;
    __m512 mx = neg_inf;
    if (c.masked) {
      const __m512i lo = _mm512_loadu_si512(t.lo + ib);
      const __m512i hi = _mm512_loadu_si512(t.hi + ib);
      const __m512i vis = _mm512_loadu_si512(t.vis + ib);
      for (int j = 0; j < c.n; ++j) {
        const std::int32_t key = c.first_key + j;
        const __m512i kv = _mm512_set1_epi32(key);
        __mmask16 keep = static_cast<__mmask16>(_mm512_cmpgt_epi32_mask(hi, kv) & ~_mm512_cmpgt_epi32_mask(lo, kv));
        if (c.is_column != nullptr && c.is_column[key] != 0)
          keep = static_cast<__mmask16>(keep | _mm512_cmpgt_epi32_mask(vis, kv));
        const __m512 x = _mm512_mask_blend_ps(keep, neg_inf, _mm512_loadu_ps(s + j * rp));
        _mm512_storeu_ps(s + j * rp, x);
        mx = _mm512_max_ps(mx, x);
      }
    } else {
      for (int j = 0; j < c.n; ++j) mx = _mm512_max_ps(mx, _mm512_loadu_ps(s + j * rp));
    }
    const __m512 m_old = _mm512_loadu_ps(t.m + ib);
    const __m512 m_new = _mm512_max_ps(m_old, mx);
    const __m512 m_use =
        _mm512_mask_blend_ps(_mm512_cmp_ps_mask(m_new, neg_inf, _CMP_EQ_OQ), m_new, _mm512_setzero_ps());
    const __m512 corr = exp2_ps(_mm512_sub_ps(m_old, m_use));
    __m512 sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps();
    int j = 0;
    for (; j + 2 <= c.n; j += 2) {
      const __m512 p0 = exp2_ps(_mm512_sub_ps(_mm512_loadu_ps(s + j * rp), m_use));
      const __m512 p1 = exp2_ps(_mm512_sub_ps(_mm512_loadu_ps(s + (j + 1) * rp), m_use));
      _mm512_storeu_ps(s + j * rp, p0);
      _mm512_storeu_ps(s + (j + 1) * rp, p1);
      sum0 = _mm512_add_ps(sum0, p0);
      sum1 = _mm512_add_ps(sum1, p1);
    }
    if (j < c.n) {
      const __m512 p0 = exp2_ps(_mm512_sub_ps(_mm512_loadu_ps(s + j * rp), m_use));
      _mm512_storeu_ps(s + j * rp, p0);
      sum0 = _mm512_add_ps(sum0, p0);
    }
    _mm512_storeu_ps(t.l + ib, _mm512_fmadd_ps(_mm512_loadu_ps(t.l + ib), corr, _mm512_add_ps(sum0, sum1)));
    _mm512_storeu_ps(t.m + ib, m_new);
    _mm512_storeu_ps(t.corr + ib, corr);
  }
}

namespace {

SA_AVX512 void attend_chunk(const QueryTile& t, const KeyChunk& c) {
  scores(t.qt, t.rows_padded, t.dim, c.k, c.n, t.s);
  avx512_softmax_step(t, c);
  int x0 = 0;
  for (; x0 + 32 <= t.dim_padded; x0 += 32) pv_columns<2>(t, c, x0, 0xffff);
  if (x0 < t.dim_padded) {  // 8, 16 or 24 dims left (dim_padded is a multiple of 8)
    const int left = t.dim_padded - x0;
    if (left > 16) {
      pv_columns<2>(t, c, x0, 0x00ff);
    } else {
      pv_columns<1>(t, c, x0, left == 16 ? 0xffff : 0x00ff);
    }
  }
}

// Stage 1 for one tile of sampled rows (SampleTile), as sample_rows of the AVX2 set with the 16 rows in one
// vector: scores for all keys [0, end), the exact row max and sum over each row's visible keys, then the
// normalised probabilities summed over the rows per key column, 8 keys at a time.
SA_AVX512 void sample_rows(const SampleTile& t) {
  const float* ptrs[kChunk];
  for (std::int64_t j0 = 0; j0 < t.end; j0 += kChunk) {
    const int n = static_cast<int>(t.end - j0 < kChunk ? t.end - j0 : kChunk);
    for (int r = 0; r < n; ++r) ptrs[r] = t.k + (j0 + r) * t.k_ld;
    scores(t.qt, kLanes, t.dim, ptrs, n, t.s + j0 * kLanes);
  }
  avx512_sample_rows_from_scores(t);
}

}  // namespace

SA_AVX512 void avx512_sample_rows_from_scores(const SampleTile& t) {
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  const __m512i vis = _mm512_loadu_si512(t.vis);
  const std::int32_t end = static_cast<std::int32_t>(t.end);
  __m512 mx = neg_inf;
  for (std::int32_t j = 0; j < end; ++j) {
    float* s = t.s + static_cast<std::int64_t>(j) * kLanes;
    const __m512 x = _mm512_mask_blend_ps(_mm512_cmpgt_epi32_mask(vis, _mm512_set1_epi32(j)), neg_inf,
                                          _mm512_loadu_ps(s));
    _mm512_storeu_ps(s, x);
    mx = _mm512_max_ps(mx, x);
  }
  mx = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(mx, neg_inf, _CMP_EQ_OQ), mx, _mm512_setzero_ps());
  __m512 l = _mm512_setzero_ps();
  for (std::int64_t j = 0; j < t.end; ++j) {
    float* s = t.s + j * kLanes;
    const __m512 p = exp2_ps(_mm512_sub_ps(_mm512_loadu_ps(s), mx));
    _mm512_storeu_ps(s, p);
    l = _mm512_add_ps(l, p);
  }
  // Padded rows have l = 0: their inverse is 0, not inf, so that they add nothing.
  const __m512 inv = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(l, _mm512_setzero_ps(), _CMP_GT_OQ),
                                         _mm512_set1_ps(1.0f), l);
  const __m512i lo = _mm512_loadu_si512(t.lo);
  const __m512i hi = _mm512_loadu_si512(t.hi);
  std::int32_t j0 = 0;
  __m256 x[8];
  for (; j0 + 8 <= end; j0 += 8) {
#pragma GCC unroll 8
    for (int u = 0; u < 8; ++u)
      x[u] = fold(_mm512_mul_ps(_mm512_loadu_ps(t.s + static_cast<std::int64_t>(j0 + u) * kLanes), inv));
    const __m256 cs = hsum8(x);
    const __m256d cs_lo = _mm256_cvtps_pd(_mm256_castps256_ps128(cs));
    const __m256d cs_hi = _mm256_cvtps_pd(_mm256_extractf128_ps(cs, 1));
    _mm256_storeu_pd(t.colscore + j0, _mm256_add_pd(_mm256_loadu_pd(t.colscore + j0), cs_lo));
    _mm256_storeu_pd(t.colscore + j0 + 4, _mm256_add_pd(_mm256_loadu_pd(t.colscore + j0 + 4), cs_hi));
    if (j0 >= t.in_lo && j0 + 8 <= t.in_hi) continue;  // inside every band: nothing is outside
    __m256d out_lo = cs_lo, out_hi = cs_hi;
    if (!(j0 + 8 <= t.out_lo || j0 >= t.out_hi)) {
      // Mixed block: keep, per row, only the keys outside [lo, hi).
#pragma GCC unroll 8
      for (int u = 0; u < 8; ++u) {
        const __m512i kv = _mm512_set1_epi32(j0 + u);
        const __mmask16 in = static_cast<__mmask16>(_mm512_cmpgt_epi32_mask(hi, kv) & ~_mm512_cmpgt_epi32_mask(lo, kv));
        x[u] = fold(_mm512_maskz_mul_ps(static_cast<__mmask16>(~in),
                                        _mm512_loadu_ps(t.s + static_cast<std::int64_t>(j0 + u) * kLanes), inv));
      }
      const __m256 os = hsum8(x);
      out_lo = _mm256_cvtps_pd(_mm256_castps256_ps128(os));
      out_hi = _mm256_cvtps_pd(_mm256_extractf128_ps(os, 1));
    }
    _mm256_storeu_pd(t.outside + j0, _mm256_add_pd(_mm256_loadu_pd(t.outside + j0), out_lo));
    _mm256_storeu_pd(t.outside + j0 + 4, _mm256_add_pd(_mm256_loadu_pd(t.outside + j0 + 4), out_hi));
  }
  alignas(64) float inv_rows[kLanes];
  _mm512_store_ps(inv_rows, inv);
  for (std::int32_t j = j0; j < end; ++j) {
    const float* s = t.s + static_cast<std::int64_t>(j) * kLanes;
    for (int i = 0; i < t.rows; ++i) {
      const double prob = s[i] * inv_rows[i];
      t.colscore[j] += prob;
      if (j < t.lo[i] || j >= t.hi[i]) t.outside[j] += prob;
    }
  }
}

namespace {

#undef SA_AVX512

// CPUID leaf 7 EBX: AVX512F (bit 16), AVX512DQ (17), AVX512BW (30), AVX512VL (31); the OS saving opmask and
// ZMM state (XCR0 bits 5-7, besides SSE and AVX state, bits 1-2).
bool cpu_supports_avx512() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0 || (c & (1u << 27)) == 0) return false;  // OSXSAVE
  unsigned xcr0_lo = 0, xcr0_hi = 0;
  __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if ((xcr0_lo & 0xe6u) != 0xe6u) return false;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return false;
  const unsigned need = (1u << 16) | (1u << 17) | (1u << 30) | (1u << 31);
  return (b & need) == need;
}

}  // namespace

const Kernels* avx512_kernels() {
  static const Kernels* const set = []() -> const Kernels* {
    const Kernels* avx2 = avx2_kernels();
    if (avx2 == nullptr || !cpu_supports_avx512()) return nullptr;
    static const Kernels k{"avx512", avx2->convert_row, avx2->store_row, attend_chunk, sample_rows, nullptr, nullptr};
    return &k;
  }();
  return set;
}

#else

const Kernels* avx512_kernels() { return nullptr; }

#endif

}  // namespace sampleattn::cpu::fast
