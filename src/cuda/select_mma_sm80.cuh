// Warp-level building blocks of the stage 1 kernels (select_stage1.cuh): mma.sync m16n8k16 with fp32
// accumulators, ldmatrix fragment loads, cp.async copies and the base-2 exponential. sm_80 and newer.
//
// Fragment layouts of mma.m16n8k16 (lane = threadIdx.x % 32, g = lane / 4, c = lane % 4):
//   A (16 x 16, row-major): a0 = (g, 2c..2c+1), a1 = (g + 8, 2c..), a2 = (g, 2c + 8..), a3 = (g + 8, 2c + 8..)
//   B (16 x 8, k x n):      b0 = (k 2c..2c+1, n g), b1 = (k 2c + 8.., n g)
//   C (16 x 8, fp32):       c0, c1 = (g, 2c..2c+1), c2, c3 = (g + 8, 2c..2c+1)
#pragma once

#include <cstdint>

#include "cuda/ptx_sm80.cuh"

namespace sampleattn::cuda::sel {

using sm80::cp_async_commit;
using sm80::cp_async_wait;
using sm80::mma_16816;
using sm80::smem_addr;

// Four 8x8 matrices of 16-bit elements; lanes 8m..8m+7 give the row addresses of matrix m.
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* row_addr) {
  sm80::ldmatrix_x4(r, smem_addr(row_addr));
}

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
  sm80::cp_async_16(smem_addr(smem), gmem, true);
}

// 2^x on the special-function unit (relative error ~2^-22; ex2(-inf) = 0, NaN stays NaN).
__device__ __forceinline__ float ex2(float x) { return sm80::fast_exp2(x); }

// Row index of sampled row i (core::sampled_rows): t_i = floor((i + 1) * Sq / n) - 1, without a 64-bit
// division (dozens of instructions): x / n in double is within one of the floor for x < 2^51, and one
// integer step corrects it. inv_n = 1.0 / n.
__device__ __forceinline__ std::int64_t sampled_row(std::int64_t i, std::int64_t seq_q, std::int64_t n, double inv_n) {
  const std::int64_t x = (i + 1) * seq_q;
  std::int64_t t = static_cast<std::int64_t>(static_cast<double>(x) * inv_n);
  if (t * n > x) {
    --t;
  } else if ((t + 1) * n <= x) {
    ++t;
  }
  return t - 1;
}

}  // namespace sampleattn::cuda::sel
