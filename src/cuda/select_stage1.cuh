// Stage 1 of SampleAttention on the GPU (SPEC.md step 2): the exact softmax of the sampled query rows, in two
// tensor-core passes over Q_s K^T (mma.sync m16n8k16, fp32 accumulators), nothing stored between them but
// one log-sum-exp per sampled row (and pass 1's per-chunk partials).
//   pass 1 (lse_kernel):    rows = sampled queries, one chunk of the visible keys streamed in 64-key tiles
//                           (chunks balance the causal triangle over the GPU); online max / sum gives a
//                           partial (m, l) per row and chunk, which combine_kernel (select_launch.cu) turns
//                           into lse2 = log2 sum_j 2^(s_j * scale * log2 e);
//   pass 2 (colsum_kernel): one block owns 128 keys of one KV head and streams every sampled query of the
//                           KV head's Hq / Hkv query heads past them (S^T = K Q_s^T, keys as MMA rows), so
//                           the column sums of P = 2^(s - lse2) are row sums of the accumulator tile: no
//                           atomics, and each K tile is read once for the whole GQA group.
// The sampled row index is recomputed on the device from the closed form t_i = floor((i+1) Sq / n) - 1
// (core::sampled_rows), so nothing is copied from the host.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "cuda/check.h"
#include "cuda/pdl.cuh"
#include "cuda/select_args.h"
#include "cuda/select_mma_sm80.cuh"

