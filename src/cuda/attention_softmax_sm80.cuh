// Online softmax over the rows a thread holds in the m16n8k16 accumulator layout: lane l holds rows
// l/4 and l/4 + 8 of its warp's 16-row slice, columns 2*(l%4) + {0, 1} of every 8-column n-tile; the four
// lanes of a quad share a row. Scores are scaled by scale * log2(e) so that exp2 is the only exponential.
//
// Per tile with scores s (masked entries -inf) and running max m, running sum l, output accumulator o:
//   m' = max(m, max_j s_j * c);   alpha = 2^(m - m');   p_j = 2^(s_j * c - m');
//   l' = alpha * l + sum_j p_j;   o' = alpha * o + P V.
// While a row has seen no kept entry, m' = -inf; it is replaced by 0 in the exponents so that
// 2^(-inf - -inf) never happens (p = 0 and alpha = 0 then, as they should be).
// l stays a per-lane partial sum until finish(), which adds the four lanes of each quad.
#pragma once

#include <cmath>

#include "cuda/ptx_sm80.cuh"

namespace sampleattn::cuda::sm80 {

template <int kNTiles, int kOTiles>
struct OnlineSoftmax {
  float row_max[2];
  float row_sum[2];

  __device__ __forceinline__ void init() {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      row_max[i] = -INFINITY;
      row_sum[i] = 0.0f;
    }
  }

  // s[nt][0..1] belong to row half 0 (row l/4), s[nt][2..3] to row half 1 (row l/4 + 8). Turns s into
  // unnormalised probabilities and rescales o.
  __device__ __forceinline__ void update(float (&s)[kNTiles][4], float (&o)[kOTiles][4], float scale_log2) {
    float alpha[2];
    scores(s, alpha, scale_log2);
    rescale(o, alpha);
  }

  // The two halves of update, for kernels that rescale o only after an asynchronous product into it has
  // finished (sm_90): s -> probabilities, row sums updated, alpha[i] = the factor o's row half i needs.
  __device__ __forceinline__ void scores(float (&s)[kNTiles][4], float (&alpha)[2], float scale_log2) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * i], s[nt][2 * i + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(row_max[i], mx * scale_log2);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      alpha[i] = fast_exp2(row_max[i] - m_use);
      row_max[i] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float p = fast_exp2(fmaf(s[nt][2 * i + e], scale_log2, -m_use));
          s[nt][2 * i + e] = p;
          sum += p;
        }
      }
      row_sum[i] = row_sum[i] * alpha[i] + sum;
    }
  }

  __device__ __forceinline__ void rescale(float (&o)[kOTiles][4], const float (&alpha)[2]) {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int dt = 0; dt < kOTiles; ++dt) {
        o[dt][2 * i] *= alpha[i];
        o[dt][2 * i + 1] *= alpha[i];
      }
  }

  // Completes the row sums across each quad; returns 1 / l per row half (0 for a row with no kept key)
  // and writes the natural-log log-sum-exp, (m + log2 l) * ln 2 (-inf for such a row).
  __device__ __forceinline__ void finish(float (&inv_sum)[2], float (&lse)[2]) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float l = row_sum[i];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      inv_sum[i] = l > 0.0f ? fast_rcp(l) : 0.0f;
      lse[i] = l > 0.0f ? (row_max[i] + fast_log2(l)) * 0.69314718055994530942f : -INFINITY;
    }
  }
};

}  // namespace sampleattn::cuda::sm80
