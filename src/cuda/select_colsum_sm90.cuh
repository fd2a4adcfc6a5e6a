// Stage 1 pass 2 on Hopper (sm_90a): colsum_kernel of select_stage1.cuh with the products on wgmma. A = the
// block's 128 keys (in registers), B = the same 64 sampled rows of two query heads of the GQA group per tile
// ([128, d], m64n128; one head where the group is odd), swizzled (K-major: d contiguous). The tiles come by
// bulk copy (the TMA unit), issued by one thread two tiles ahead (three with one head), from the image of the
// sampled rows that the combine kernel writes in the tiles' swizzle (Stage1Args::qs_image). Per tile and warp
// one of three paths: every query sees the warp's 16 keys outside its band (sum only), every query sees them
// inside its band (sum into both scores), or, for the tiles that cross the diagonal or the band's end, the
// same choice per group of 8 queries with per-score tests only in the groups that straddle a boundary.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <string>

#include "cuda/select_common_sm90.cuh"

namespace sampleattn::cuda::sel {

// Pass 2's stages: with one head per tile ([64][d]) tile t is read while t + 1 .. t + 3 load (measured, with
// per-thread copies, a commit group and a block barrier per tile then, against loading pairs of tiles one
// pair ahead: 4% faster at 128K); with two heads per tile ([128][d], 32 KiB) three, so that two blocks still
// fit on an SM (the keys need no shared memory there).
template <int kHeads>
constexpr int colsum_stages_sm90() {
  return kHeads == 2 ? 3 : 4;
}
// Pass 2's key tile in shared memory: [128][d + 8] (ldmatrix into registers) with one head per tile, none with
// two (ColKeysSm90).
template <int D, int kHeads>
constexpr int colsum_key_elems_sm90() {
  return kHeads == 1 ? kColKeys * smem_stride<D>() : 0;
}
// Pass 2: the stages' swizzled [64 kHeads][ds] query tiles (ds = stored_dim_sm90<D>), the key tile, per stage
// 64 query positions and 64 kHeads lse, the stages' full and empty mbarriers (at d = 128: 99 KiB with two heads
// per tile, 101 KiB with one; two blocks per SM; at d = 256: 195 KiB / 197 KiB, one block).
template <int D, int kHeads>
constexpr int colsum_smem_bytes_sm90() {
  constexpr int kStages = colsum_stages_sm90<kHeads>();
  return 1024 + kStages * kColQueries * kHeads * stored_dim_sm90<D>() * 2 + colsum_key_elems_sm90<D, kHeads>() * 2 +
         kStages * kColQueries * (4 + 4 * kHeads) + 2 * kStages * 8;
}

// Pass 2's keys as the A operand of the warpgroup's product with a query tile (B: a swizzled [kN][d] tile,
// descriptor `q_desc`, 64-column blocks kN rows * 128 bytes apart). The warp's 16 keys stay in registers (A
// fragments loaded once per block): with one head per tile through shared memory and ldmatrix, with two
// straight from global memory (no shared memory, so a third stage fits). Reading them from shared memory
// every tile (the SS form) measured 10% slower with one head per tile; with two, pass 2 -3% at 32K and -6.5%
// at 128K against it (two stages then). The B descriptor's low 14 bits are the address / 16 (shared addresses
// < 256 KiB never carry out of them), so k-step kk (16 columns of d) adds a constant. `during()` runs while the product is in flight (work that
// touches neither acc nor the operands).
template <typename T, int D, int kHeads>
struct ColKeysSm90;
template <typename T, int D>
struct ColKeysSm90<T, D, 1> {
  std::uint32_t frag[D / 16][4];
  __device__ __forceinline__ static void load(T* ks, const T* kbase, std::int64_t stride, std::int64_t j0,
                                              std::int64_t seq_k, bool aligned, int, int) {
    load_keys<T, D, kColKeys, kThreadsSm90>(ks, kbase, stride, j0, seq_k, aligned);
  }
  // After the key tile landed (the block barrier after the cp.async wait).
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
  std::uint32_t frag[D / 16][4];
  // Straight from global memory into the A fragments, once per block: rows 16 warp + lane / 4 (+ 8), column
  // pairs kk * 16 + 2 (lane % 4) (+ 8) of k-step kk; rows past Sk as zeros.
  __device__ __forceinline__ void load(T*, const T* kbase, std::int64_t stride, std::int64_t j0, std::int64_t seq_k,
                                       bool aligned, int warp, int lane) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const std::int64_t row = j0 + warp * 16 + hf * 8 + lane / 4;
      const bool valid = row < seq_k;
      const T* src = kbase + (valid ? row : 0) * stride + (lane % 4) * 2;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const T* p = src + kk * 16 + half * 8;
          std::uint32_t v = 0;
          if (valid && aligned) {
            v = *reinterpret_cast<const std::uint32_t*>(p);
          } else if (valid) {
            const unsigned short* e = reinterpret_cast<const unsigned short*>(p);
            v = static_cast<std::uint32_t>(e[0]) | (static_cast<std::uint32_t>(e[1]) << 16);
          }
          frag[kk][hf + 2 * half] = v;
        }
    }
  }
  __device__ __forceinline__ void ready(const T*, int, int) {}
  template <typename During>
  __device__ __forceinline__ void product(float (&acc)[16][4], std::uint64_t q_desc, During&& during) const {
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      sm90::wgmma_m64n128k16_rs<T, 0>(acc, frag[kk],
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
// of the group (rows hh * 64 + r: head hh of the tile's pair), so one product m64n(64 kHeads) serves kHeads
// heads, and the heads share the rows' positions (one classification per tile). Two heads per tile: pass 2
// -8% at 32K, -6% at 128K against one; the bulk copies instead of every thread's cp.async of a quarter row
// (with its row cursor): -14% at 32K, -12% at 128K (bench/NOTES.md).
template <typename T, int D, int kHeads>
__global__ void __launch_bounds__(kThreadsSm90, min_blocks_sm90<D>()) colsum_kernel_sm90(const Stage1Args a) {
#if SAMPLEATTN_SM90A
  constexpr int kN = kColQueries * kHeads;  // queries per tile
  constexpr int kStages = colsum_stages_sm90<kHeads>();
  static_assert(kStages >= 2, "a stage is refilled only after every thread's empty arrival for its last tile");
  constexpr int kDBlocks = stored_dim_sm90<D>() / 64;  // 64-column blocks of a stored row
  constexpr int kTileElems = kN * kDBlocks * 64;
  static_assert(kTileElems * 2 % 1024 == 0, "swizzled tiles must stay 1024-byte aligned");
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  T* qs = reinterpret_cast<T*>(align_1024(smem_raw));     // [kStages][kN][kDBlocks * 64], 128-byte swizzle
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
  const T* kbase = static_cast<const T*>(a.k) + b * a.k_stride[0] + kvh * a.k_stride[2];

  // First sampled row that sees key j0: t_i >= r0 <=> i >= ceil((r0 + 1) n / Sq) - 1; the tiles start at
  // i_first, a multiple of 8 (below). n, Sq, Sk < 2^31.
  std::int64_t i_start = 0;
  if (a.causal && j0 - pos_off > 0) i_start = ((j0 - pos_off + 1) * n + seq_q - 1) / seq_q - 1;
  const int i_first = static_cast<int>(i_start < n ? i_start : n) & ~7;
  const int n32 = static_cast<int>(n);
  const int per_head = i_start < n ? (n32 - i_first + kColQueries - 1) / kColQueries : 0;

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

  // Tile t of the block is (pair p, tile q of the pair) with t = p * per_head + q: rows i_first + 64 q ..
  // + 63 of the pair's heads, straight from the image the combine kernel wrote (Stage1Args::qs_image). There a
  // head's rows are 128-byte rows per 64-column block, already in the tile's swizzle wherever the tile starts
  // at a multiple of 8, so a tile is kHeads * kDBlocks bulk copies of 64 rows, plus the rows' lse (kHeads * 256
  // bytes) and positions (256 bytes): issued by one thread, counted by the stage's full barrier in bytes.
  // i_first rounds i_start down to a multiple of 8; the rows before i_start precede key j0, so the first tile
  // of a pair takes the per-group path, which skips or masks them.
  const int pairs = static_cast<int>(group) / kHeads;
  const int total = per_head * pairs;
  constexpr int kBlockBytes = kN * 128;  // one 64-column block of a swizzled [kN][d] tile
  constexpr std::uint32_t kStageBytes = kTileElems * 2 + kN * 4 + kColQueries * 4;
  // Tile `tile` into `stage` (thread 0 only; its addresses from the parameters each time, so that no register
  // holds them through the loop).
  auto load_tile = [&](int tile, int stage) {
    const std::uint32_t bar = smem_addr(&full[stage]);
    sm90::mbar_arrive_expect_tx(bar, kStageBytes);
    const int p = tile / per_head;
    const std::int64_t row0 = i_first + kColQueries * (tile - p * per_head);
    const std::int64_t stride = a.sampled_stride;
    const std::int64_t h0 = b * a.q_heads + kvh * group + static_cast<std::int64_t>(p) * kHeads;
#pragma unroll
    for (int hh = 0; hh < kHeads; ++hh) {
      const T* src = static_cast<const T*>(a.qs_image) + ((h0 + hh) * kDBlocks * stride + row0) * 64;
#pragma unroll
      for (int o = 0; o < kDBlocks; ++o)
        sm90::bulk_copy(smem_addr(qs) + stage * (kTileElems * 2) + o * kBlockBytes + hh * (kColQueries * 128),
                        src + o * stride * 64, kColQueries * 128, bar);
      sm90::bulk_copy(smem_addr(qlse) + (stage * kN + hh * kColQueries) * 4, a.lse2 + (h0 + hh) * stride + row0,
                      kColQueries * 4, bar);
    }
    sm90::bulk_copy(smem_addr(qpos) + stage * kColQueries * 4, a.qs_pos + row0, kColQueries * 4, bar);
  };
  // Full: the producer's arrival and the stage's bytes; empty: every thread done with the stage (product and
  // exponent phase).
  if (tid == 0) {
#pragma unroll
    for (int st = 0; st < kStages; ++st) {
      sm90::mbar_init(smem_addr(&full[st]), 1);
      sm90::mbar_init(smem_addr(&empty[st]), kThreadsSm90);
    }
    sm90::fence_mbarrier_init();
  }
  // The keys (ColKeysSm90::load: the tile into shared memory with one head per tile, by every thread, landing
  // before the block barrier below; the fragments straight into registers with two).
  ColKeysSm90<T, D, kHeads> keys;
  keys.load(ks, kbase, a.k_stride[1], j0, seq_k, a.aligned, warp, lane);
  pdl_wait();  // the keys are an input; the image, lse and positions come from the combine kernel (pdl.cuh)
  pdl_trigger();
  __syncthreads();  // the barriers are initialised
  if (tid == 0) {
    for (int st = 0; st < kStages - 1; ++st)
      if (st < total) load_tile(st, st);
  }
  sm80::cp_async_commit();
  sm80::cp_async_wait<0>();  // the one-head key tile (read by ldmatrix, through the generic proxy like the copies)
  __syncthreads();
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
  int i0 = i_first;  // first sampled row of the tile being read (< 2^31)
  for (int t = 0; t < total; ++t) {
    const int stage = t % kStages;
    sm90::mbar_wait(smem_addr(&full[stage]), static_cast<std::uint32_t>(t / kStages) & 1u);
    const int* qp = qpos + stage * kColQueries;
    const float* ql = qlse + stage * kN;
    const int last_row = (n32 - i0 < kColQueries ? n32 - i0 : kColQueries) - 1;
    int first_pos = 0, last_pos = 0;
    // Tile t + kStages - 1 into the stage of tile t - 1 once every thread is done with that one.
    auto load_ahead = [&]() {
      const int next = t + kStages - 1;
      if (tid == 0 && next < total) {
        if (t >= 1)
          sm90::mbar_wait(smem_addr(&empty[next % kStages]), static_cast<std::uint32_t>((t - 1) / kStages) & 1u);
        load_tile(next, next % kStages);
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
            const bool band = pq >= tail_pos || (j > pq - w && j - w < pq);  // j < pq + w without int32 overflow
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
      i0 = i_first;
    }
  }
#endif
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

}  // namespace sampleattn::cuda::sel
