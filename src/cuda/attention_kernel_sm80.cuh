// The sm_80 attention kernel (FlashAttention-2 structure) and its launch template, dense and sparse.
// One thread block per (query tile of 128 rows, 64 at head_dim 256, query head, batch); each warp owns 16 or 32
// query rows. head_dim 64, 96, 128, 256 (tile shapes: attention_sm80_shape.h).
//   Q tile   [128, d] -> shared memory (cp.async) -> registers (ldmatrix): once with 16 rows a warp (d <= 128),
//            per K tile otherwise.
//   K/V      [64, d] tiles, two shared-memory stages: tile t + 1 is copied while tile t is computed.
//            Contiguous tiles read keys [n0, n0 + 64); gathered tiles read the kept columns' rows by index
//            (16-byte cp.async per chunk; the indices themselves come one tile ahead, by cp.async too).
//   S = Q K^T  [16, 64] per m16 slice in registers (mma.sync m16n8k16, fp32), masked only on edge tiles,
//   online softmax (attention_softmax_sm80.cuh), P converted to 16-bit in registers as the A operand of
//   O += P V (ldmatrix.trans of V), O [16, d] per slice in fp32 registers.
// Blocks are numbered so that the longest query tiles (the causal bottom) start first, and the query heads
// that share a KV head run side by side (their K/V reads hit L2).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/attention_args.h"
#include "cuda/attention_plan.cuh"
#include "cuda/ptx_sm80.cuh"
#include "cuda/attention_sm80_shape.h"
#include "cuda/attention_softmax_sm80.cuh"
#include "cuda/attention_tile_sm80.cuh"

