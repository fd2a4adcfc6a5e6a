// AVX2 + FMA + F16C kernels of the fast CPU backend (contract: fast_kernels.h). Every function here carries
// a target attribute instead of the file being built with -mavx2, so the library still runs on CPUs without
// AVX2 (avx2_kernels() then returns null) and no std:: inline code is ever compiled for AVX2 by accident.
//
// Register blocking (16 ymm registers):
//   Q K^T:  S^T (6 keys, 16 rows) = 12 accumulators; per d step 2 loads of Q^T + 6 broadcasts of K, 12 FMAs.
//   P V:    O (6 rows, 16 dims)  = 12 accumulators; per key 2 loads of V + 6 broadcasts of P, 12 FMAs.
// The same 6x16 shape as the classic AVX2 SGEMM kernel; the softmax works on 8 rows of one key per vector.
#include "cpu/fast_kernels.h"

#include <cstdint>
#include <limits>

#include "core/half.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define SA_HAVE_AVX2_KERNELS 1
#include <cpuid.h>
#include <immintrin.h>

#include "cpu/fast_simd_x86.h"
#endif

namespace sampleattn::cpu::fast {

#ifdef SA_HAVE_AVX2_KERNELS
namespace {

#define SA_AVX2 __attribute__((target("avx2,fma,f16c")))

// 2^x for x <= 0 (x = -inf gives 0): x = n + f with n = round(x), |f| <= 1/2; 2^f by its degree-6 Taylor
// polynomial (relative error < 3e-7, measured); 2^n by writing n + 127 into the exponent field. x is
// clamped at -127, where the exponent field becomes 0 and the result exactly 0.
SA_AVX2 inline __m256 exp2_ps(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-127.0f));
  const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(x, n);
  __m256 p = _mm256_set1_ps(kExp2Poly[0]);
#pragma GCC unroll 6
  for (int i = 1; i < 7; ++i) p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2Poly[i]));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// S^T (R keys, 16 rows) at s (ld rp) = K rows k[0..R) . Q^T (d, 16 columns starting at qt, ld rp).
template <int R>
SA_AVX2 inline void qk_block(const float* qt, int rp, int d, const float* const* k, float* s) {
  __m256 a0[R], a1[R];
  const float* kr[R];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    a0[r] = _mm256_setzero_ps();
    a1[r] = _mm256_setzero_ps();
    kr[r] = k[r];
  }
#pragma GCC unroll 4
  for (int c = 0; c < d; ++c) {
    const __m256 q0 = _mm256_loadu_ps(qt + static_cast<std::int64_t>(c) * rp);
    const __m256 q1 = _mm256_loadu_ps(qt + static_cast<std::int64_t>(c) * rp + 8);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256 b = _mm256_broadcast_ss(kr[r] + c);
      a0[r] = _mm256_fmadd_ps(b, q0, a0[r]);
      a1[r] = _mm256_fmadd_ps(b, q1, a1[r]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(s + static_cast<std::int64_t>(r) * rp, a0[r]);
    _mm256_storeu_ps(s + static_cast<std::int64_t>(r) * rp + 8, a1[r]);
  }
}

// S^T (n, rp) = K (n keys by row pointer, d) . Q^T (d, rp); rp a multiple of 16.
SA_AVX2 void scores(const float* qt, int rp, int d, const float* const* k, int n, float* s) {
  for (int ib = 0; ib < rp; ib += kLanes) {
    int j = 0;
    for (; j + 6 <= n; j += 6) qk_block<6>(qt + ib, rp, d, k + j, s + static_cast<std::int64_t>(j) * rp + ib);
    float* sj = s + static_cast<std::int64_t>(j) * rp + ib;
    switch (n - j) {
      case 5: qk_block<5>(qt + ib, rp, d, k + j, sj); break;
      case 4: qk_block<4>(qt + ib, rp, d, k + j, sj); break;
      case 3: qk_block<3>(qt + ib, rp, d, k + j, sj); break;
      case 2: qk_block<2>(qt + ib, rp, d, k + j, sj); break;
      case 1: qk_block<1>(qt + ib, rp, d, k + j, sj); break;
      default: break;
    }
  }
}

