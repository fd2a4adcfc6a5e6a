// Stage 1 of SampleAttention on Hopper (sm_90a): the two passes of select_stage1.cuh with the products on
// wgmma instead of mma.sync. Same grid sizes (block orders differ, see each kernel), same partials, same
// per-row math; a block is two warpgroups (256 threads) and every warp owns 16 MMA rows.
//   pass 1 (lse_kernel_sm90):    A = 128 gathered sampled query rows (shared memory, 128-byte swizzled,
//                                copied once), B = 128-key tiles [128, d] of the chunk, swizzled (K-major),
//                                two stages; one m64n128 product per warpgroup and tile. The warpgroups meet
//                                only through per-stage mbarriers: every thread's copies of a tile arrive on
//                                its "full" barrier, every thread's finished product on its "empty" one, so
//                                one warpgroup may run up to a tile ahead of the other (a block barrier per
//                                tile made the faster one wait every tile). Online sum per row against a
//                                lazily updated reference max (no max reduction per tile, see kLazyLimit).
//   pass 2 (colsum_kernel_sm90): A = 128 keys, B = the same 64 sampled rows of two query heads of the GQA
//                                group per tile ([128, d], m64n128, keys from shared memory; one head and
//                                the keys in registers where the group is odd), swizzled (K-major: d
//                                contiguous), cp.async one tile ahead (three with one head); per tile and
//                                warp one of three paths: every query sees the warp's 16 keys outside its band (sum
//                                only), every query sees them inside its band (sum into both scores), or, for
//                                the tiles that cross the diagonal or the band's end, the same choice per
//                                group of 8 queries with per-score tests only in the groups that straddle a
//                                boundary.
// Several warpgroups per SM (two blocks of two) let one warpgroup's exp2 work (MUFU) run while another's
// product runs on the tensor cores: per score both cost about the same (256 FLOPs at 740 TFLOP/s against
// 1/16 clock per SM). Per tile the loops are a few instructions beyond the per-score FFMA, MUFU and FADD:
// whole-tile copies without row tests, B descriptors as a uniform base plus immediates (the tile loops are
// unrolled by the stage count), no max reduction, mask compares only on tiles that cross a row end. Pass 2's
// loader advances its pointers by additions and runs while the product is in flight. Measured slower and
// not kept (bench/NOTES.md): the next tile's product before this tile's exp2 inside a warpgroup (two
// accumulator sets), a half-tile ping-pong of the two warpgroups with a second block barrier per tile,
// several partial sums per row instead of one chain of adds, pass 2's tiles in two committed halves, three
// blocks per SM with the keys from shared memory, the query copies concentrated in two loader warps.
// Launched only on compute capability 9.0 with the sm_90a cubin (stage1_sm90_runnable); other targets
// compile an empty body.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "cuda/check.h"
#include "cuda/pipeline_sm90.cuh"
#include "cuda/ptx_sm90.cuh"
#include "cuda/select_args.h"
#include "cuda/select_stage1.cuh"
#include "cuda/sm90_check.h"