namespace sampleattn::cuda::sm80 {

// Tile shape (attention_sm80_shape.h). Each warp owns kWarpRows query rows (kMTiles m16 slices). 32 rows a warp
// (4 warps, two blocks per SM) halves the shared-memory reads of K and V per FLOP against 16 rows a warp (8
// warps, Q kept in registers): on the H200, dense causal 8K / 32K / 128K took 1.82 / 27.1 / 436 ms against
// 2.12 / 32.1 / 501 ms (bench/NOTES.md). SAMPLEATTN_SM80_WARP_ROWS=16 builds the other for comparison; head_dim
// 256 always runs 16 rows a warp with Q re-read from shared memory (its O fills 128 registers).
template <typename Elem, int kD>
struct Config {
  static constexpr Shape kShape = shape_for(kD);
  static constexpr int kBlockM = kShape.block_m;
  static constexpr int kBlockN = kShape.block_n;
  static constexpr int kWarpRows = kShape.warp_rows;
  static constexpr int kMTiles = kWarpRows / 16;
  static constexpr int kWarps = kBlockM / kWarpRows;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kMinBlocks = kMTiles == 1 ? 1 : 2;  // blocks per SM the registers must allow
  static constexpr bool kQInRegisters = kMTiles == 1 && kD <= 128;  // else Q is re-read from shared memory per tile
  static constexpr int kNTiles = kBlockN / 8;  // 8-key n-tiles of S per m16 slice
  static constexpr int kOTiles = kD / 8;       // 8-column n-tiles of O per m16 slice
  static constexpr int kKSteps = kD / 16;      // k-steps of Q K^T
  using Smem = Layout<kD>;
  using KvCopy = TileCopy<kD, kThreads, kBlockN>;
  using QCopy = TileCopy<kD, kThreads, kBlockM>;
  static constexpr int kTileElems = kBlockN * Smem::kRowElems;
  // Q [block_m, d] + 2 stages x (K, V) [64, d]: 96 KiB at d = 128, 48 KiB at d = 64, 78 KiB at d = 96, 160 KiB at 256.
  static constexpr int kSmemBytes = smem_bytes(kD);
  static_assert(supported_head_dim(kD), "head_dim 64, 96, 128 or 256");
  static_assert(kWarpRows == 16 || kWarpRows == 32, "16 or 32 query rows per warp");
  static_assert(kSmemBytes == (kBlockM + 4 * kBlockN) * Smem::kRowElems * static_cast<int>(sizeof(Elem)), "shape");
};

// Bits [a, b) of a 64-bit word, 0 <= a, b <= 64. The low n bits are ~0 >> (64 - n) by PTX's shr, which clamps
// shift amounts to the width (a shift by 64 gives 0, where C++ leaves it undefined): one 64-bit shift each.
__device__ __forceinline__ std::uint64_t bit_range(int a, int b) {
  auto low = [](int n) {
    std::uint64_t r;
    asm("shr.b64 %0, %1, %2;" : "=l"(r) : "l"(~0ull), "r"(64 - n));
    return r;
  };
  return low(b) & ~low(a);
}

// Drops the entries of S that the mask excludes (-inf). Per row, the kept keys of each 64 keys of the tile are
// built as one 64-bit word (visible range & (band range | column bits), or the valid slots of a gathered
// tile), so that each element costs one bit test: dj = 8 nt + 2 (lane % 4) + e. Contiguous tile at key n0;
// bits[w]: the column bitmap of keys n0 + 64 w .. n0 + 64 w + 63 (sparse). See attention_plan.cuh for the mask.
template <typename Cfg, int kBlockN>
__device__ __forceinline__ void apply_mask(float (&s)[Cfg::kNTiles][4], const KernelArgs& a,
                                           const TilePlan<kBlockN>& pl, const TileRef& tr, std::int64_t row0,
                                           const std::uint64_t (&bits)[kBlockN / 64]) {
  constexpr int kWords = kBlockN / 64;
  static_assert(kBlockN % 64 == 0 && Cfg::kNTiles == kBlockN / 8, "64-bit keep words over the tile");
  const int col = 2 * (threadIdx.x & 3);
  // Key x relative to the 64-key word at n0, clamped to [0, 64]. Positions are int32 (seq_k < 2^31 - 256 is
  // checked on the host; x >= -2^31 + 1), and x - n0 is only formed when positive.
  auto rel = [](int x, int n0) { return x <= n0 ? 0 : (x - n0 >= 64 ? 64 : x - n0); };
  std::uint64_t keep[2][kWords];
  if (tr.gather) {
    const int n = tr.end - tr.base < kBlockN ? tr.end - tr.base : kBlockN;
#pragma unroll
    for (int w = 0; w < kWords; ++w) keep[0][w] = keep[1][w] = bit_range(0, rel(n, 64 * w));
  } else {
    const int seq_k = static_cast<int>(a.seq_k), offset = static_cast<int>(a.seq_k - a.seq_q);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = static_cast<int>(row0) + 8 * i;  // absolute query row (< seq_q + 64)
      const int p = offset + r;
      const int end = a.causal && p + 1 < seq_k ? p + 1 : seq_k;  // visible keys: j < end
      const bool banded = pl.sparse && !(pl.tail_mode && r >= pl.tail_row);
      const int band_lo = p - pl.window + 1;                        // band: band_lo <= j < band_end
      const int band_end = a.causal || p >= seq_k - pl.window ? end : p + pl.window;
#pragma unroll
      for (int w = 0; w < kWords; ++w) {
        const int n0 = tr.base + 64 * w;
        std::uint64_t k = bit_range(0, rel(end, n0));
        if (banded) k &= bit_range(rel(band_lo, n0), rel(band_end, n0)) | bits[w];
        keep[i][w] = k;
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int w = 0; w < kWords; ++w) {
      const std::uint64_t k = keep[i][w] >> col;
      const std::uint32_t lo = static_cast<std::uint32_t>(k), hi = static_cast<std::uint32_t>(k >> 32);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int bit = nt * 8 + e;  // a constant: the lane's column offset is already shifted out
          const std::uint32_t word = bit < 32 ? lo : hi;
          if (((word >> (bit & 31)) & 1u) == 0u) s[8 * w + nt][2 * i + e] = -INFINITY;
        }
    }
}

template <typename Elem, int kD>
__global__ void __launch_bounds__(Config<Elem, kD>::kThreads, Config<Elem, kD>::kMinBlocks)
    attention_kernel_sm80(const KernelArgs a) {
  using Cfg = Config<Elem, kD>;
  constexpr int kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN, kMT = Cfg::kMTiles;
  using Smem = typename Cfg::Smem;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  Elem* q_s = reinterpret_cast<Elem*>(smem_raw);
  Elem* k_s = q_s + kBlockM * Smem::kRowElems;  // [2][64][row]
  Elem* v_s = k_s + 2 * Cfg::kTileElems;        // [2][64][row]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const BlockTile<Elem> bt(a, kBlockM);
  const std::int64_t h = bt.h, b = bt.b, bh = bt.bh, m0 = bt.m0, m1 = bt.m1;
  const Elem* q_g = bt.q;
  const Elem* k_g = bt.k;
  const Elem* v_g = bt.v;

  // Q tile: rows past seq_q are zero-filled (their outputs are never stored).
  const typename Cfg::QCopy q_copy(tid);
#pragma unroll
  for (int pass = 0; pass < Cfg::QCopy::kPasses; ++pass) {
    if (!q_copy.active(pass)) continue;
    const int row = q_copy.row(pass), chunk = q_copy.chunk(pass);
    const bool valid = m0 + row < a.seq_q;
    const Elem* src = q_g + (valid ? (m0 + row) * a.q_stride[1] : 0) + chunk * 8;
    copy_chunk(q_s + Smem::offset(row, chunk), src, valid, a.aligned_inputs);
  }

  TilePlan<kBlockN> pl = make_plan<kBlockN>(a, bh, m0, m1, load_head_selection(a, bh));
  find_stripes(pl, a);
  const int num_tiles = pl.total_tiles();

  // Per-tile metadata, fetched two tiles ahead by cp.async into a ring of 4 (tile t in slot t % 4): the
  // column indices of a gathered tile (read when its copy is issued, one tile ahead) and the two bitmap
  // words of a sparse contiguous tile (read when it is computed).
  __shared__ std::int32_t idx_s[4][kBlockN];
  __shared__ std::uint32_t bits_s[4][2];
  auto fetch_metadata = [&](int t) {
    const TileRef tr = tile_ref(pl, t);
    if (tr.gather) {
      if (tid >= kBlockN) return;
      const int slot = tr.base + tid;
      const bool valid = slot < tr.end;
      cp_async_4(smem_addr(&idx_s[t & 3][tid]), valid ? pl.cols + slot : pl.cols, valid);
    } else if (pl.sparse && tid < 2) {
      const std::int64_t word = tr.base / 32 + tid;
      const bool valid = word < a.bitmap_words;
      cp_async_4(smem_addr(&bits_s[t & 3][tid]), valid ? pl.bitmap + word : pl.bitmap, valid);
    }
  };
  const typename Cfg::KvCopy kv_copy(tid);
  auto issue_tile = [&](int t) {
    const TileRef tr = tile_ref(pl, t);
    const int stage = static_cast<int>(t & 1);
#pragma unroll
    for (int pass = 0; pass < Cfg::KvCopy::kPasses; ++pass) {
      if (!kv_copy.active(pass)) continue;
      const int row = kv_copy.row(pass), chunk = kv_copy.chunk(pass);
      std::int64_t key;
      bool valid;
      if (tr.gather) {
        valid = tr.base + row < tr.end;
        key = valid ? idx_s[t & 3][row] : 0;
      } else {
        key = tr.base + row;
        valid = key < a.seq_k;
        if (!valid) key = 0;
      }
      const int dst = stage * Cfg::kTileElems + Smem::offset(row, chunk);
      copy_chunk(k_s + dst, k_g + key * a.k_stride[1] + chunk * 8, valid, a.aligned_inputs);
      copy_chunk(v_s + dst, v_g + key * a.v_stride[1] + chunk * 8, valid, a.aligned_inputs);
    }
  };

  // Prologue: tile 0 and the metadata of tiles 0 and 1 in flight together with Q; only a gathered tile 0
  // first waits for its indices (one exposed round trip). Each loop iteration waits for everything in
  // flight, then issues the next tile (into the stage the previous iteration read) and the metadata of the
  // one after, then computes: one barrier per tile.
  if (num_tiles > 0) {
    fetch_metadata(0);
    if (tile_ref(pl, 0).gather) {
      cp_async_commit();
      cp_async_wait<0>();
      __syncthreads();
    }
    issue_tile(0);
  }
  if (num_tiles > 1) fetch_metadata(1);
  cp_async_commit();

  // ldmatrix byte offsets inside a row for k-step / column pair 0; step j is Smem::step(offset, j).
  constexpr int kRowBytes = Smem::kRowBytes;
  const std::uint32_t q_base = smem_addr(q_s) + (warp * Cfg::kWarpRows + (lane & 15)) * kRowBytes;
  const std::uint32_t q_off = Smem::lane_offset(lane >> 4, lane);
  const std::uint32_t k_row = ((lane & 7) + ((lane >> 4) << 3)) * kRowBytes;
  const std::uint32_t k_off = Smem::lane_offset((lane >> 3) & 1, lane);
  const std::uint32_t v_row = ((lane & 7) + (((lane >> 3) & 1) << 3)) * kRowBytes;
  const std::uint32_t v_off = Smem::lane_offset(lane >> 4, lane);

  // Q fragments stay in registers only with one m16 slice per warp (32 registers at d = 128).
  std::uint32_t q_frag[Cfg::kQInRegisters ? Cfg::kKSteps : 1][4];
  float o[kMT][Cfg::kOTiles][4];
#pragma unroll
  for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
    for (int dt = 0; dt < Cfg::kOTiles; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mi][dt][e] = 0.0f;
  OnlineSoftmax<Cfg::kNTiles, Cfg::kOTiles> softmax[kMT];
#pragma unroll
  for (int mi = 0; mi < kMT; ++mi) softmax[mi].init();
  // This lane's first row; slice mi holds rows row0 + 16 mi and row0 + 16 mi + 8.
  const std::int64_t row0 = m0 + warp * Cfg::kWarpRows + lane / 4;
  // A warp whose rows all lie past seq_q (last query tile) skips every tile.
  const bool warp_idle = m0 + warp * Cfg::kWarpRows >= m1;

  for (int t = 0; t < num_tiles; ++t) {
    const int stage = static_cast<int>(t & 1);
    cp_async_wait<0>();
    __syncthreads();  // tile t and the indices of tile t + 1 have landed; tile t - 1 is no longer read
    if (t + 1 < num_tiles) issue_tile(t + 1);
    if (t + 2 < num_tiles) fetch_metadata(t + 2);
    cp_async_commit();
    if constexpr (Cfg::kQInRegisters) {
      if (t == 0) {
#pragma unroll
        for (int ks = 0; ks < Cfg::kKSteps; ++ks) ldmatrix_x4(q_frag[ks], q_base + Smem::step(q_off, ks));
      }
    }

    if (warp_idle) continue;

    // S = Q K^T: per m16 slice, 16 rows x 64 keys.
    float s[kMT][Cfg::kNTiles][4];
#pragma unroll
    for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
      for (int nt = 0; nt < Cfg::kNTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mi][nt][e] = 0.0f;
    const std::uint32_t k_stage = smem_addr(k_s + stage * Cfg::kTileElems) + k_row;
#pragma unroll
    for (int ks = 0; ks < Cfg::kKSteps; ++ks) {
      std::uint32_t qa[kMT][4];
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi) {
        if constexpr (Cfg::kQInRegisters) {
#pragma unroll
          for (int e = 0; e < 4; ++e) qa[mi][e] = q_frag[ks][e];
        } else {
          ldmatrix_x4(qa[mi], q_base + mi * 16 * kRowBytes + Smem::step(q_off, ks));
        }
      }
#pragma unroll
      for (int np = 0; np < Cfg::kNTiles / 2; ++np) {
        std::uint32_t kb[4];
        ldmatrix_x4(kb, k_stage + np * 16 * kRowBytes + Smem::step(k_off, ks));
#pragma unroll
        for (int mi = 0; mi < kMT; ++mi) {
          mma_16816<Elem>(s[mi][2 * np], qa[mi], kb[0], kb[1]);
          mma_16816<Elem>(s[mi][2 * np + 1], qa[mi], kb[2], kb[3]);
        }
      }
    }

    const TileRef tr = tile_ref(pl, t);
    const bool masked = tr.gather ? tr.end - tr.base < kBlockN : span_tile_needs_mask(pl, a, tr.base);
#pragma unroll
    for (int mi = 0; mi < kMT; ++mi) {
      if (masked) {
        const std::uint64_t bits[1] = {
            pl.sparse ? (static_cast<std::uint64_t>(bits_s[t & 3][1]) << 32) | bits_s[t & 3][0] : 0ull};
        apply_mask<Cfg>(s[mi], a, pl, tr, row0 + 16 * mi, bits);
      }
      softmax[mi].update(s[mi], o[mi], a.scale_log2);
    }

    // O += P V, P from registers: the accumulator layout of two 8-key n-tiles is the A layout of one
    // 16-key k-step.
    const std::uint32_t v_stage = smem_addr(v_s + stage * Cfg::kTileElems) + v_row;
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      std::uint32_t pa[kMT][4];
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi) {
        pa[mi][0] = pack2<Elem>(s[mi][2 * kk][0], s[mi][2 * kk][1]);
        pa[mi][1] = pack2<Elem>(s[mi][2 * kk][2], s[mi][2 * kk][3]);
        pa[mi][2] = pack2<Elem>(s[mi][2 * kk + 1][0], s[mi][2 * kk + 1][1]);
        pa[mi][3] = pack2<Elem>(s[mi][2 * kk + 1][2], s[mi][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < Cfg::kOTiles / 2; ++dp) {
        std::uint32_t vb[4];
        ldmatrix_x4_trans(vb, v_stage + kk * 16 * kRowBytes + Smem::step(v_off, dp));
#pragma unroll
        for (int mi = 0; mi < kMT; ++mi) {
          mma_16816<Elem>(o[mi][2 * dp], pa[mi], vb[0], vb[1]);
          mma_16816<Elem>(o[mi][2 * dp + 1], pa[mi], vb[2], vb[3]);
        }
      }
    }
  }
  cp_async_wait<0>();

