// Stage 1 pass 1 on Hopper (sm_90a): lse_kernel of select_stage1.cuh with the products on wgmma. A = 128
// gathered sampled query rows (shared memory, 128-byte swizzled, copied once), B = 128-key tiles [128, d] of
// the chunk, swizzled (K-major), two stages; one m64n128 product per warpgroup and tile. The warpgroups meet
// only through per-stage mbarriers: every thread's copies of a tile arrive on its "full" barrier, every
// thread's finished product on its "empty" one, so one warpgroup may run up to a tile ahead of the other (a
// block barrier per tile made the faster one wait every tile). Online sum per row against a lazily updated
// reference max (no max reduction per tile, see kLazyLimit).
#pragma once

#include <cstdint>
#include <type_traits>

#include "cuda/select_common_sm90.cuh"

namespace sampleattn::cuda::sel {

// Pass 1 streams 128-key tiles (one m64n128 product per warpgroup and tile) through two stages: the next
// tile loads while this one is multiplied and exponentiated. Against 64-key tiles in four stages with the
// query rows in registers: 2-4% faster, and the registers the A fragments held now hold the wider tile.
constexpr int kLseKeysSm90 = 128;
constexpr int kLseStagesSm90 = 2;
// Pass 1 exponentiates a tile against the row's reference max (the largest score seen when it was last set)
// instead of the tile's own max, so no max is reduced per tile. A thread's sum over its 32 scores of one row
// and tile at or above 2^30 (a score more than ~26 above the reference, the row's first visible tile: reference
// -inf, or a NaN) sends that row and tile through the exact step (tile max, rescale, new reference). Below it no
// partial sum can overflow: < 2^30 per tile, at most 2^20 tiles per chunk (seq_k < 2^31), so < 2^50.
constexpr float kLazyLimit = 1073741824.0f;

// Pass 1: 2 x [128][ds] swizzled key tiles, the swizzled [128][ds] query tile (ds = stored_dim_sm90<D>), the
// stages' full and empty mbarriers; +1 KiB to align the swizzle (97 KiB at d = 96 and 128: two blocks per SM;
// 193 KiB at d = 256).
template <int D>
constexpr int lse_smem_bytes_sm90() {
  constexpr int kDs = stored_dim_sm90<D>();
  return 1024 + kLseStagesSm90 * kLseKeysSm90 * kDs * 2 + kLseRows * kDs * 2 + 2 * kLseStagesSm90 * 8;
}

// S[64 x 128] = A * B^T with both operands in shared memory: A = this warpgroup's 64 rows of a swizzled
// [128][d] tile (descriptor `desc_a`), B = a swizzled [128][d] key tile (`desc_b`); 64-column blocks of
// either are 128 rows * 128 bytes apart.
template <typename T, int D>
__device__ __forceinline__ void product_64x128(float (&acc)[16][4], std::uint64_t desc_a, std::uint64_t desc_b) {
  static_assert(kLseKeysSm90 == 128 && kLseRows == 128, "pass 1 tiles are 128 rows by 128 keys");
  sm90::wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const std::uint64_t step = ((kk >> 2) * 128 * 128 + (kk & 3) * 32) >> 4;
    sm90::wgmma_m64n128k16_ss<T>(acc, desc_a + step, desc_b + step, kk > 0);
  }
  sm90::wgmma_commit();
  sm90::wgmma_wait<0>();
  sm90::fence_operand(acc);
}