// O (R rows, V*8 dims at x0) = O * corr + P (R rows: s columns, ld rp) . V (n keys, dims at x0).
template <int R, int V>
SA_AVX2 inline void pv_block(const float* s, int rp, const float* corr, int n, const float* const* v, int x0,
                             float* o, int dp) {
  __m256 a[R][V];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    const __m256 c = _mm256_broadcast_ss(corr + r);
#pragma GCC unroll 2
    for (int u = 0; u < V; ++u)
      a[r][u] = _mm256_mul_ps(_mm256_loadu_ps(o + static_cast<std::int64_t>(r) * dp + x0 + 8 * u), c);
  }
  for (int j = 0; j < n; ++j) {
    const float* vr = v[j] + x0;
    __m256 vv[V];
#pragma GCC unroll 2
    for (int u = 0; u < V; ++u) vv[u] = _mm256_loadu_ps(vr + 8 * u);
    const float* pj = s + static_cast<std::int64_t>(j) * rp;
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256 b = _mm256_broadcast_ss(pj + r);
#pragma GCC unroll 2
      for (int u = 0; u < V; ++u) a[r][u] = _mm256_fmadd_ps(b, vv[u], a[r][u]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int u = 0; u < V; ++u) _mm256_storeu_ps(o + static_cast<std::int64_t>(r) * dp + x0 + 8 * u, a[r][u]);
}

template <int V>
SA_AVX2 void pv_columns(const QueryTile& t, const KeyChunk& c, int x0) {
  const int rp = t.rows_padded;
  int i = 0;
  for (; i + 6 <= t.rows; i += 6)
    pv_block<6, V>(t.s + i, rp, t.corr + i, c.n, c.v, x0, t.o + static_cast<std::int64_t>(i) * t.dim_padded,
                   t.dim_padded);
  const float* s = t.s + i;
  const float* corr = t.corr + i;
  float* o = t.o + static_cast<std::int64_t>(i) * t.dim_padded;
  switch (t.rows - i) {
    case 5: pv_block<5, V>(s, rp, corr, c.n, c.v, x0, o, t.dim_padded); break;
    case 4: pv_block<4, V>(s, rp, corr, c.n, c.v, x0, o, t.dim_padded); break;
    case 3: pv_block<3, V>(s, rp, corr, c.n, c.v, x0, o, t.dim_padded); break;
    case 2: pv_block<2, V>(s, rp, corr, c.n, c.v, x0, o, t.dim_padded); break;
    case 1: pv_block<1, V>(s, rp, corr, c.n, c.v, x0, o, t.dim_padded); break;
    default: break;
  }
}