  Elem* out_g = static_cast<Elem*>(a.out) + b * a.out_stride[0] + h * a.out_stride[2];
#pragma unroll
  for (int mi = 0; mi < kMT; ++mi) {
    float inv_sum[2], lse[2];
    softmax[mi].finish(inv_sum, lse);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const std::int64_t r = row0 + 16 * mi + 8 * i;
      if (r >= a.seq_q) continue;
      Elem* dst = out_g + r * a.out_stride[1] + 2 * (lane & 3);
#pragma unroll
      for (int dt = 0; dt < Cfg::kOTiles; ++dt) {
        const std::uint32_t packed =
            pack2<Elem>(o[mi][dt][2 * i] * inv_sum[i], o[mi][dt][2 * i + 1] * inv_sum[i]);
        if (a.aligned_out) {
          *reinterpret_cast<std::uint32_t*>(dst + dt * 8) = packed;
        } else {
          reinterpret_cast<unsigned short*>(dst + dt * 8)[0] = static_cast<unsigned short>(packed & 0xffffu);
          reinterpret_cast<unsigned short*>(dst + dt * 8)[1] = static_cast<unsigned short>(packed >> 16);
        }
      }
      if (a.lse != nullptr && (lane & 3) == 0) a.lse[bh * a.seq_q + r] = lse[i];
    }
  }
}

// Launches one instance; the caller (attention_launch.cu) has validated the arguments.
template <typename Elem, int kD>
cudaError_t launch_attention_sm80(const KernelArgs& a, std::int64_t batch, cudaStream_t stream) {
  using Cfg = Config<Elem, kD>;
  if (a.block_m != Cfg::kBlockM) return cudaErrorInvalidValue;  // the grid must be counted in this shape's tiles
  auto kernel = attention_kernel_sm80<Elem, kD>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(a.num_m_tiles * a.q_heads), static_cast<unsigned>(batch));
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace sampleattn::cuda::sm80