namespace sampleattn::cuda::sel {

constexpr int kThreads = 128;    // 4 warps
constexpr int kLseRows = 128;    // pass 1: sampled rows per block (32 per warp: two m16 tiles)
constexpr int kLseKeys = 64;     // pass 1: keys per tile
constexpr int kColKeys = 128;    // pass 2: keys per block (32 per warp)
constexpr int kColQueries = 64;  // pass 2: sampled queries per tile
constexpr float kInf = __builtin_huge_valf();

// Shared-memory row stride in elements: +16 bytes per row, so the 8 rows of an ldmatrix hit distinct banks
// (for every head_dim that is a multiple of 32: rows 16 mod 128 bytes or 80 / 208 bytes apart).
template <int D>
constexpr int smem_stride() {
  return D + 8;
}

// head_dim up to 128 keeps each warp's 32 rows of A fragments (Q in pass 1, K in pass 2) in registers for the
// whole loop (64 registers at d = 128) with three blocks per SM; at d = 256 they would take 128, so they are
// re-read from shared memory per k-step, one block per SM (its tiles take 132 KiB).
template <int D>
constexpr bool fragments_in_registers() {
  return D <= 128;
}
template <int D>
constexpr int min_blocks() {
  return fragments_in_registers<D>() ? 3 : 1;
}

template <int D>
constexpr int lse_smem_bytes() {
  return (kLseRows + 2 * kLseKeys) * smem_stride<D>() * 2;
}
template <int D>
constexpr int colsum_smem_bytes() {
  return (kColKeys + 2 * kColQueries) * smem_stride<D>() * 2 + 2 * kColQueries * (4 + 4);
}

// Copies 8 elements (16 bytes) of one row into shared memory: cp.async when the source is 16-byte aligned,
// plain 2-byte loads otherwise; zeros when the row does not exist.
template <typename T>
__device__ __forceinline__ void copy_chunk(T* dst, const T* src, bool valid, bool aligned) {
  if (!valid) {
    *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
  } else if (aligned) {
    cp_async_16(dst, src);
  } else {
    const unsigned short* s = reinterpret_cast<const unsigned short*>(src);
    unsigned short v[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = s[e];
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(v);
  }
}

// Pass 1's query tile: the sampled rows of flat indices f0 .. f0 + kLseRows - 1 (f = sampled row * group +
// head within the GQA group of KV head kvh) into shared memory, chunk ch (8 elements) of row `row` at element
// offset(row, ch) of qs ([kLseRows][D + 8] by default; the sm_90a kernel passes its swizzled layout); rows
// past flat_total are zeros. Copied by a block of kBlockThreads threads.
template <typename T, int D, int kBlockThreads, typename Offset>
__device__ __forceinline__ void load_sampled_queries(T* qs, const T* qbase, const Stage1Args& a, std::int64_t f0,
                                                     std::int64_t flat_total, std::int64_t kvh, Offset offset) {
  constexpr int kChunks = D / 8;
  const std::int64_t group = a.group, n = a.num_sampled;
  for (int c = threadIdx.x; c < kLseRows * kChunks; c += kBlockThreads) {
    const int row = c / kChunks, ch = c % kChunks;
    const std::int64_t f = f0 + row;
    const bool valid = f < flat_total;
    const T* src = qbase;
    if (valid) {
      const std::int64_t h = kvh * group + f % group;
      src = qbase + sampled_row(f / group, a.seq_q, n, a.inv_sampled) * a.q_stride[1] + h * a.q_stride[2] + ch * 8;
    }
    copy_chunk(qs + offset(row, ch), src, valid, a.aligned);
  }
}
template <typename T, int D, int kBlockThreads>
__device__ __forceinline__ void load_sampled_queries(T* qs, const T* qbase, const Stage1Args& a, std::int64_t f0,
                                                     std::int64_t flat_total, std::int64_t kvh) {
  load_sampled_queries<T, D, kBlockThreads>(qs, qbase, a, f0, flat_total, kvh,
                                            [](int row, int ch) { return row * smem_stride<D>() + ch * 8; });
}

// Key tile [j0, j0 + rows) of one KV head into shared memory [rows][D + 8]; rows past Sk become zeros.
// Copied by a block of kBlockThreads threads.
template <typename T, int D, int Rows, int kBlockThreads = kThreads>
__device__ __forceinline__ void load_keys(T* dst, const T* kbase, std::int64_t k_seq_stride, std::int64_t j0,
                                          std::int64_t seq_k, bool aligned) {
  constexpr int kChunks = D / 8;
  for (int c = threadIdx.x; c < Rows * kChunks; c += kBlockThreads) {
    const int row = c / kChunks, ch = c % kChunks;
    const std::int64_t j = j0 + row;
    const bool valid = j < seq_k;
    copy_chunk(dst + row * smem_stride<D>() + ch * 8, valid ? kbase + j * k_seq_stride + ch * 8 : kbase, valid,
               aligned);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Pass 1. Block = 128 "flat" rows f = i * group + g of one (batch, KV head): sampled row i of query head
// kvh * group + g, so the query heads of a GQA group share each K tile and rows of similar position share a
// block. Blocks run from the last rows (longest key range) to the first.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads, min_blocks<D>()) lse_kernel(const Stage1Args a) {
  constexpr int kStride = smem_stride<D>(), kSteps = D / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* qs = reinterpret_cast<T*>(smem_raw);  // [kLseRows][kStride]
  T* ks = qs + kLseRows * kStride;         // [2][kLseKeys][kStride]
  pdl_trigger();  // the first kernel of the chain (pdl.cuh): launched the plain way
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  // blockIdx.x = (rank * num_chunks + chunk) * Hkv + kvh: the longest rows first, every KV head alike; the
  // block covers keys [chunk * key_chunk, (chunk + 1) * key_chunk) of its rows and writes partial (m, l).
  const std::int64_t b = blockIdx.y, kvh = blockIdx.x % a.kv_heads;
  const std::int64_t chunk = (blockIdx.x / a.kv_heads) % a.num_chunks;
  const std::int64_t rank = blockIdx.x / a.kv_heads / a.num_chunks;
  const std::int64_t group = a.group, n = a.num_sampled;
  const std::int64_t flat_total = n * group;
  const std::int64_t tiles = (flat_total + kLseRows - 1) / kLseRows;
  const std::int64_t f0 = (tiles - 1 - rank) * kLseRows;
  const std::int64_t pos_off = a.seq_k - a.seq_q;
  const T* qbase = static_cast<const T*>(a.q) + b * a.q_stride[0];
  const T* kbase = static_cast<const T*>(a.k) + b * a.k_stride[0] + kvh * a.k_stride[2];

  auto row_end = [&](std::int64_t f) -> std::int64_t {
    return a.causal ? pos_off + sampled_row(f / group, a.seq_q, n, a.inv_sampled) + 1 : a.seq_k;
  };
  const std::int64_t f_last = (f0 + kLseRows < flat_total ? f0 + kLseRows : flat_total) - 1;
  const std::int64_t key_lo = chunk * a.key_chunk;
  const std::int64_t row_end_max = row_end(f_last), end_min = row_end(f0);
  const std::int64_t end_max = row_end_max < key_lo + a.key_chunk ? row_end_max : key_lo + a.key_chunk;
  if (key_lo >= end_max) return;  // no row of this tile sees this chunk: its partials are never read
  load_sampled_queries<T, D, kThreads>(qs, qbase, a, f0, flat_total, kvh);
  const std::int64_t num_tiles = (end_max - key_lo + kLseKeys - 1) / kLseKeys;
  load_keys<T, D, kLseKeys>(ks, kbase, a.k_stride[1], key_lo, a.seq_k, a.aligned);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  // This warp's 32 rows as A fragments, held for the whole key loop (or re-read per k-step, d = 256).
  const int r0 = warp * 32;
  constexpr bool kHeld = fragments_in_registers<D>();
  auto q_frag = [&](std::uint32_t(&f)[4], int mt, int kk) {
    ldmatrix_x4(f, qs + (r0 + mt * 16 + (lane % 16)) * kStride + kk * 16 + (lane / 16) * 8);
  };
  std::uint32_t qa[2][kHeld ? kSteps : 1][4];
  if constexpr (kHeld) {
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int kk = 0; kk < kSteps; ++kk) q_frag(qa[mt][kk], mt, kk);
  }

  int end[2][2];  // one past the last visible key of each of the thread's rows (Sk < 2^31)
  float m[2][2], l[2][2];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const std::int64_t f = f0 + r0 + mt * 16 + hf * 8 + lane / 4;
      end[mt][hf] = static_cast<int>(row_end(f < flat_total ? f : f_last));
      m[mt][hf] = -kInf;
      l[mt][hf] = 0.0f;
    }

  for (std::int64_t tile = 0; tile < num_tiles; ++tile) {
    if (tile + 1 < num_tiles)
      load_keys<T, D, kLseKeys>(ks + ((tile + 1) & 1) * kLseKeys * kStride, kbase, a.k_stride[1],
                                key_lo + (tile + 1) * kLseKeys, a.seq_k, a.aligned);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const T* kt = ks + (tile & 1) * kLseKeys * kStride;
    float acc[2][8][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kSteps; ++kk) {
      if constexpr (!kHeld) {
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) q_frag(qa[mt][0], mt, kk);
      }
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        std::uint32_t bk[4];
        ldmatrix_x4(bk, kt + (np * 16 + (lane % 8) + (lane / 16) * 8) * kStride + kk * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          mma_16816<T>(acc[mt][2 * np], qa[mt][kHeld ? kk : 0], bk[0], bk[1]);
          mma_16816<T>(acc[mt][2 * np + 1], qa[mt][kHeld ? kk : 0], bk[2], bk[3]);
        }
      }
    }
    const int j0 = static_cast<int>(key_lo + tile * kLseKeys);
    const bool masked = j0 + kLseKeys > end_min;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        float mx = -kInf;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float& s = acc[mt][nt][hf * 2 + e];
            if (masked && j0 + nt * 8 + (lane % 4) * 2 + e >= end[mt][hf]) s = -kInf;
            mx = fmaxf(mx, s);
          }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        // Raw scores times scale_log2 (> 0) keep their order, so the max is taken before scaling.
        const float m_new = fmaxf(m[mt][hf], mx * a.scale_log2);
        const float m_use = m_new == -kInf ? 0.0f : m_new;
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) sum += ex2(fmaf(acc[mt][nt][hf * 2 + e], a.scale_log2, -m_use));
        l[mt][hf] = l[mt][hf] * ex2(m[mt][hf] - m_use) + sum;
        m[mt][hf] = m_new;
      }
    __syncthreads();
  }