namespace sampleattn::cuda::sel {

constexpr int kThreadsSm90 = 256;  // two warpgroups
// Pass 2's stages: with one head per tile ([64][d]) tile t is read while t + 1 .. t + 3 load (measured, with
// a commit group and a block barrier per tile then, against loading pairs of tiles one pair ahead: 4% faster
// at 128K); with two heads per tile ([128][d]) two stages (the shared memory of four single tiles, two single
// tiles' worth loading ahead), so that two blocks still fit on an SM.
template <int kHeads>
constexpr int colsum_stages_sm90() {
  return kHeads == 2 ? 2 : 4;
}
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

// Pass 1: 2 x [128][d] swizzled key tiles, the swizzled [128][d] query tile, the stages' full and empty
// mbarriers; +1 KiB to align the swizzle (97 KiB at d = 128: two blocks per SM).
template <int D>
constexpr int lse_smem_bytes_sm90() {
  return 1024 + kLseStagesSm90 * kLseKeysSm90 * D * 2 + kLseRows * D * 2 + 2 * kLseStagesSm90 * 8;
}
// Pass 2's key tile: [128][d + 8] (ldmatrix into registers) with one head per tile, swizzled [128][d] (the
// SS operand of wgmma) with two.
template <int D, int kHeads>
constexpr int colsum_key_elems_sm90() {
  return kHeads == 1 ? kColKeys * smem_stride<D>() : kColKeys * D;
}
// Pass 2: the stages' swizzled [64 kHeads][d] query tiles, the key tile, per stage 64 query positions and
// 64 kHeads lse, the stages' full and empty mbarriers (at d = 128: 98.5 KiB with two heads per tile, 101 KiB
// with one; two blocks per SM).
template <int D, int kHeads>
constexpr int colsum_smem_bytes_sm90() {
  constexpr int kStages = colsum_stages_sm90<kHeads>();
  return 1024 + kStages * kColQueries * kHeads * D * 2 + colsum_key_elems_sm90<D, kHeads>() * 2 +
         kStages * kColQueries * (4 + 4 * kHeads) + 2 * kStages * 8;
}

// Shared memory from the first 1024-byte boundary: the 128-byte swizzle is a function of address bits 4..9.
__device__ __forceinline__ unsigned char* align_1024(unsigned char* p) {
  return p + ((1024u - (smem_addr(p) & 1023u)) & 1023u);
}

// The stages' "full" barriers (2 arrivals per thread: arrive_full) and "empty" ones (1 per thread), then a
// block barrier so that no thread arrives before they are initialised.
template <int kStages>
__device__ __forceinline__ void init_stage_barriers(std::uint64_t* full, std::uint64_t* empty) {
#if SAMPLEATTN_SM90A
  if (threadIdx.x == 0) {
#pragma unroll
    for (int st = 0; st < kStages; ++st) {
      sm90::mbar_init(smem_addr(&full[st]), 2 * kThreadsSm90);
      sm90::mbar_init(smem_addr(&empty[st]), kThreadsSm90);
    }
  }
  __syncthreads();
#endif
}

// A thread's two arrivals on a stage's "full" mbarrier (initialised to 2 per thread) once it has issued its
// copies of the stage: one when its cp.async copies land, one with release semantics for its plain shared
// stores (copy_chunk's path for unaligned inputs, pass 2's positions and padding lse).
__device__ __forceinline__ void arrive_full(std::uint64_t* bar) {
#if SAMPLEATTN_SM90A
  sm90::cp_async_arrive(smem_addr(bar));
  sm90::mbar_arrive(smem_addr(bar));
#endif
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
__global__ void __launch_bounds__(kThreadsSm90, 2) lse_kernel_sm90(const Stage1Args a) {
#if SAMPLEATTN_SM90A
  constexpr int kChunks = D / 8;
  constexpr int kTileElems = kLseKeysSm90 * D;
  static_assert(kTileElems * 2 % 1024 == 0, "swizzled tiles must stay 1024-byte aligned");
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  T* ks = reinterpret_cast<T*>(align_1024(smem_raw));  // [kLseStagesSm90][kLseKeysSm90][D], 128-byte swizzle
  T* qs = ks + kLseStagesSm90 * kTileElems;               // [kLseRows][D], 128-byte swizzle
  // Per stage a "full" barrier (every thread's copies of the tile landed) and an "empty" one (every thread's
  // product on it done): the two warpgroups meet only through these, not at a block barrier per tile.
  std::uint64_t* full = reinterpret_cast<std::uint64_t*>(qs + kLseRows * D);  // [kLseStagesSm90]
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
  // tiles that end before Sk skip the row tests.
  constexpr int kRowStep = kThreadsSm90 / kChunks, kIters = kLseKeysSm90 / kRowStep;
  static_assert(kRowStep % 8 == 0, "rows of one thread share the swizzle phase");
  const int ch = tid % kChunks, row0 = tid / kChunks;
  const std::uint32_t k_dst = smem_addr(ks) + sm90::sw128_offset<kLseKeysSm90>(row0, ch) * 2;
  const T* k_src = kbase + (key_lo + row0) * a.k_stride[1] + ch * 8;
  const std::int64_t k_step = kRowStep * a.k_stride[1], k_tile_step = kLseKeysSm90 * a.k_stride[1];
  const int rows_left = static_cast<int>(a.seq_k - key_lo - row0);  // Sk < 2^31
  auto load_tile = [&](int tile, int buf) {
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

// ---------------------------------------------------------------------------------------------------------
// Pass 2's keys as the A operand of the warpgroup's product with a query tile (B: a swizzled [kN][d] tile,
// descriptor `q_desc`, 64-column blocks kN rows * 128 bytes apart). One head per tile keeps this warp's 16
// keys in registers (fragments loaded once per block): reading them from shared memory every tile measured
// 10% slower there (pass 2 at 32K). Two heads per tile read them from shared memory (descriptor of the
// warpgroup's 64 keys of the swizzled tile), which leaves the registers to the wider accumulator. The
// descriptors' low 14 bits are the address / 16 (shared addresses < 256 KiB never carry out of them), so
// k-step kk (16 columns of d) adds a constant. `during()` runs while the product is in flight (work that
// touches neither acc nor the operands).
template <typename T, int D, int kHeads>
struct ColKeysSm90;
template <typename T, int D>
struct ColKeysSm90<T, D, 1> {
  std::uint32_t frag[D / 16][4];
  __device__ __forceinline__ static void copy(T* ks, const T* kbase, std::int64_t stride, std::int64_t j0,
                                              std::int64_t seq_k, bool aligned) {
    load_keys<T, D, kColKeys, kThreadsSm90>(ks, kbase, stride, j0, seq_k, aligned);
  }
  // After the key tile landed (stage 0's first full phase).
  __device__ __forceinline__ void ready(const T* ks, int warp, int lane) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      ldmatrix_x4(frag[kk], ks + (warp * 16 + (lane % 16)) * smem_stride<D>() + kk * 16 + (lane / 16) * 8);
  }
  template <typename During>
  __device__ __forceinline__ void product(float (&acc)[8][4], std::uint64_t q_desc, During&& during) const {
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      sm90::wgmma_m64n64k16_rs<T, 0>(acc, frag[kk], q_desc + (((kk >> 2) * kColQueries * 128 + (kk & 3) * 32) >> 4),
                                     kk > 0);
    sm90::wgmma_commit();
    during();
    sm90::wgmma_wait<0>();
    sm90::fence_operand(acc);
  }
};
template <typename T, int D>
struct ColKeysSm90<T, D, 2> {
  std::uint64_t desc = 0;
  __device__ __forceinline__ static void copy(T* ks, const T* kbase, std::int64_t stride, std::int64_t j0,
                                              std::int64_t seq_k, bool aligned) {
    constexpr int kChunks = D / 8;
    for (int c = threadIdx.x; c < kColKeys * kChunks; c += kThreadsSm90) {
      const int row = c / kChunks, ch = c % kChunks;
      const bool valid = j0 + row < seq_k;
      copy_chunk(ks + sm90::sw128_offset<kColKeys>(row, ch), valid ? kbase + (j0 + row) * stride + ch * 8 : kbase,
                 valid, aligned);
    }
  }
  __device__ __forceinline__ void ready(const T* ks, int warp, int) {
    desc = sm90::sw128_desc(smem_addr(ks), 16, 1024) + ((warp / 4) * 64 * 128 >> 4);
  }
  template <typename During>
  __device__ __forceinline__ void product(float (&acc)[16][4], std::uint64_t q_desc, During&& during) const {
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      sm90::wgmma_m64n128k16_ss<T>(acc, desc + (((kk >> 2) * kColKeys * 128 + (kk & 3) * 32) >> 4),
                                   q_desc + (((kk >> 2) * 2 * kColQueries * 128 + (kk & 3) * 32) >> 4), kk > 0);
    sm90::wgmma_commit();
    during();
    sm90::wgmma_wait<0>();
    sm90::fence_operand(acc);
  }
};

// Pass 2, block = keys [j0, j0 + 128) of one (batch, KV head), as colsum_kernel in select_stage1.cuh; warp w
// owns keys j0 + 16 w .. + 15. blockIdx.x = kvh * key tiles + key tile: the blocks that run together share one
// GQA group's sampled queries (6.7 MB at 128K, in L2) instead of all groups' (54 MB); within a head the first
// key tiles (seen by every sampled row) go first. A tile holds the same 64 sampled rows of kHeads query heads
// of the group (rows hh * 64 + r: head hh of the tile's pair), so one product m64n(64 kHeads) and one row
// cursor serve kHeads heads, and the heads share the rows' positions (one classification per tile). Two
// heads per tile: pass 2 -8% at 32K, -6% at 128K against one (bench/NOTES.md).
template <typename T, int D, int kHeads>
__global__ void __launch_bounds__(kThreadsSm90, 2) colsum_kernel_sm90(const Stage1Args a) {
#if SAMPLEATTN_SM90A
  constexpr int kChunks = D / 8;
  constexpr int kN = kColQueries * kHeads;  // queries per tile
  constexpr int kStages = colsum_stages_sm90<kHeads>();
  static_assert(kStages >= 2, "a stage is refilled only after every thread's empty arrival for its last tile");
  constexpr int kTileElems = kN * D;
  static_assert(kTileElems * 2 % 1024 == 0, "swizzled tiles must stay 1024-byte aligned");
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  T* qs = reinterpret_cast<T*>(align_1024(smem_raw));     // [kStages][kN][D], 128-byte swizzle
  T* ks = qs + kStages * kTileElems;  // the key tile (ColKeysSm90)
  int* qpos = reinterpret_cast<int*>(ks + colsum_key_elems_sm90<D, kHeads>());  // [kStages][kColQueries]
  float* qlse = reinterpret_cast<float*>(qpos + kStages * kColQueries);  // [kStages][kN]
  // Per stage a "full" and an "empty" mbarrier, as in pass 1.
  std::uint64_t* full = reinterpret_cast<std::uint64_t*>(qlse + kStages * kN);  // [kStages]
  std::uint64_t* empty = full + kStages;                                         // [kStages]
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const std::int64_t key_tiles = (a.seq_k + kColKeys - 1) / kColKeys;
  const std::int64_t b = blockIdx.y, kvh = blockIdx.x / key_tiles;
  const std::int64_t j0 = static_cast<std::int64_t>(blockIdx.x % key_tiles) * kColKeys;
  const std::int64_t group = a.group, n = a.num_sampled, seq_q = a.seq_q, seq_k = a.seq_k;
  const std::int64_t pos_off = seq_k - seq_q;
  const int w = static_cast<int>(a.window);
  const int tail_pos = static_cast<int>(seq_k - a.dense_tail);  // rows at key position >= tail_pos: dense tail
  const T* qbase = static_cast<const T*>(a.q) + b * a.q_stride[0];
  const T* kbase = static_cast<const T*>(a.k) + b * a.k_stride[0] + kvh * a.k_stride[2];

  // First sampled row that sees key j0: t_i >= r0 <=> i >= ceil((r0 + 1) n / Sq) - 1. Tiles are numbered
  // (pair p of the group's heads, tile q of the pair); n, Sq, Sk < 2^31.
  std::int64_t i_start = 0;
  if (a.causal && j0 - pos_off > 0) i_start = ((j0 - pos_off + 1) * n + seq_q - 1) / seq_q - 1;
  const int per_head = i_start < n ? static_cast<int>((n - i_start + kColQueries - 1) / kColQueries) : 0;

  const int key_row0 = warp * 16;
  auto store_head = [&](std::int64_t g, const float(&cs)[2], const float(&in)[2]) {
    const std::int64_t bh = b * a.q_heads + kvh * group + g;
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float c = cs[hf], s = in[hf];
      c += __shfl_xor_sync(0xffffffffu, c, 1);
      c += __shfl_xor_sync(0xffffffffu, c, 2);
      s += __shfl_xor_sync(0xffffffffu, s, 1);
      s += __shfl_xor_sync(0xffffffffu, s, 2);
      const std::int64_t j = j0 + key_row0 + hf * 8 + lane / 4;
      if (lane % 4 == 0 && j < seq_k) {
        a.colscore[bh * seq_k + j] = c;
        a.inside[bh * seq_k + j] = s;
      }
    }
  };
  float colsum[kHeads][2] = {}, inside[kHeads][2] = {};
  if (per_head == 0) {
    pdl_wait();
    for (std::int64_t g = 0; g < group; ++g) store_head(g, colsum[0], inside[0]);
    return;
  }

  // Four threads per query row of the tile (for every head of it), chunks interleaved (ch = part + 4 m).
  static_assert(4 * kColQueries == kThreadsSm90, "four threads per query row");
  // Everything asynchronous (the rows' lse too, by 4-byte cp.async): a plain global load here would stall
  // the warp for an L2 round trip on every tile.
  const int q_row = tid / 4, q_part = tid % 4;
  // Shared address of this thread's chunk `part` in stage 0, head 0. Chunk part + 4 m lies m / 2 64-column
  // blocks further, and for odd m at the swizzle partner of bit 2 of the chunk index: byte address bit 6
  // flipped (the stages and blocks are 1024-byte aligned, so the XOR commutes with their offsets); head hh's
  // row lies hh * 64 rows further (same swizzle phase).
  constexpr int kBlockBytes = kN * 128;  // one 64-column block of a swizzled [kN][d] tile
  const std::uint32_t q_dst = smem_addr(qs) + sm90::sw128_offset<kN>(q_row, q_part) * 2;
  const std::uint32_t lse_dst = smem_addr(qlse + q_part * kColQueries + q_row);  // thread q_part < kHeads: head q_part
  const int n32 = static_cast<int>(n);  // n < 2^31

  // Tile t of the block is (pair p, tile q of the pair) with t = p * per_head + q; the loader runs
  // kStages - 1 tiles ahead of the reader.
  // Loader cursor: pair p_load, tile q_load; this thread's row l_i = i_start + 64 q_load + q_row, whose
  // t_{l_i} + 1 = floor((l_i + 1) Sq / n) is kept as quotient and remainder: +64 rows adds step_quot rows
  // and step_rem / n, so the source pointer, the row's position and its lse advance by additions alone
  // (the 64-bit products run once per pair).
  const int pairs = static_cast<int>(group) / kHeads;
  const int total = per_head * pairs;
  // step_quot < Sq whenever a head has a second tile (n > 64); with n <= 64 it may wrap but is never used.
  const int step_quot = static_cast<int>(kColQueries * seq_q / n);
  const std::uint32_t step_rem = static_cast<std::uint32_t>(kColQueries * seq_q % n);  // < n < 2^31
  const std::int64_t row_stride = a.q_stride[1], step_stride = step_quot * row_stride;
  const std::int64_t head_stride = a.q_stride[2];
  int p_load = 0, q_load = 0;
  int l_i = 0, l_pos = 0;  // row index and key position (< 2^31)
  std::uint32_t l_rem = 0;
  const T* l_src = qbase;
  const float* l_lse = a.lse2;
  auto cursor_to_pair_start = [&]() {
    const std::int64_t i = i_start + q_row;
    const std::int64_t quot = sampled_row(i, seq_q, n, a.inv_sampled) + 1;
    // This thread's lse is head q_part's of the pair (threads q_part >= kHeads copy none).
    const std::int64_t h = kvh * group + static_cast<std::int64_t>(p_load) * kHeads;
    l_i = static_cast<int>(i);
    l_rem = static_cast<std::uint32_t>((i + 1) * seq_q - quot * n);
    l_pos = static_cast<int>(pos_off + quot - 1);
    l_src = qbase + (quot - 1) * row_stride + h * head_stride;
    l_lse = a.lse2 + (b * a.q_heads + h + (q_part < kHeads ? q_part : 0)) * n + i;
  };
  cursor_to_pair_start();
  auto load_next = [&](int stage) {
    if (p_load == pairs) return;
    // Row l_i of the pair's heads into rows hh * 64 + q_row of `stage`; rows past n are zeros, invisible
    // (causal) and weightless (lse = +inf gives 2^-inf = 0).
    const bool valid = l_i < n32;
#pragma unroll
    for (int hh = 0; hh < kHeads; ++hh) {
      const T* src = valid ? l_src + hh * head_stride : qbase;
      const std::uint32_t dst = q_dst + stage * (kTileElems * 2) + hh * (kColQueries * 128);
      if (a.aligned) {
#pragma unroll
        for (int m = 0; m < kChunks / 4; ++m)
          sm80::cp_async_16((m % 2 == 0 ? dst : dst ^ 64u) + (m / 2) * kBlockBytes, src + (q_part + 4 * m) * 8, valid);
      } else {
#pragma unroll
        for (int m = 0; m < kChunks / 4; ++m)
          copy_chunk(qs + stage * kTileElems + sm90::sw128_offset<kN>(hh * kColQueries + q_row, q_part + 4 * m),
                     src + (q_part + 4 * m) * 8, valid, false);
      }
    }
    if (q_part == 0) qpos[stage * kColQueries + q_row] = valid ? l_pos : -(1 << 30);
    if (q_part < kHeads) {
      if (valid) {
        sm80::cp_async_4(lse_dst + stage * kN * 4, l_lse, true);
      } else {
        qlse[stage * kN + q_part * kColQueries + q_row] = kInf;
      }
    }
    if (++q_load == per_head) {
      q_load = 0;
      ++p_load;
      cursor_to_pair_start();
    } else {
      l_i += kColQueries;
      l_lse += kColQueries;
      l_rem += step_rem;
      const bool carry = l_rem >= static_cast<std::uint32_t>(n32);
      if (carry) l_rem -= static_cast<std::uint32_t>(n32);
      l_pos += step_quot + (carry ? 1 : 0);
      l_src += step_stride;
      if (carry) l_src += row_stride;
    }
  };
  // Empty: every thread done with the stage (product and exponent phase).
  init_stage_barriers<kStages>(full, empty);
  auto load_stage = [&](int stage) {
    load_next(stage);
    arrive_full(&full[stage]);
  };
  // The key tile; stage 0's first full phase covers it (every thread copies a part before arriving).
  ColKeysSm90<T, D, kHeads> keys;
  keys.copy(ks, kbase, a.k_stride[1], j0, seq_k, a.aligned);
  pdl_wait();  // the keys are an input; the query tiles' lse come from the combine kernel (pdl.cuh)
  pdl_trigger();
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st)
    if (st < total) load_stage(st);
  sm90::mbar_wait(smem_addr(&full[0]), 0);
  keys.ready(ks, warp, lane);

  // Causal tiles need no per-score test when every query sees the warp's 16 keys and either all of them lie
  // outside every query's band (and no query is in the dense tail): `outside`, or all inside: `in_band`.
  // Queries ascend in position, so the tile's first and last valid rows bound them. The other causal tiles
  // (the diagonal and the band's end cross them) are classified the same way per group of 8 queries (one
  // accumulator column block): most groups take one of the two test-free forms, and only the one or two
  // that straddle a boundary test each score. The heads of a tile share its rows, hence its classes.
  const int warp_lo = static_cast<int>(j0) + key_row0, warp_hi = warp_lo + 15;
  // warp_hi + w and warp_lo + w, clamped below 2^31: no position reaches them then either.
  const std::int64_t hi_w64 = std::int64_t{warp_hi} + w, lo_w64 = std::int64_t{warp_lo} + w;
  const int hi_w = static_cast<int>(hi_w64 < 0x7fffffff ? hi_w64 : 0x7fffffff);
  const int lo_w = static_cast<int>(lo_w64 < 0x7fffffff ? lo_w64 : 0x7fffffff);
  const std::uint64_t q_desc = sm90::sw128_desc(smem_addr(qs), 16, 1024);
  int p = 0, q = 0;
  int i0 = static_cast<int>(i_start);  // first sampled row of the tile being read (< 2^31)
  for (int t = 0; t < total; ++t) {
    const int stage = t % kStages;
    sm90::mbar_wait(smem_addr(&full[stage]), static_cast<std::uint32_t>(t / kStages) & 1u);
    sm90::fence_proxy_async();  // the copies wrote through the generic proxy; wgmma reads through the async one
    const int* qp = qpos + stage * kColQueries;
    const float* ql = qlse + stage * kN;
    const int last_row = (n32 - i0 < kColQueries ? n32 - i0 : kColQueries) - 1;
    int first_pos = 0, last_pos = 0;
    // Tile t + kStages - 1 into the stage of tile t - 1 once every thread is done with that one.
    auto load_ahead = [&]() {
      const int next = t + kStages - 1;
      if (next < total) {
        if (t >= 1) sm90::mbar_wait(smem_addr(&empty[next % kStages]), static_cast<std::uint32_t>((t - 1) / kStages) & 1u);
        load_stage(next % kStages);
      }
      first_pos = qp[0];
      last_pos = qp[last_row];
    };
    float acc[kN / 8][4];
    keys.product(acc, q_desc + stage * (kTileElems * 2 / 16), load_ahead);
    const bool outside = a.causal && first_pos >= hi_w && last_pos < tail_pos;
    const bool in_band = a.causal && first_pos >= warp_hi && last_pos < lo_w;
    if (outside || in_band) {
#pragma unroll
      for (int hh = 0; hh < kHeads; ++hh) {
        float sum[2] = {0.0f, 0.0f};
#pragma unroll
        for (int nt = hh * 8; nt < hh * 8 + 8; ++nt) {
          const float2 lse = *reinterpret_cast<const float2*>(ql + nt * 8 + (lane % 4) * 2);
#pragma unroll
          for (int hf = 0; hf < 2; ++hf)
            sum[hf] += ex2(fmaf(acc[nt][hf * 2], a.scale_log2, -lse.x)) +
                       ex2(fmaf(acc[nt][hf * 2 + 1], a.scale_log2, -lse.y));
        }
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          colsum[hh][hf] += sum[hf];
          if (in_band) inside[hh][hf] += sum[hf];
        }
      }
    } else if (a.causal) {
#pragma unroll
      for (int nt = 0; nt < kN / 8; ++nt) {
        const int hh = nt / 8, c0 = (nt % 8) * 8;
        const int p0 = qp[c0], p1 = qp[c0 + 7 < last_row ? c0 + 7 : last_row];
        // Warp-uniform. Skipped: groups past the last row, or whose queries all precede the warp's keys
        // (every score invisible: its probability is exactly 0).
        if (c0 > last_row || p1 < warp_lo) continue;
        const int c = c0 + (lane % 4) * 2;
        const float2 lse = *reinterpret_cast<const float2*>(ql + hh * kColQueries + c);
        const bool g_out = p0 >= hi_w && p1 < tail_pos;
        const bool g_in = p0 >= warp_hi && p1 < lo_w;
        if (g_out || g_in) {
#pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            const float s =
                ex2(fmaf(acc[nt][hf * 2], a.scale_log2, -lse.x)) + ex2(fmaf(acc[nt][hf * 2 + 1], a.scale_log2, -lse.y));
            colsum[hh][hf] += s;
            if (g_in) inside[hh][hf] += s;
          }
        } else {
          const int2 pos = *reinterpret_cast<const int2*>(qp + c);
#pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            const int j = warp_lo + hf * 8 + lane / 4;
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int pq = e == 0 ? pos.x : pos.y;
              // An invisible score's exponent is -inf (2^-inf = 0, also for a NaN score): one unpredicated
              // exp2 per score keeps the scheduler from holding all the results in registers at once.
              const float x = fmaf(acc[nt][hf * 2 + e], a.scale_log2, -(e == 0 ? lse.x : lse.y));
              const float prob = ex2(j <= pq ? x : -kInf);
              colsum[hh][hf] += prob;
              inside[hh][hf] += pq >= tail_pos || j > pq - w ? prob : 0.0f;
            }
          }
        }
      }
    } else {
#pragma unroll
      for (int nt = 0; nt < kN / 8; ++nt) {
        const int hh = nt / 8;
        const int c = (nt % 8) * 8 + (lane % 4) * 2;
        const float2 lse = *reinterpret_cast<const float2*>(ql + hh * kColQueries + c);
        const int2 pos = *reinterpret_cast<const int2*>(qp + c);
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          const int j = warp_lo + hf * 8 + lane / 4;
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int pq = e == 0 ? pos.x : pos.y;
            const bool band = pq >= tail_pos || (j > pq - w && j < pq + w);
            const float prob = ex2(fmaf(acc[nt][hf * 2 + e], a.scale_log2, -(e == 0 ? lse.x : lse.y)));
            colsum[hh][hf] += prob;
            inside[hh][hf] += band ? prob : 0.0f;
          }
        }
      }
    }
    sm90::mbar_arrive(smem_addr(&empty[stage]));
    i0 += kColQueries;
    if (++q == per_head) {
#pragma unroll
      for (int hh = 0; hh < kHeads; ++hh) {
        store_head(static_cast<std::int64_t>(p) * kHeads + hh, colsum[hh], inside[hh]);
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) colsum[hh][hf] = inside[hh][hf] = 0.0f;
      }
      q = 0;
      ++p;
      i0 = static_cast<int>(i_start);
    }
  }