// Mask, then the online-softmax step for 8 rows at a time:
//   m' = max(m, max_j s_j);  corr = 2^(m - m');  p_j = 2^(s_j - m');  l' = l * corr + sum_j p_j.
// A row with nothing kept so far has m' = -inf; it uses 0 in place of m' so that every 2^(.) is exactly 0.
SA_AVX2 void softmax_step(const QueryTile& t, const KeyChunk& c) {
  const int rp = t.rows_padded;
  const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (int ib = 0; ib < rp; ib += 8) {
    float* s = t.s + ib;
    __m256 mx = neg_inf;
    if (c.masked) {
      const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.lo + ib));
      const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.hi + ib));
      const __m256i vis = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.vis + ib));
      for (int j = 0; j < c.n; ++j) {
        const std::int32_t key = c.first_key + j;
        const __m256i kv = _mm256_set1_epi32(key);
        __m256i keep = _mm256_andnot_si256(_mm256_cmpgt_epi32(lo, kv), _mm256_cmpgt_epi32(hi, kv));
        if (c.is_column != nullptr && c.is_column[key] != 0) keep = _mm256_or_si256(keep, _mm256_cmpgt_epi32(vis, kv));
        const __m256 x = _mm256_blendv_ps(neg_inf, _mm256_loadu_ps(s + j * rp), _mm256_castsi256_ps(keep));
        _mm256_storeu_ps(s + j * rp, x);
        mx = _mm256_max_ps(mx, x);
      }
    } else {
      for (int j = 0; j < c.n; ++j) mx = _mm256_max_ps(mx, _mm256_loadu_ps(s + j * rp));
    }
    const __m256 m_old = _mm256_loadu_ps(t.m + ib);
    const __m256 m_new = _mm256_max_ps(m_old, mx);
    const __m256 m_use = _mm256_blendv_ps(m_new, _mm256_setzero_ps(), _mm256_cmp_ps(m_new, neg_inf, _CMP_EQ_OQ));
    const __m256 corr = exp2_ps(_mm256_sub_ps(m_old, m_use));
    __m256 sum0 = _mm256_setzero_ps(), sum1 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 2 <= c.n; j += 2) {
      const __m256 p0 = exp2_ps(_mm256_sub_ps(_mm256_loadu_ps(s + j * rp), m_use));
      const __m256 p1 = exp2_ps(_mm256_sub_ps(_mm256_loadu_ps(s + (j + 1) * rp), m_use));
      _mm256_storeu_ps(s + j * rp, p0);
      _mm256_storeu_ps(s + (j + 1) * rp, p1);
      sum0 = _mm256_add_ps(sum0, p0);
      sum1 = _mm256_add_ps(sum1, p1);
    }
    if (j < c.n) {
      const __m256 p0 = exp2_ps(_mm256_sub_ps(_mm256_loadu_ps(s + j * rp), m_use));
      _mm256_storeu_ps(s + j * rp, p0);
      sum0 = _mm256_add_ps(sum0, p0);
    }
    _mm256_storeu_ps(t.l + ib, _mm256_fmadd_ps(_mm256_loadu_ps(t.l + ib), corr, _mm256_add_ps(sum0, sum1)));
    _mm256_storeu_ps(t.m + ib, m_new);
    _mm256_storeu_ps(t.corr + ib, corr);
  }
}

SA_AVX2 void attend_chunk(const QueryTile& t, const KeyChunk& c) {
  scores(t.qt, t.rows_padded, t.dim, c.k, c.n, t.s);
  softmax_step(t, c);
  int x0 = 0;
  for (; x0 + 16 <= t.dim_padded; x0 += 16) pv_columns<2>(t, c, x0);
  if (x0 < t.dim_padded) pv_columns<1>(t, c, x0);  // dim_padded is a multiple of 8
}

SA_AVX2 void convert_row(const void* src, DType dtype, std::int64_t stride, std::int64_t n, float scale,
                         float* dst, std::int64_t padded) {
  std::int64_t i = 0;
  if (stride == 1) {
    const __m256 sc = _mm256_set1_ps(scale);
    switch (dtype) {
      case DType::f32: {
        const float* p = static_cast<const float*>(src);
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_loadu_ps(p + i), sc));
        break;
      }
      case DType::f16: {
        const std::uint16_t* p = static_cast<const std::uint16_t*>(src);
        for (; i + 8 <= n; i += 8) {
          const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
          _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_cvtph_ps(h), sc));
        }
        break;
      }
      case DType::bf16: {
        const std::uint16_t* p = static_cast<const std::uint16_t*>(src);
        for (; i + 8 <= n; i += 8) {
          const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
          const __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
          _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_castsi256_ps(w), sc));
        }
        break;
      }
    }
  }
  for (; i < n; ++i) dst[i] = core::load_element(src, dtype, i * stride) * scale;
  for (; i < padded; ++i) dst[i] = 0.0f;
}