#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float s = l[mt][hf];
      s += __shfl_xor_sync(0xffffffffu, s, 1);
      s += __shfl_xor_sync(0xffffffffu, s, 2);
      const std::int64_t f = f0 + r0 + mt * 16 + hf * 8 + lane / 4;
      if (lane % 4 == 0 && f < flat_total) {
        const std::int64_t h = kvh * group + f % group;
        const std::int64_t at = (chunk * a.batch * a.q_heads + b * a.q_heads + h) * n + f / group;
        a.part_m[at] = m[mt][hf];
        a.part_l[at] = s;
      }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Pass 2. Block = keys [j0, j0 + 128) of one (batch, KV head); warp w owns keys j0 + 32w .. +31 as two m16
// tiles of A fragments. For each query head of the group, the sampled rows that can see any of these keys
// (i >= i_start) stream through shared memory 64 at a time (double-buffered cp.async). Per key the thread
// sums P over its columns; a quad shuffle finishes the row sum at the end of each head.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads, min_blocks<D>()) colsum_kernel(const Stage1Args a) {
  constexpr int kStride = smem_stride<D>(), kChunks = D / 8, kSteps = D / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* ks = reinterpret_cast<T*>(smem_raw);                              // [kColKeys][kStride]
  T* qs = ks + kColKeys * kStride;                                     // [2][kColQueries][kStride]
  int* qpos = reinterpret_cast<int*>(qs + 2 * kColQueries * kStride);  // [2][kColQueries]
  float* qlse = reinterpret_cast<float*>(qpos + 2 * kColQueries);      // [2][kColQueries]
  pdl_wait();  // the combined lse (pdl.cuh)
  pdl_trigger();
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  // blockIdx.x = key tile * Hkv + kvh: the first key tiles (seen by every sampled row) start first.
  const std::int64_t b = blockIdx.y, kvh = blockIdx.x % a.kv_heads;
  const std::int64_t j0 = static_cast<std::int64_t>(blockIdx.x / a.kv_heads) * kColKeys;
  const std::int64_t group = a.group, n = a.num_sampled, seq_q = a.seq_q, seq_k = a.seq_k;
  const std::int64_t pos_off = seq_k - seq_q;
  const int w = static_cast<int>(a.window);
  const int tail_pos = static_cast<int>(seq_k - a.dense_tail);  // rows at key position >= tail_pos: dense tail
  const T* qbase = static_cast<const T*>(a.q) + b * a.q_stride[0];
  const T* kbase = static_cast<const T*>(a.k) + b * a.k_stride[0] + kvh * a.k_stride[2];

  // First sampled row that sees key j0: t_i >= r0 <=> i >= ceil((r0 + 1) n / Sq) - 1.
  std::int64_t i_start = 0;
  if (a.causal && j0 - pos_off > 0) i_start = ((j0 - pos_off + 1) * n + seq_q - 1) / seq_q - 1;
  const std::int64_t per_head = i_start < n ? (n - i_start + kColQueries - 1) / kColQueries : 0;
  const std::int64_t total = per_head * group;

  const int key_row0 = warp * 32;
  auto store_head = [&](std::int64_t g, const float(&cs)[2][2], const float(&in)[2][2]) {
    const std::int64_t bh = b * a.q_heads + kvh * group + g;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        float c = cs[mt][hf], s = in[mt][hf];
        c += __shfl_xor_sync(0xffffffffu, c, 1);
        c += __shfl_xor_sync(0xffffffffu, c, 2);
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        s += __shfl_xor_sync(0xffffffffu, s, 2);
        const std::int64_t j = j0 + key_row0 + mt * 16 + hf * 8 + lane / 4;
        if (lane % 4 == 0 && j < seq_k) {
          a.colscore[bh * seq_k + j] = c;
          a.inside[bh * seq_k + j] = s;
        }
      }
  };
  float colsum[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}}, inside[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
  if (total == 0) {
    for (std::int64_t g = 0; g < group; ++g) store_head(g, colsum, inside);
    return;
  }

  // Thread pair (2r, 2r + 1) loads query row r of the tile, chunks alternating between the two threads (each
  // pair covers 32 contiguous bytes per instruction): one sampled_row() per thread and tile.
  static_assert(2 * kColQueries == kThreads, "one thread pair per query row");
  auto load_queries = [&](std::int64_t t, int buf) {
    const std::int64_t g = t / per_head, i0 = i_start + (t % per_head) * kColQueries;
    const std::int64_t h = kvh * group + g;
    const int row = tid / 2;
    const std::int64_t i = i0 + row;
    const bool valid = i < n;
    const std::int64_t trow = valid ? sampled_row(i, seq_q, n, a.inv_sampled) : 0;
    const T* src = qbase + trow * a.q_stride[1] + h * a.q_stride[2];
    T* dst = qs + (buf * kColQueries + row) * kStride;
#pragma unroll
    for (int m = 0; m < kChunks / 2; ++m) {
      const int ch = (tid & 1) + 2 * m;
      copy_chunk(dst + ch * 8, src + ch * 8, valid, a.aligned);
    }
    if ((tid & 1) == 0) {
      // Padding rows: position -1 is invisible under causal masking and keeps p - w within int32 for every
      // window; lse = +inf makes them weightless (2^-inf = 0).
      qpos[buf * kColQueries + row] = valid ? static_cast<int>(pos_off + trow) : -1;
      qlse[buf * kColQueries + row] = valid ? a.lse2[(b * a.q_heads + h) * a.sampled_stride + i] : kInf;
    }
  };

  load_keys<T, D, kColKeys>(ks, kbase, a.k_stride[1], j0, seq_k, a.aligned);
  load_queries(0, 0);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  constexpr bool kHeld = fragments_in_registers<D>();
  auto k_frag = [&](std::uint32_t(&f)[4], int mt, int kk) {
    ldmatrix_x4(f, ks + (key_row0 + mt * 16 + (lane % 16)) * kStride + kk * 16 + (lane / 16) * 8);
  };
  std::uint32_t ka[2][kHeld ? kSteps : 1][4];
  if constexpr (kHeld) {
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int kk = 0; kk < kSteps; ++kk) k_frag(ka[mt][kk], mt, kk);
  }

  // A tile needs no per-element test when every key of the block is visible to, and outside the band of,
  // every query of the tile and no query is in the dense tail (causal only; queries ascend in position).
  const std::int64_t block_last_key = j0 + kColKeys - 1;
  for (std::int64_t t = 0; t < total; ++t) {
    const int buf = static_cast<int>(t & 1);
    if (t + 1 < total) load_queries(t + 1, buf ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const T* qt = qs + buf * kColQueries * kStride;
    float acc[2][8][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kSteps; ++kk) {
      if constexpr (!kHeld) {
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) k_frag(ka[mt][0], mt, kk);
      }
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        std::uint32_t bq[4];
        ldmatrix_x4(bq, qt + (np * 16 + (lane % 8) + (lane / 16) * 8) * kStride + kk * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          mma_16816<T>(acc[mt][2 * np], ka[mt][kHeld ? kk : 0], bq[0], bq[1]);
          mma_16816<T>(acc[mt][2 * np + 1], ka[mt][kHeld ? kk : 0], bq[2], bq[3]);
        }
      }
    }
    const std::int64_t i0 = i_start + (t % per_head) * kColQueries;
    const std::int64_t i_last = (i0 + kColQueries < n ? i0 + kColQueries : n) - 1;
    const std::int64_t first_pos = pos_off + sampled_row(i0, seq_q, n, a.inv_sampled);
    const std::int64_t last_pos = pos_off + sampled_row(i_last, seq_q, n, a.inv_sampled);
    const bool fast = a.causal && first_pos >= block_last_key + w && last_pos < tail_pos;
    const int* qp = qpos + buf * kColQueries;
    const float* ql = qlse + buf * kColQueries;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      const int c = nt * 8 + (lane % 4) * 2;
      const float2 lse = *reinterpret_cast<const float2*>(ql + c);
      if (fast) {
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int hf = 0; hf < 2; ++hf)
            colsum[mt][hf] += ex2(fmaf(acc[mt][nt][hf * 2], a.scale_log2, -lse.x)) +
                              ex2(fmaf(acc[mt][nt][hf * 2 + 1], a.scale_log2, -lse.y));
      } else {
        const int2 pos = *reinterpret_cast<const int2*>(qp + c);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            const int j = static_cast<int>(j0) + key_row0 + mt * 16 + hf * 8 + lane / 4;
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int p = e == 0 ? pos.x : pos.y;
              const bool visible = !a.causal || j <= p;
              const bool band = p >= tail_pos || (j > p - w && (a.causal || j - w < p));  // j < p + w without int32 overflow
              const float prob =
                  visible ? ex2(fmaf(acc[mt][nt][hf * 2 + e], a.scale_log2, -(e == 0 ? lse.x : lse.y))) : 0.0f;
              colsum[mt][hf] += prob;
              inside[mt][hf] += band ? prob : 0.0f;
            }
          }
      }
    }
    if ((t + 1) % per_head == 0) {
      store_head(t / per_head, colsum, inside);
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) colsum[mt][hf] = inside[mt][hf] = 0.0f;
    }
    __syncthreads();
  }
}

