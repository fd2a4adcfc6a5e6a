// The sm_90a attention kernel (Hopper: wgmma), dense and sparse, over the same tile plan as the sm_80 kernel
// (attention_plan.cuh). One thread block of kWarpGroups warpgroups per (query tile of 64 kWarpGroups rows,
// query head, batch); warpgroup g owns rows 64 g .. 64 g + 63, each of its warps 16 of them. Two warpgroups
// (128-row tiles, one block per SM) is the default; one warpgroup (64-row tiles, two blocks per SM) halves
// the keys wasted at the band edges of small windows and lets one block's start overlap another's work.
//   Q tile   [64 kWarpGroups, d] -> shared memory, 128-byte swizzled (ptx_sm90.cuh): the A operand of Q K^T.
//   K/V      [64, d] tiles, 128-byte swizzled, filled by cp.async one tile ahead (K in 2 stages, V in 3: V of
//            tile t - 1 is still read while tile t + 1 lands); gathered tiles read the kept columns' rows
//            by index, as on sm_80.
//   S = Q K^T  wgmma m64n64k16 (A = Q, B = K tile, both K-major in shared memory), fp32 [64, 64] per warpgroup;
//   O += P V   wgmma m64n{d}k16 (A = P in registers, B = V tile, MN-major), fp32 [64, d] per warpgroup.
// Per tile t a warpgroup issues S_t = Q K_t^T, then O += P_{t-1} V_{t-1}, waits for S_t only, and runs the
// mask and softmax of tile t while the tensor cores still work on P_{t-1} V_{t-1}; then it waits for that
// product and rescales O. Bench results and the versions tried: bench/NOTES.md.
// Launched only on compute capability 9.0 with the sm_90a cubin (attention_launch.cu checks the binary); other
// targets compile an empty body.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/attention_args.h"
#include "cuda/attention_kernel_sm80.cuh"
#include "cuda/attention_plan.cuh"
#include "cuda/ptx_sm80.cuh"
#include "cuda/ptx_sm90.cuh"
#include "cuda/sm90_check.h"

// SAMPLEATTN_SM90_WS=1 builds the warp-specialised kernel (attention_kernel_sm90_ws.cuh) instead.
#ifndef SAMPLEATTN_SM90_WS
#define SAMPLEATTN_SM90_WS 0
#endif