SA_AVX2 void store_row(const float* src, std::int64_t n, float scale, void* dst, DType dtype, std::int64_t stride) {
  std::int64_t i = 0;
  if (stride == 1) {
    const __m256 sc = _mm256_set1_ps(scale);
    switch (dtype) {
      case DType::f32: {
        float* p = static_cast<float*>(dst);
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(p + i, _mm256_mul_ps(_mm256_loadu_ps(src + i), sc));
        break;
      }
      case DType::f16: {
        std::uint16_t* p = static_cast<std::uint16_t*>(dst);
        for (; i + 8 <= n; i += 8) {
          const __m128i h = _mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(src + i), sc), _MM_FROUND_TO_NEAREST_INT);
          _mm_storeu_si128(reinterpret_cast<__m128i*>(p + i), h);
        }
        break;
      }
      case DType::bf16: {
        // Round to nearest even: bits + 0x7fff + (bit 16), keep the high half; NaN keeps a quiet NaN.
        std::uint16_t* p = static_cast<std::uint16_t*>(dst);
        for (; i + 8 <= n; i += 8) {
          const __m256 x = _mm256_mul_ps(_mm256_loadu_ps(src + i), sc);
          const __m256i bits = _mm256_castps_si256(x);
          const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
          __m256i r = _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
          const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
          const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
          r = _mm256_blendv_epi8(r, quiet, nan);
          const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
          _mm_storeu_si128(reinterpret_cast<__m128i*>(p + i), _mm256_castsi256_si128(packed));
        }
        break;
      }
    }
  }
  for (; i < n; ++i) core::store_element(dst, dtype, i * stride, src[i] * scale);
}