// ---------------------------------------------------------------------------------------------------------
// Pass 1, block = the 128 flat rows of select_stage1.cuh's lse_kernel (same partial layout); warp w owns rows
// 16 w .. 16 w + 15 (warpgroup w / 4 the m64 tile 64 (w / 4)). Block order: select_pass1_order.h (first every
// block that sees a whole chunk, chunk by chunk, so that the blocks that run together read one KV head's
// chunk from L2 and not every chunk of every head at once; then the others, longest first).
// Each thread keeps its own reference max per row (kLazyLimit); the quad's four (max, sum) pairs of a row are
// combined once, at the end.
template <typename T, int D>
__global__ void __launch_bounds__(kThreadsSm90, min_blocks_sm90<D>()) lse_kernel_sm90(const Stage1Args a) {
#if SAMPLEATTN_SM90A
  constexpr int kDs = stored_dim_sm90<D>();
  constexpr int kChunks = kDs / 8;  // of a stored row; the first D / 8 are copied
  constexpr int kTileElems = kLseKeysSm90 * kDs;
  static_assert(kTileElems * 2 % 1024 == 0, "swizzled tiles must stay 1024-byte aligned");
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  T* ks = reinterpret_cast<T*>(align_1024(smem_raw));  // [kLseStagesSm90][kLseKeysSm90][kDs], 128-byte swizzle
  T* qs = ks + kLseStagesSm90 * kTileElems;               // [kLseRows][kDs], 128-byte swizzle
  // Per stage a "full" barrier (every thread's copies of the tile landed) and an "empty" one (every thread's
  // product on it done): the two warpgroups meet only through these, not at a block barrier per tile.
  std::uint64_t* full = reinterpret_cast<std::uint64_t*>(qs + kLseRows * kDs);  // [kLseStagesSm90]
  std::uint64_t* empty = full + kLseStagesSm90;                             // [kLseStagesSm90]
  pdl_trigger();  // the first kernel of the chain (pdl.cuh): launched the plain way
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const std::int64_t group = a.group, n = a.num_sampled;
  const std::int64_t flat_total = n * group;
  const std::int64_t tiles = (flat_total + kLseRows - 1) / kLseRows;
  static_assert(kLseRows == kPass1RowTile, "select_pass1_order.h counts row tiles of kLseRows");
  std::int64_t chunk, kvh, rank;
  pass1_block(a.pass1_order, a.kv_heads, blockIdx.x, chunk, kvh, rank);
  const std::int64_t b = blockIdx.y;
  const std::int64_t f0 = (tiles - 1 - rank) * kLseRows;
  const std::int64_t pos_off = a.seq_k - a.seq_q;
  const T* qbase = static_cast<const T*>(a.q) + b * a.q_stride[0];
  const T* kbase = static_cast<const T*>(a.k) + b * a.k_stride[0] + kvh * a.k_stride[2];

  auto row_end = [&](std::int64_t f) -> std::int64_t {
    return a.causal ? pos_off + sampled_row(f / group, a.seq_q, n, a.inv_sampled) + 1 : a.seq_k;
  };
  const std::int64_t f_last = (f0 + kLseRows < flat_total ? f0 + kLseRows : flat_total) - 1;
  const std::int64_t key_lo = chunk * a.key_chunk;
  const std::int64_t row_end_max = row_end(f_last);
  const std::int64_t end_max = row_end_max < key_lo + a.key_chunk ? row_end_max : key_lo + a.key_chunk;
  if (key_lo >= end_max) return;  // no row of this tile sees this chunk: its partials are never read
  init_stage_barriers<kLseStagesSm90>(full, empty);
  load_sampled_queries<T, D, kThreadsSm90>(qs, qbase, a, f0, flat_total, kvh, [](int row, int qch) {
    return sm90::sw128_offset<kLseRows>(row, qch);  // swizzled
  });
  // Key tile `tile` of the chunk into stage `buf`, rows past Sk as zeros (their scores are masked). The thread
  // copies chunk `ch` of rows row0 + kRowStep * it: rows 8 apart share the swizzle, so the shared offsets are
  // one base plus multiples of kRowStep * 128 bytes, and the per-tile work is a few instructions per copy;
  // tiles that end before Sk skip the row tests. Threads of the stored columns past D copy nothing.
  constexpr int kRowStep = kThreadsSm90 / kChunks, kIters = kLseKeysSm90 / kRowStep;
  static_assert(kRowStep % 8 == 0, "rows of one thread share the swizzle phase");
  const int ch = tid % kChunks, row0 = tid / kChunks;
  const std::uint32_t k_dst = smem_addr(ks) + sm90::sw128_offset<kLseKeysSm90>(row0, ch) * 2;
  const T* k_src = kbase + (key_lo + row0) * a.k_stride[1] + ch * 8;
  const std::int64_t k_step = kRowStep * a.k_stride[1], k_tile_step = kLseKeysSm90 * a.k_stride[1];
  const int rows_left = static_cast<int>(a.seq_k - key_lo - row0);  // Sk < 2^31
  const bool copies = kDs == D || ch < D / 8;
  auto load_tile = [&](int tile, int buf) {
    if (!copies) return;
    const int left = rows_left - tile * kLseKeysSm90;  // this thread's rows it * kRowStep < left exist
    const T* src = k_src + tile * k_tile_step;
    const std::uint32_t dst = k_dst + buf * kTileElems * 2;
    if (a.aligned && left > (kIters - 1) * kRowStep) {
#pragma unroll
      for (int it = 0; it < kIters; ++it) sm80::cp_async_16(dst + it * kRowStep * 128, src + it * k_step, true);
    } else if (a.aligned) {
#pragma unroll
      for (int it = 0; it < kIters; ++it) {
        const bool valid = it * kRowStep < left;
        sm80::cp_async_16(dst + it * kRowStep * 128, valid ? src + it * k_step : kbase, valid);
      }
    } else {
#pragma unroll
      for (int it = 0; it < kIters; ++it) {
        const bool valid = it * kRowStep < left;
        copy_chunk(ks + buf * kTileElems + sm90::sw128_offset<kLseKeysSm90>(row0 + it * kRowStep, ch),
                   valid ? src + it * k_step : kbase, valid, false);
      }
    }
  };
  const int num_tiles = static_cast<int>((end_max - key_lo + kLseKeysSm90 - 1) / kLseKeysSm90);
  // Tiles 0 and 1 (and the query rows, copied before: stage 0's arrival waits for them too).
#pragma unroll
  for (int st = 0; st < kLseStagesSm90; ++st) {
    if (st < num_tiles) {
      load_tile(st, st);
      arrive_full(&full[st]);
    }
  }

  const int r0 = warp * 16;
  // This warpgroup's 64 rows: 64 rows * 128 bytes into each 64-column block of the [128][d] tile.
  const std::uint64_t q_desc = sm90::sw128_desc(smem_addr(qs), 16, 1024) + ((warp / 4) * 64 * 128 >> 4);

  // Rows ascend in position, so the warp's first row has the smallest end: tiles before it need no mask.
  const int warp_end_min = static_cast<int>(row_end(f0 + r0 < flat_total ? f0 + r0 : f_last));
  int end[2];  // one past the last visible key of each of the thread's rows (Sk < 2^31)
  float m[2], l[2];
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const std::int64_t f = f0 + r0 + hf * 8 + lane / 4;
    end[hf] = static_cast<int>(row_end(f < flat_total ? f : f_last));
    m[hf] = -kInf;
    l[hf] = 0.0f;
  }

  const std::uint64_t k_desc = sm90::sw128_desc(smem_addr(ks), 16, 1024);
  // One tile, its stage buf = tile % kLseStagesSm90 a constant (the loop below is unrolled by the stage count),
  // so the B descriptors are a uniform base plus immediates: one uniform add per k-step (a run-time stage
  // cost ~4 register moves per k-step, ~25 instructions per tile).
  auto step = [&](int tile, auto buf_c) {
    constexpr int buf = decltype(buf_c)::value;
    const std::uint32_t use = static_cast<std::uint32_t>(tile / kLseStagesSm90) & 1u;
    sm90::mbar_wait(smem_addr(&full[buf]), use);
    sm90::fence_proxy_async();  // the copies wrote through the generic proxy; wgmma reads through the async one
    float acc[16][4];
    product_64x128<T, D>(acc, q_desc, k_desc + buf * (kTileElems * 2 / 16));
    sm90::mbar_arrive(smem_addr(&empty[buf]));
    const int j0 = static_cast<int>(key_lo) + tile * kLseKeysSm90;
    const bool masked = j0 + kLseKeysSm90 > warp_end_min;
    if (masked) {  // warp-uniform: the other tiles skip the compares
#pragma unroll
      for (int hf = 0; hf < 2; ++hf)
#pragma unroll
        for (int nt = 0; nt < kLseKeysSm90 / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e)
            if (j0 + nt * 8 + (lane % 4) * 2 + e >= end[hf]) acc[nt][hf * 2 + e] = -kInf;
    }
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < kLseKeysSm90 / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) sum += ex2(fmaf(acc[nt][hf * 2 + e], a.scale_log2, -m[hf]));
      if (!(sum < kLazyLimit)) {
        float mx = -kInf;
#pragma unroll
        for (int nt = 0; nt < kLseKeysSm90 / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) mx = fmaxf(mx, acc[nt][hf * 2 + e]);
        // Raw scores times scale_log2 (> 0) keep their order, so the max is taken before scaling.
        const float m_new = fmaxf(m[hf], mx * a.scale_log2);
        const float m_use = m_new == -kInf ? 0.0f : m_new;
        sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < kLseKeysSm90 / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) sum += ex2(fmaf(acc[nt][hf * 2 + e], a.scale_log2, -m_use));
        l[hf] *= ex2(m[hf] - m_use);
        m[hf] = m_new;
      }
      l[hf] += sum;
    }
    // Refill this stage with tile + 2 once both warpgroups' products on it are done.
    if (tile + kLseStagesSm90 < num_tiles) {
      sm90::mbar_wait(smem_addr(&empty[buf]), use);
      load_tile(tile + kLseStagesSm90, buf);
      arrive_full(&full[buf]);
    }
  };
  static_assert(kLseStagesSm90 == 2, "the tile loop is unrolled by the stage count");
  for (int tile = 0; tile < num_tiles; tile += kLseStagesSm90) {
    step(tile, std::integral_constant<int, 0>{});
    if (tile + 1 < num_tiles) step(tile + 1, std::integral_constant<int, 1>{});
  }

#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float mq = fmaxf(m[hf], __shfl_xor_sync(0xffffffffu, m[hf], 1));
    mq = fmaxf(mq, __shfl_xor_sync(0xffffffffu, mq, 2));
    // Each thread's sum rescaled to the quad's max. mq = -inf: every sum is 0 or NaN (fmaxf skips NaN, so a
    // thread that saw only NaN or masked scores keeps m = -inf); passing l on keeps a NaN in the partial.
    float s = mq == -kInf ? l[hf] : l[hf] * ex2(m[hf] - mq);
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    s += __shfl_xor_sync(0xffffffffu, s, 2);
    const std::int64_t f = f0 + r0 + hf * 8 + lane / 4;
    if (lane % 4 == 0 && f < flat_total) {
      const std::int64_t h = kvh * group + f % group;
      const std::int64_t at = (chunk * a.batch * a.q_heads + b * a.q_heads + h) * n + f / group;
      a.part_m[at] = mq;
      a.part_l[at] = s;
    }
  }
#endif
}

}  // namespace sampleattn::cuda::sel