// Pass 1 or pass 2 on `stream` with the given pair of kernels (both kernel families use the same grids:
// pass 1 (row tiles x chunks x Hkv, B), pass 2 (key tiles x Hkv, B)); pass 2 as a dependent launch (pdl.cuh).
// The dynamic shared-memory limit is a per-device function attribute, so it is set on every launch (a
// microsecond) rather than once per process: the current device may differ per call. max_carveout asks for
// the largest shared-memory carveout (the rest stays L1), which the driver need not pick by itself.
template <typename LseKernel, typename ColKernel>
void launch_stage1_passes(LseKernel lse, ColKernel col, int threads, int lse_smem, int col_smem, bool max_carveout,
                          const Stage1Args& a, int pass, cudaStream_t stream, const char* family) {
  cudaError_t status = cudaFuncSetAttribute(lse, cudaFuncAttributeMaxDynamicSharedMemorySize, lse_smem);
  if (status == cudaSuccess) status = cudaFuncSetAttribute(col, cudaFuncAttributeMaxDynamicSharedMemorySize, col_smem);
  if (status == cudaSuccess && max_carveout)
    status = cudaFuncSetAttribute(lse, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
  if (status == cudaSuccess && max_carveout)
    status = cudaFuncSetAttribute(col, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
  check_cuda(status, family);
  if (pass == 1) {  // the first kernel of the selection: after whatever the stream ran before, in full
    const std::int64_t lse_tiles = (a.num_sampled * a.group + kLseRows - 1) / kLseRows;
    const dim3 lse_grid(static_cast<unsigned>(lse_tiles * a.num_chunks * a.kv_heads), static_cast<unsigned>(a.batch));
    launch(lse, lse_grid, threads, lse_smem, stream, false, family, a);
    return;
  }
  const std::int64_t key_tiles = (a.seq_k + kColKeys - 1) / kColKeys;
  const dim3 col_grid(static_cast<unsigned>(key_tiles * a.kv_heads), static_cast<unsigned>(a.batch));
  launch(col, col_grid, threads, col_smem, stream, pdl_allowed(), family, a);
}

// Pass 1 or pass 2 of one (dtype, head_dim) instance of the sm_80 kernels.
template <typename T, int D>
void launch_stage1_instance(const Stage1Args& a, int pass, cudaStream_t stream) {
  launch_stage1_passes(lse_kernel<T, D>, colsum_kernel<T, D>, kThreads, lse_smem_bytes<D>(), colsum_smem_bytes<D>(),
                       false, a, pass, stream, pass == 1 ? "stage 1 pass 1 (sampled-row log-sum-exp)"
                                                         : "stage 1 pass 2 (column scores)");
}

}  // namespace sampleattn::cuda::sel
