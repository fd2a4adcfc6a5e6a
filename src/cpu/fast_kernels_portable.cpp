// Portable kernels of the fast CPU backend (fast_kernels.h): the same contract as the AVX2 set in plain
// loops that the compiler may vectorise for the baseline ISA. Used where AVX2/FMA/F16C are missing, and by
// the tests to check the AVX2 set against a second implementation.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/half.h"
#include "cpu/fast_kernels.h"

namespace sampleattn::cpu::fast {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void convert_row(const void* src, DType dtype, std::int64_t stride, std::int64_t n, float scale, float* dst,
                 std::int64_t padded) {
  for (std::int64_t i = 0; i < n; ++i) dst[i] = core::load_element(src, dtype, i * stride) * scale;
  for (std::int64_t i = n; i < padded; ++i) dst[i] = 0.0f;
}

void store_row(const float* src, std::int64_t n, float scale, void* dst, DType dtype, std::int64_t stride) {
  for (std::int64_t i = 0; i < n; ++i) core::store_element(dst, dtype, i * stride, src[i] * scale);
}

// S^T (n, rp) = K (n, d) . Q^T (d, rp).
void scores(const float* qt, int rp, int d, const float* const* k, int n, float* s) {
  for (int j = 0; j < n; ++j) {
    float* sj = s + static_cast<std::int64_t>(j) * rp;
    std::fill(sj, sj + rp, 0.0f);
    for (int c = 0; c < d; ++c) {
      const float kv = k[j][c];
      const float* q = qt + static_cast<std::int64_t>(c) * rp;
      for (int i = 0; i < rp; ++i) sj[i] += kv * q[i];
    }
  }
}

void attend_chunk(const QueryTile& t, const KeyChunk& c) {
  const int rp = t.rows_padded;
  scores(t.qt, rp, t.dim, c.k, c.n, t.s);
  if (c.masked) {
    for (int j = 0; j < c.n; ++j) {
      const std::int32_t key = c.first_key + j;
      const bool col = c.is_column != nullptr && c.is_column[key] != 0;
      for (int i = 0; i < t.rows; ++i) {
        const bool keep = (key >= t.lo[i] && key < t.hi[i]) || (col && key < t.vis[i]);
        if (!keep) t.s[j * rp + i] = kNegInf;
      }
    }
  }
  // Online softmax, per row: m' = max(m, max_j s_j); O and l are rescaled by 2^(m - m').
  for (int i = 0; i < t.rows; ++i) {
    float mx = kNegInf;
    for (int j = 0; j < c.n; ++j) mx = std::max(mx, t.s[j * rp + i]);
    const float m_new = std::max(t.m[i], mx);
    const float m_use = m_new == kNegInf ? 0.0f : m_new;  // a row with nothing kept yet stays at zero
    t.corr[i] = std::exp2(t.m[i] - m_use);
    float sum = 0.0f;
    for (int j = 0; j < c.n; ++j) sum += t.s[j * rp + i] = std::exp2(t.s[j * rp + i] - m_use);
    t.l[i] = t.l[i] * t.corr[i] + sum;
    t.m[i] = m_new;
  }
  for (int i = 0; i < t.rows; ++i) {
    float* o = t.o + static_cast<std::int64_t>(i) * t.dim_padded;
    for (int x = 0; x < t.dim_padded; ++x) o[x] *= t.corr[i];
    for (int j = 0; j < c.n; ++j) {
      const float p = t.s[j * rp + i];
      const float* v = c.v[j];
      for (int x = 0; x < t.dim_padded; ++x) o[x] += p * v[x];
    }
  }
}

void sample_rows(const SampleTile& t) {
  for (int i = 0; i < t.rows; ++i) {
    const std::int64_t vis = t.vis[i];
    float* s = t.s;  // row i's scores at s[j * kLanes + i]
    float mx = kNegInf;
    for (std::int64_t j = 0; j < vis; ++j) {
      const float* kr = t.k + j * t.k_ld;
      float dot = 0.0f;
      for (int c = 0; c < t.dim; ++c) dot += t.qt[c * kLanes + i] * kr[c];
      s[j * kLanes + i] = dot;
      mx = std::max(mx, dot);
    }
    float sum = 0.0f;
    for (std::int64_t j = 0; j < vis; ++j) sum += s[j * kLanes + i] = std::exp2(s[j * kLanes + i] - mx);
    const float inv = 1.0f / sum;
    for (std::int64_t j = 0; j < vis; ++j) {
      const double prob = s[j * kLanes + i] * inv;
      t.colscore[j] += prob;
      if (j < t.lo[i] || j >= t.hi[i]) t.outside[j] += prob;
    }
  }
}

}  // namespace

const Kernels& portable_kernels() {
  static const Kernels k{"portable", convert_row, store_row, attend_chunk, sample_rows, nullptr, nullptr};
  return k;
}

}  // namespace sampleattn::cpu::fast