namespace sampleattn::cuda::sm90 {

template <typename Elem, int kD, int kWarpGroups>
struct Config {
  static constexpr int kBlockM = 64 * kWarpGroups;
  static constexpr int kBlockN = 64;
  static constexpr int kThreads = 128 * kWarpGroups;
  static constexpr int kMinBlocks = kWarpGroups == 1 ? 2 : 1;  // blocks per SM
  // K/V tiles are copied kAhead tiles ahead of the one computed (2 and 3 were measured: no gain). K stages
  // hold those and tile t (read by S_t); V stages also tile t - 1 (read by P V in iteration t). Tile
  // metadata (indices, bitmap words) comes 2 kAhead tiles ahead.
  static constexpr int kAhead = 1;
  static constexpr int kKStages = kAhead + 1;
  static constexpr int kVStages = kAhead + 2;
  static constexpr int kMetaSlots = 4;
  static constexpr int kNTiles = kBlockN / 8;
  static constexpr int kOTiles = kD / 8;
  static constexpr int kKSteps = kD / 16;
  using Copy = sm80::CopyLayout<kD, kThreads>;
  static constexpr int kKvPasses = kBlockN / Copy::kRowsPerPass;
  static constexpr int kQPasses = kBlockM / Copy::kRowsPerPass;
  static constexpr int kTileElems = kBlockN * kD;
  static constexpr int kTileBytes = kTileElems * 2;
  // Q [64 kWarpGroups, d] + 2 K and 3 V tiles [64, d] + 1 KiB to align the swizzled tiles: at d = 128,
  // 113 KiB (two warpgroups) or 97 KiB (one: two blocks fit an SM).
  static constexpr int kSmemBytes = (kBlockM * kD + (kKStages + kVStages) * kTileElems) * 2 + 1024;
  static_assert(kD == 64 || kD == 128, "head_dim 64 or 128");
  static_assert(kTileBytes % 1024 == 0, "swizzled tiles must stay 1024-byte aligned");
  static_assert(kAhead >= 1 && 2 * kAhead + 1 <= kMetaSlots, "metadata ring too small");
};

template <typename Elem, int kD>
__device__ __forceinline__ void wgmma_pv(float (&o)[kD / 8][4], const std::uint32_t (&p)[4], std::uint64_t desc) {
  if constexpr (kD == 128) {
    wgmma_m64n128k16_rs<Elem, 1>(o, p, desc, 1);
  } else {
    wgmma_m64n64k16_rs<Elem, 1>(o, p, desc, 1);
  }
}

template <typename Elem, int kD, int kWarpGroups>
__global__ void __launch_bounds__(Config<Elem, kD, kWarpGroups>::kThreads, Config<Elem, kD, kWarpGroups>::kMinBlocks)
    attention_kernel_sm90(const KernelArgs a) {
#if SAMPLEATTN_SM90A
  using Cfg = Config<Elem, kD, kWarpGroups>;
  using sm80::cp_async_commit;
  using sm80::cp_async_wait;
  using sm80::smem_addr;
  constexpr int kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN, kAhead = Cfg::kAhead;
  constexpr int kKStages = Cfg::kKStages, kVStages = Cfg::kVStages;
  constexpr int kSlots = Cfg::kMetaSlots;
  constexpr int kChunks = Cfg::Copy::kChunks, kRowsPerPass = Cfg::Copy::kRowsPerPass;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  // The swizzle pattern is a function of address bits 7..9: tiles start on 1024-byte boundaries.
  unsigned char* smem_aligned = smem_raw + ((1024u - (smem_addr(smem_raw) & 1023u)) & 1023u);
  Elem* q_s = reinterpret_cast<Elem*>(smem_aligned);  // [kBlockM][d]
  Elem* k_s = q_s + kBlockM * kD;                     // [2][64][d]
  Elem* v_s = k_s + kKStages * Cfg::kTileElems;       // [3][64][d]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const sm80::BlockTile<Elem> bt(a, kBlockM);
  const std::int64_t h = bt.h, b = bt.b, bh = bt.bh, m0 = bt.m0, m1 = bt.m1;
  const Elem* q_g = bt.q;
  const Elem* k_g = bt.k;
  const Elem* v_g = bt.v;

  const int copy_chunk_id = tid % kChunks, copy_row = tid / kChunks;
#pragma unroll
  for (int pass = 0; pass < Cfg::kQPasses; ++pass) {
    const int row = copy_row + pass * kRowsPerPass;
    const bool valid = m0 + row < a.seq_q;
    const Elem* src = q_g + (valid ? (m0 + row) * a.q_stride[1] : 0) + copy_chunk_id * 8;
    sm80::copy_chunk(q_s + sw128_offset<kBlockM>(row, copy_chunk_id), src, valid, a.aligned_inputs);
  }

  const sm80::TilePlan<kBlockN> pl = sm80::make_plan<kBlockN>(a, bh, m0, m1);
  const int num_tiles = pl.total_tiles();

  // Tile metadata ring: tile t's indices / bitmap words in slot t % kSlots, fetched 2 kAhead tiles ahead (they
  // must have landed when tile t is issued, kAhead tiles ahead of its computation).
  __shared__ std::int32_t idx_s[kSlots][kBlockN];
  __shared__ std::uint32_t bits_s[kSlots][2];
  auto fetch_metadata = [&](int t) {
    const sm80::TileRef tr = sm80::tile_ref(pl, t);
    if (tr.gather) {
      if (tid >= kBlockN) return;
      const int slot = tr.base + tid;
      const bool valid = slot < tr.end;
      sm80::cp_async_4(smem_addr(&idx_s[t % kSlots][tid]), valid ? pl.cols + slot : pl.cols, valid);
    } else if (pl.sparse && tid < 2) {
      const std::int64_t word = tr.base / 32 + tid;
      const bool valid = word < a.bitmap_words;
      sm80::cp_async_4(smem_addr(&bits_s[t % kSlots][tid]), valid ? pl.bitmap + word : pl.bitmap, valid);
    }
  };
  // One branch on the layout per tile, not per chunk: the aligned path is straight cp.async.
  auto issue_tile = [&](int t) {
    const sm80::TileRef tr = sm80::tile_ref(pl, t);
    std::int64_t key[Cfg::kKvPasses];
    bool valid[Cfg::kKvPasses];
#pragma unroll
    for (int pass = 0; pass < Cfg::kKvPasses; ++pass) {
      const int row = copy_row + pass * kRowsPerPass;
      if (tr.gather) {
        valid[pass] = tr.base + row < tr.end;
        key[pass] = valid[pass] ? idx_s[t % kSlots][row] : 0;
      } else {
        key[pass] = tr.base + row;
        valid[pass] = key[pass] < a.seq_k;
        if (!valid[pass]) key[pass] = 0;
      }
    }
    Elem* k_dst = k_s + (t % kKStages) * Cfg::kTileElems;
    Elem* v_dst = v_s + (t % kVStages) * Cfg::kTileElems;
    if (a.aligned_inputs) {
#pragma unroll
      for (int pass = 0; pass < Cfg::kKvPasses; ++pass) {
        const int dst = sw128_offset<kBlockN>(copy_row + pass * kRowsPerPass, copy_chunk_id);
        sm80::cp_async_16(smem_addr(k_dst + dst), k_g + key[pass] * a.k_stride[1] + copy_chunk_id * 8, valid[pass]);
        sm80::cp_async_16(smem_addr(v_dst + dst), v_g + key[pass] * a.v_stride[1] + copy_chunk_id * 8, valid[pass]);
      }
    } else {
#pragma unroll
      for (int pass = 0; pass < Cfg::kKvPasses; ++pass) {
        const int dst = sw128_offset<kBlockN>(copy_row + pass * kRowsPerPass, copy_chunk_id);
        sm80::copy_chunk(k_dst + dst, k_g + key[pass] * a.k_stride[1] + copy_chunk_id * 8, valid[pass], false);
        sm80::copy_chunk(v_dst + dst, v_g + key[pass] * a.v_stride[1] + copy_chunk_id * 8, valid[pass], false);
      }
    }
  };

  // Prologue: the metadata of tiles 0 .. 2 kAhead - 1 (sparse only; one exposed round trip), then tiles
  // 0 .. kAhead - 1 in one commit group each (Q joins the first). Every loop iteration commits one group, so
  // tile t is in group t and "at most kAhead - 1 groups pending" means tile t has landed.
  if (pl.sparse) {
    for (int j = 0; j < 2 * kAhead && j < num_tiles; ++j) fetch_metadata(j);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
  }
#pragma unroll
  for (int j = 0; j < kAhead; ++j) {
    if (j < num_tiles) issue_tile(j);
    cp_async_commit();
  }

  // Descriptors: K tile (B of Q K^T, K-major): k-step ks is 16 columns of 64-column block ks / 4;
  // V tile (B of P V, MN-major): k-step kk is keys 16 kk .. 16 kk + 15, d-blocks kBlockN * 128 bytes apart.
  const std::uint32_t k_base = smem_addr(k_s), v_base = smem_addr(v_s);
  auto k_desc = [&](int stage, int ks) {
    return sw128_desc(k_base + stage * Cfg::kTileBytes + (ks >> 2) * (kBlockN * 128) + (ks & 3) * 32, 16, 1024);
  };
  auto v_desc = [&](int stage, int kk) {
    return sw128_desc(v_base + stage * Cfg::kTileBytes + kk * 16 * 128, kBlockN * 128, 1024);
  };

  const std::uint32_t q_wg = smem_addr(q_s) + (warp / 4) * 64 * 128;  // this warpgroup's rows, swizzled Q
  auto q_desc = [&](int ks) { return sw128_desc(q_wg + (ks >> 2) * (kBlockM * 128) + (ks & 3) * 32, 16, 1024); };
  std::uint32_t p_frag[2][kBlockN / 16][4];
  float o[Cfg::kOTiles][4];
#pragma unroll
  for (int dt = 0; dt < Cfg::kOTiles; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[dt][e] = 0.0f;
  sm80::OnlineSoftmax<Cfg::kNTiles, Cfg::kOTiles> softmax;
  softmax.init();
  const std::int64_t row0 = m0 + warp * 16 + lane / 4;  // this lane's rows: row0, row0 + 8

  // Iteration t: issue S_t = Q K_t^T and O += P_{t-1} V_{t-1}; wait for S_t; mask and softmax of tile t
  // while the tensor cores run P_{t-1} V_{t-1}; wait for that product; rescale O. What keeps the softmax
  // before that wait in the machine code: ptxas hoists a wgmma wait above register-only work (it did, and
  // the overlap was lost), never above a shared-memory store, so each thread stores its row sums (which
  // depend on every exponential) to a private slot first; the wait also takes P_t as asm operands so that
  // the compiler front end cannot sink the softmax either. Nothing is pending across iterations: ptxas
  // serialises every wgmma when an accumulator may be in flight at a loop back edge. P_t is written while
  // P_{t-1} V_{t-1} still reads its registers, so P alternates between two register sets (tile parity,
  // the loop is unrolled by two). Tile 0 is peeled (no P V) so that no path issues a conditional product.
  float alpha[2];
  __shared__ float order_s[Cfg::kThreads];
  const std::uint32_t order_slot = smem_addr(&order_s[tid]);
  auto step = [&](int t, auto first_tile, auto parity) {
    constexpr bool kFirst = decltype(first_tile)::value;
    constexpr int kCur = decltype(parity)::value;
    std::uint32_t(&p_cur)[kBlockN / 16][4] = p_frag[kCur];
    std::uint32_t(&p_prev)[kBlockN / 16][4] = p_frag[1 - kCur];
    const int k_stage = t % kKStages, v_prev = (t + kVStages - 1) % kVStages;
    cp_async_wait<kAhead - 1>();
    fence_proxy_async();
    __syncthreads();  // tile t has landed; the stages tile t + kAhead goes to are no longer read
    if (t + kAhead < num_tiles) issue_tile(t + kAhead);
    if (t + 2 * kAhead < num_tiles) fetch_metadata(t + 2 * kAhead);
    cp_async_commit();

    float s[Cfg::kNTiles][4];
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < Cfg::kKSteps; ++ks) wgmma_m64n64k16_ss<Elem>(s, q_desc(ks), k_desc(k_stage, ks), ks > 0);
    wgmma_commit();
    if constexpr (kFirst) {
      wgmma_wait<0>();
    } else {
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) wgmma_pv<Elem, kD>(o, p_prev[kk], v_desc(v_prev, kk));
      wgmma_commit();
      wgmma_wait<1>();
    }
    fence_operand(s);

    const sm80::TileRef tr = sm80::tile_ref(pl, t);
    const bool masked = tr.gather ? tr.end - tr.base < kBlockN : sm80::span_tile_needs_mask(pl, a, tr.base);
    if (masked) {
      const std::uint64_t bits[1] = {
          pl.sparse ? (static_cast<std::uint64_t>(bits_s[t % kSlots][1]) << 32) | bits_s[t % kSlots][0] : 0ull};
      sm80::apply_mask<Cfg>(s, a, pl, tr, row0, bits);
    }
    softmax.scores(s, alpha, a.scale_log2);
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      p_cur[kk][0] = sm80::pack2<Elem>(s[2 * kk][0], s[2 * kk][1]);
      p_cur[kk][1] = sm80::pack2<Elem>(s[2 * kk][2], s[2 * kk][3]);
      p_cur[kk][2] = sm80::pack2<Elem>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      p_cur[kk][3] = sm80::pack2<Elem>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    }
    if constexpr (!kFirst) {
      asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(order_slot), "f"(softmax.row_sum[0] + softmax.row_sum[1])
                   : "memory");
      wgmma_wait_after<0>(p_cur);
      fence_operand(o);
    }
    softmax.rescale(o, alpha);
  };
  using Even = std::integral_constant<int, 0>;
  using Odd = std::integral_constant<int, 1>;
  auto last_product = [&](const std::uint32_t(&p)[kBlockN / 16][4]) {
    const int last = (num_tiles - 1) % kVStages;
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) wgmma_pv<Elem, kD>(o, p[kk], v_desc(last, kk));
    wgmma_commit();
    wgmma_wait<0>();
    fence_operand(o);
  };
  if (num_tiles > 0) {
    step(0, std::true_type{}, Even{});
    int t = 1;
    for (; t + 1 < num_tiles; t += 2) {
      step(t, std::false_type{}, Odd{});
      step(t + 1, std::false_type{}, Even{});
    }
    if (t < num_tiles) {
      step(t, std::false_type{}, Odd{});
      last_product(p_frag[1]);
    } else {
      last_product(p_frag[0]);
    }
  }
  cp_async_wait<0>();

  Elem* out_g = static_cast<Elem*>(a.out) + b * a.out_stride[0] + h * a.out_stride[2];
  float inv_sum[2], lse[2];
  softmax.finish(inv_sum, lse);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const std::int64_t r = row0 + 8 * i;
    if (r >= a.seq_q) continue;
    Elem* dst = out_g + r * a.out_stride[1] + 2 * (lane & 3);