#endif
}

// Whether the sm_90a kernels run here (compute capability 9.0, sm_90a code; see sm90_check.h).
template <typename T, int D>
bool stage1_sm90_runnable() {
  static Sm90Check check;
  return check.runnable(lse_kernel_sm90<T, D>, colsum_kernel_sm90<T, D, 1>, colsum_kernel_sm90<T, D, 2>);
}

// Pass 2's heads per tile: two where the GQA group splits into pairs (SAMPLEATTN_SM90_COLSUM_HEADS=1 forces
// one, for comparisons), else one.
inline int colsum_heads_sm90(std::int64_t group) {
  static const bool force_single = [] {
    const char* v = std::getenv("SAMPLEATTN_SM90_COLSUM_HEADS");
    return v != nullptr && std::string(v) == "1";
  }();
  return group % 2 == 0 && !force_single ? 2 : 1;
}

// Pass 1 or pass 2 on `stream`: as many blocks as launch_stage1_instance (select_stage1.cuh), in the orders
// described at each kernel.
template <typename T, int D>
void launch_stage1_sm90_instance(const Stage1Args& a, int pass, cudaStream_t stream) {
  // Pass 1 decodes its blocks through a.pass1_order (launch_stage1 fills it for this grid).
  SA_CHECK(pass != 1 || (a.pass1_order.chunks == a.num_chunks &&
                         a.pass1_order.tiles == (a.num_sampled * a.group + kLseRows - 1) / kLseRows),
           "CUDA selection: pass 1 order of ", a.pass1_order.chunks, " chunks x ", a.pass1_order.tiles,
           " row tiles does not match the grid (", a.num_chunks, " chunks)");
  // Two blocks per SM need ~200 KiB of shared memory: the largest carveout.
  const char* family =
      pass == 1 ? "stage 1 pass 1 (sampled-row log-sum-exp, sm90)" : "stage 1 pass 2 (column scores, sm90)";
  if (colsum_heads_sm90(a.group) == 2) {
    launch_stage1_passes(lse_kernel_sm90<T, D>, colsum_kernel_sm90<T, D, 2>, kThreadsSm90, lse_smem_bytes_sm90<D>(),
                         colsum_smem_bytes_sm90<D, 2>(), true, a, pass, stream, family);
  } else {
    launch_stage1_passes(lse_kernel_sm90<T, D>, colsum_kernel_sm90<T, D, 1>, kThreadsSm90, lse_smem_bytes_sm90<D>(),
                         colsum_smem_bytes_sm90<D, 1>(), true, a, pass, stream, family);
  }
}

}  // namespace sampleattn::cuda::sel