// Stage 1 for one tile of sampled rows (SampleTile): scores for all keys [0, end) into the scratch, the exact
// row max and sum over each row's visible keys, then the normalised probabilities summed over the rows per
// key column (8 keys at a time: 8 vectors of row probabilities reduced by hsum8).
SA_AVX2 void sample_rows(const SampleTile& t) {
  const float* ptrs[kChunk];
  for (std::int64_t j0 = 0; j0 < t.end; j0 += kChunk) {
    const int n = static_cast<int>(t.end - j0 < kChunk ? t.end - j0 : kChunk);
    for (int r = 0; r < n; ++r) ptrs[r] = t.k + (j0 + r) * t.k_ld;
    scores(t.qt, kLanes, t.dim, ptrs, n, t.s + j0 * kLanes);
  }
  const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  const __m256i vis0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.vis));
  const __m256i vis1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.vis + 8));
  const std::int32_t end = static_cast<std::int32_t>(t.end);
  __m256 mx0 = neg_inf, mx1 = neg_inf;
  for (std::int32_t j = 0; j < end; ++j) {
    float* s = t.s + static_cast<std::int64_t>(j) * kLanes;
    const __m256i kv = _mm256_set1_epi32(j);
    const __m256 x0 = _mm256_blendv_ps(neg_inf, _mm256_loadu_ps(s), _mm256_castsi256_ps(_mm256_cmpgt_epi32(vis0, kv)));
    const __m256 x1 = _mm256_blendv_ps(neg_inf, _mm256_loadu_ps(s + 8), _mm256_castsi256_ps(_mm256_cmpgt_epi32(vis1, kv)));
    _mm256_storeu_ps(s, x0);
    _mm256_storeu_ps(s + 8, x1);
    mx0 = _mm256_max_ps(mx0, x0);
    mx1 = _mm256_max_ps(mx1, x1);
  }
  mx0 = _mm256_blendv_ps(mx0, _mm256_setzero_ps(), _mm256_cmp_ps(mx0, neg_inf, _CMP_EQ_OQ));
  mx1 = _mm256_blendv_ps(mx1, _mm256_setzero_ps(), _mm256_cmp_ps(mx1, neg_inf, _CMP_EQ_OQ));
  __m256 l0 = _mm256_setzero_ps(), l1 = _mm256_setzero_ps();
  for (std::int64_t j = 0; j < t.end; ++j) {
    float* s = t.s + j * kLanes;
    const __m256 p0 = exp2_ps(_mm256_sub_ps(_mm256_loadu_ps(s), mx0));
    const __m256 p1 = exp2_ps(_mm256_sub_ps(_mm256_loadu_ps(s + 8), mx1));
    _mm256_storeu_ps(s, p0);
    _mm256_storeu_ps(s + 8, p1);
    l0 = _mm256_add_ps(l0, p0);
    l1 = _mm256_add_ps(l1, p1);
  }
  // Padded rows have l = 0: their inverse is 0, not inf, so that they add nothing.
  const __m256 zero = _mm256_setzero_ps();
  const __m256 inv0 = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0f), l0), _mm256_cmp_ps(l0, zero, _CMP_GT_OQ));
  const __m256 inv1 = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0f), l1), _mm256_cmp_ps(l1, zero, _CMP_GT_OQ));
  const __m256i lo0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.lo));
  const __m256i lo1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.lo + 8));
  const __m256i hi0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.hi));
  const __m256i hi1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.hi + 8));
  std::int32_t j0 = 0;
  __m256 x[8];
  for (; j0 + 8 <= end; j0 += 8) {
#pragma GCC unroll 8
    for (int u = 0; u < 8; ++u) {
      const float* s = t.s + static_cast<std::int64_t>(j0 + u) * kLanes;
      x[u] = _mm256_fmadd_ps(_mm256_loadu_ps(s), inv0, _mm256_mul_ps(_mm256_loadu_ps(s + 8), inv1));
    }
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
        const float* s = t.s + static_cast<std::int64_t>(j0 + u) * kLanes;
        const __m256i kv = _mm256_set1_epi32(j0 + u);
        const __m256 in0 = _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_cmpgt_epi32(lo0, kv), _mm256_cmpgt_epi32(hi0, kv)));
        const __m256 in1 = _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_cmpgt_epi32(lo1, kv), _mm256_cmpgt_epi32(hi1, kv)));
        x[u] = _mm256_add_ps(_mm256_andnot_ps(in0, _mm256_mul_ps(_mm256_loadu_ps(s), inv0)),
                             _mm256_andnot_ps(in1, _mm256_mul_ps(_mm256_loadu_ps(s + 8), inv1)));
      }
      const __m256 os = hsum8(x);
      out_lo = _mm256_cvtps_pd(_mm256_castps256_ps128(os));
      out_hi = _mm256_cvtps_pd(_mm256_extractf128_ps(os, 1));
    }
    _mm256_storeu_pd(t.outside + j0, _mm256_add_pd(_mm256_loadu_pd(t.outside + j0), out_lo));
    _mm256_storeu_pd(t.outside + j0 + 4, _mm256_add_pd(_mm256_loadu_pd(t.outside + j0 + 4), out_hi));
  }
  alignas(32) float inv[kLanes];
  _mm256_store_ps(inv, inv0);
  _mm256_store_ps(inv + 8, inv1);
  for (std::int32_t j = j0; j < end; ++j) {
    const float* s = t.s + static_cast<std::int64_t>(j) * kLanes;
    for (int i = 0; i < t.rows; ++i) {
      const double prob = s[i] * inv[i];
      t.colscore[j] += prob;
      if (j < t.lo[i] || j >= t.hi[i]) t.outside[j] += prob;
    }
  }
}

#undef SA_AVX2

// CPUID: AVX, FMA, F16C (leaf 1, ECX bits 28, 12, 29) and AVX2 (leaf 7, EBX bit 5), with the OS saving YMM
// state (OSXSAVE, ECX bit 27, and XCR0 bits 1-2). Read directly: not every compiler's
// __builtin_cpu_supports knows "f16c".
bool cpu_supports_avx2_fma_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0) return false;
  const unsigned need = (1u << 12) | (1u << 27) | (1u << 28) | (1u << 29);
  if ((c & need) != need) return false;
  unsigned xcr0_lo = 0, xcr0_hi = 0;
  __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if ((xcr0_lo & 0x6u) != 0x6u) return false;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return false;
  return (b & (1u << 5)) != 0;
}

}  // namespace

const Kernels* avx2_kernels() {
  static const bool supported = cpu_supports_avx2_fma_f16c();
  static const Kernels k{"avx2", convert_row, store_row, attend_chunk, sample_rows, nullptr, nullptr};
  return supported ? &k : nullptr;
}

#else

const Kernels* avx2_kernels() { return nullptr; }

#endif

}  // namespace sampleattn::cpu::fast