#pragma unroll
    for (int dt = 0; dt < Cfg::kOTiles; ++dt) {
      const std::uint32_t packed = sm80::pack2<Elem>(o[dt][2 * i] * inv_sum[i], o[dt][2 * i + 1] * inv_sum[i]);
      if (a.aligned_out) {
        *reinterpret_cast<std::uint32_t*>(dst + dt * 8) = packed;
      } else {
        reinterpret_cast<unsigned short*>(dst + dt * 8)[0] = static_cast<unsigned short>(packed & 0xffffu);
        reinterpret_cast<unsigned short*>(dst + dt * 8)[1] = static_cast<unsigned short>(packed >> 16);
      }
    }
    if (a.lse != nullptr && (lane & 3) == 0) a.lse[bh * a.seq_q + r] = lse[i];
  }
#endif
}

}  // namespace sampleattn::cuda::sm90

#if SAMPLEATTN_SM90_WS
#include "cuda/attention_kernel_sm90_ws.cuh"
#endif

namespace sampleattn::cuda::sm90 {

// Whether this instance runs here (compute capability 9.0, sm_90a code; see sm90_check.h).
template <typename Elem, int kD>
bool attention_sm90_runnable() {
#if SAMPLEATTN_SM90_WS
  return attention_sm90_ws_runnable<Elem, kD>();
#else
  static Sm90Check check;
  return check.runnable(attention_kernel_sm90<Elem, kD, 1>, attention_kernel_sm90<Elem, kD, 2>);
#endif
}

template <typename Elem, int kD, int kWarpGroups>
cudaError_t launch_instance(const KernelArgs& a, std::int64_t batch, cudaStream_t stream) {
  using Cfg = Config<Elem, kD, kWarpGroups>;
  auto kernel = attention_kernel_sm90<Elem, kD, kWarpGroups>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(a.num_m_tiles * a.q_heads), static_cast<unsigned>(batch));
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(a);
  return cudaGetLastError();
}

// a.block_m (64 or 128, chosen by the host) picks the instance.
template <typename Elem, int kD>
cudaError_t launch_attention_sm90(const KernelArgs& a, std::int64_t batch, cudaStream_t stream) {
#if SAMPLEATTN_SM90_WS
  return launch_attention_sm90_ws<Elem, kD>(a, batch, stream);
#endif
  return a.block_m == 64 ? launch_instance<Elem, kD, 1>(a, batch, stream) : launch_instance<Elem, kD, 2>(a, batch, stream);
}

}  // namespace sampleattn::cuda::sm90
