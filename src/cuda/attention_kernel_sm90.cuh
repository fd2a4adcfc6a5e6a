// The sm_90a attention kernel (Hopper: wgmma, mbarriers, warp specialisation), dense and sparse, over the same
// tile plan as the sm_80 kernel (attention_plan.cuh). One thread block per (query tile of 64 kConsumers rows,
// query head, batch): one producer warpgroup and kConsumers consumer warpgroups.
//   producer   copies Q once, then the kBlockN-key K/V tiles of the plan into a ring of stages (cp.async, 16
//              bytes a thread; gathered tiles read the kept columns' rows by key, the keys staged one tile
//              ahead in shared memory, ~3 instructions per copy like contiguous tiles). Each thread's copies
//              of a stage arrive on its "full" barrier when they land (cp.async.mbarrier.arrive), so the
//              producer never waits for its own copies, only on a stage's "empty" barrier before refilling it.
//              It keeps few registers (setmaxnreg) so that the consumers get more. It also searches the plan's
//              stripes once tile 0 is on its way and hands them to the consumers (the band tiles come first
//              and need none).
//   consumer g owns rows 64 g .. 64 g + 63 (each warp 16). Per tile t: wait for K_t (and V_{t-1}), issue
//              S_t = Q K_t^T (wgmma m64n{kBlockN}k16, Q and K from 128-byte-swizzled shared memory) and
//              O += P_{t-1} V_{t-1} (m64n{kDs}k16, P from registers), wait for S_t, free K_t, mask and softmax
//              tile t while the tensor cores work on P_{t-1} V_{t-1}, wait for that product, free V_{t-1},
//              rescale O. At the end each warp writes its 16 rows of O into its rows of the Q tile and stores
//              them back as whole rows.
//   Two consumers take turns to issue their products (named barriers), so that the softmax of one runs
//   while the tensor cores work for the other.
// Shapes: (kConsumers, kBlockN) = (2, 128), or (1, 64) for small windows (two blocks per SM; the 64-row, 64-key
// tiles waste fewer keys at the band edges); head_dim 256: (2, 64), since 128-key stages would not fit; head_dim 96
// as 128 (Config::kDs). 128-key
// tiles against 64: +6% dense, 3-11% faster sparse at 32K and 128K in spite of more waste at band edges and in the
// last gathered tile (bench/NOTES.md).
// Launched only on compute capability 9.0 with the sm_90a cubin (attention_launch.cu checks the binary); other
// targets compile an empty body. Bench results and the versions tried: bench/NOTES.md.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/attention_args.h"
#include "cuda/attention_kernel_sm80.cuh"
#include "cuda/attention_plan.cuh"
#include "cuda/pipeline_sm90.cuh"
#include "cuda/ptx_sm80.cuh"
#include "cuda/ptx_sm90.cuh"
#include "cuda/sm90_check.h"

namespace sampleattn::cuda::sm90 {

template <typename Elem, int kD, int kConsumers, int kBlockN_>
struct Config {
  static constexpr int kBlockM = 64 * kConsumers;
  static constexpr int kBlockN = kBlockN_;
  // Columns a row of Q, K, V and O has in shared memory and in the accumulators: head_dim 96 is stored 128 wide
  // (the 128-byte swizzle is 64 elements wide), its columns 96..127 neither copied nor read by Q K^T (6 k-steps);
  // P V runs 128 wide and the epilogue drops those columns.
  static constexpr int kDs = kD == 96 ? 128 : kD;
  static constexpr int kThreads = 128 * (kConsumers + 1);
  static constexpr int kMinBlocks = kConsumers == 1 ? 2 : 1;  // blocks per SM
  // Registers per thread after reallocation: the launch gives 65536 / (kThreads kMinBlocks), rounded down to
  // a multiple of 8, to every thread (168 or 128); the producer gives part of its share to the consumers
  // (the least it needs without spills in its copy loop; at (2, 128, d 128) one producer value, the shared
  // address of the contiguous copies, is reloaded once per tile, and two plan flags of the consumers spill,
  // read outside the loop and on masked tiles only).
  static constexpr int kProducerRegs = kConsumers == 1 || kD == 64 ? 72 : 40;
  static constexpr int kConsumerRegs = kConsumers == 1 ? 184 : (kD == 64 ? 216 : 232);
  // K stages: K_t (read by S_t; freed right after it) and K_{t+1} in flight; V stages one more (V_{t-1} is
  // read by P V while S_t is computed).
  static constexpr int kKStages = 2;
  static constexpr int kVStages = kKStages + 1;
  static constexpr bool kPingPong = kConsumers == 2;
  // The band span from its last tile down (sm80::tile_ref): in SM cycles against first-tile-up, 1.2% fewer at
  // 32K and 5% density and 0.6-1.3% fewer at 8K and 5-20% with one consumer (64-row blocks); 0.7% more at 128K
  // and 5-20% with two (bench/NOTES.md, fourteenth session).
  static constexpr bool kSpanFromLast = kConsumers == 1;
  static constexpr int kNTiles = kBlockN / 8;
  static constexpr int kOTiles = kDs / 8;
  static constexpr int kOutTiles = kD / 8;  // the accumulator tiles that hold output columns (global stores)
  static constexpr int kKSteps = kD / 16;  // of Q K^T, over head_dim columns
  static constexpr int kPSteps = kBlockN / 16;
  // The producer warpgroup's copies of Q and of contiguous K / V tiles: rows of 64 or 128 elements in passes of
  // whole rows (Copy); rows of 96 (12 chunks do not divide the threads) and 256 elements (4 rows a pass would
  // change the swizzle pattern between passes) in the layout of gathered tiles, 8 threads a row: chunk c + 8 p
  // of a row for p < kDBlocks where copied(c, p).
  static constexpr bool kRowCopies = kD == 64 || kD == 128;
  using Copy = sm80::CopyLayout<kRowCopies ? kD : 128, 128>;
  static constexpr int kKvPasses = kBlockN / Copy::kRowsPerPass;
  static constexpr int kQPasses = kBlockM / Copy::kRowsPerPass;
  static constexpr int kTileElems = kBlockN * kDs;
  static constexpr int kDBlocks = kDs / 64;  // 64-column blocks of a stored row
  // Whether chunk c + 8 p (c < 8) of a row holds head_dim columns (at head_dim 96 the second block's first 4).
  static __device__ __forceinline__ bool copied(int c, int p) { return kD % 64 == 0 || c + 8 * p < kD / 8; }
  static constexpr int kTileBytes = kTileElems * 2;
  // Q [64 kConsumers, d] + K and V stages [kBlockN, d] + 1 KiB to align the swizzled tiles: with 2 + 3 stages at
  // d = 128 (and 96, stored 128 wide), 193 KiB (2, 128), 97 KiB (1, 64: two blocks fit an SM); at d = 256,
  // 225 KiB (2, 64).
  static constexpr int kSmemBytes = (kBlockM * kDs + (kKStages + kVStages) * kTileElems) * 2 + 1024;
  static_assert(kD == 64 || kD == 96 || kD == 128 || kD == 256, "head_dim 64, 96, 128 or 256");
  static_assert(kConsumers == 1 || kConsumers == 2, "one or two consumer warpgroups");
  static_assert(kBlockN == 64 * kConsumers || (kD == 256 && kConsumers == 2 && kBlockN == 64),
                "64-key tiles with one consumer, 128 with two (64 at head_dim 256, for shared memory)");
  static_assert(kTileBytes % 1024 == 0, "swizzled tiles must stay 1024-byte aligned");
  // The warpgroups' registers must add up to at most the block's pool, or setmaxnreg.inc waits forever.
  static constexpr int kLaunchRegs = (65536 / (kThreads * kMinBlocks)) & ~7;
  static_assert(kProducerRegs + kConsumers * kConsumerRegs <= (kConsumers + 1) * kLaunchRegs, "register budget");
  // The kernel's static shared memory (barriers, idx_s, order_s: by ptxas 2 KiB with 64-key tiles, 3 KiB with
  // 128) comes on top; at d = 256 the two together are exactly the 227 KiB a block may have.
  static constexpr int kStaticSmemBudget = kBlockN == 128 ? 3072 : 2048;
  static_assert(kSmemBytes + kStaticSmemBudget <= 227 * 1024 &&
                    kMinBlocks * (kSmemBytes + kStaticSmemBudget) <= 228 * 1024,
                "shared memory");
};

template <typename Elem, int kBlockN>
__device__ __forceinline__ void wgmma_qk(float (&s)[kBlockN / 8][4], std::uint64_t desc_q, std::uint64_t desc_k,
                                         int accumulate) {
  if constexpr (kBlockN == 128) {
    wgmma_m64n128k16_ss<Elem>(s, desc_q, desc_k, accumulate);
  } else {
    wgmma_m64n64k16_ss<Elem>(s, desc_q, desc_k, accumulate);
  }
}

template <typename Elem, int kD>
__device__ __forceinline__ void wgmma_pv(float (&o)[kD / 8][4], const std::uint32_t (&p)[4], std::uint64_t desc) {
  if constexpr (kD == 256) {
    wgmma_m64n256k16_rs<Elem, 1>(o, p, desc, 1);
  } else if constexpr (kD == 128) {
    wgmma_m64n128k16_rs<Elem, 1>(o, p, desc, 1);
  } else {
    wgmma_m64n64k16_rs<Elem, 1>(o, p, desc, 1);
  }
}

template <typename Elem, int kD, int kConsumers, int kBlockN>
__global__ void __launch_bounds__(Config<Elem, kD, kConsumers, kBlockN>::kThreads,
                                  Config<Elem, kD, kConsumers, kBlockN>::kMinBlocks)
    attention_kernel_sm90(const KernelArgs a) {
#if SAMPLEATTN_SM90A
  using Cfg = Config<Elem, kD, kConsumers, kBlockN>;
  using sm80::smem_addr;
  constexpr int kBlockM = Cfg::kBlockM, kKStages = Cfg::kKStages, kVStages = Cfg::kVStages;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  // The swizzle pattern is a function of address bits 7..9: tiles start on 1024-byte boundaries.
  unsigned char* smem_aligned = smem_raw + ((1024u - (smem_addr(smem_raw) & 1023u)) & 1023u);
  Elem* q_s = reinterpret_cast<Elem*>(smem_aligned);  // [kBlockM][kDs]
  Elem* k_s = q_s + kBlockM * Cfg::kDs;               // [kKStages][kBlockN][kDs]
  Elem* v_s = k_s + kKStages * Cfg::kTileElems;       // [kVStages][kBlockN][kDs]
  __shared__ __align__(8) std::uint64_t full_k[kKStages], empty_k[kKStages], full_v[kVStages], empty_v[kVStages];
  // The producer's stripe search result (left_count, right_begin; find_stripes), for the consumers, which
  // need it only after their first tile: stripes_full completes when it is written.
  __shared__ __align__(8) std::uint64_t stripes_full;
  __shared__ int stripes_s[2];
  __shared__ __align__(16) std::int32_t idx_s[2][kBlockN];  // keys of a gathered tile (producer only)
  __shared__ float order_s[kConsumers * 128];

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  if (tid == 0) {
    for (int s = 0; s < kKStages; ++s) {
      mbar_init(smem_addr(&full_k[s]), 128);
      mbar_init(smem_addr(&empty_k[s]), 4 * kConsumers);
    }
    for (int s = 0; s < kVStages; ++s) {
      mbar_init(smem_addr(&full_v[s]), 128);
      mbar_init(smem_addr(&empty_v[s]), 4 * kConsumers);
    }
    mbar_init(smem_addr(&stripes_full), 1);
  }
  const sm80::BlockTile<Elem> bt(a, kBlockM);
  const sm80::HeadSelection head = sm80::load_head_selection(a, bt.bh);  // used after the Q copies are issued
  constexpr int kChunks = Cfg::Copy::kChunks, kRowsPerPass = Cfg::Copy::kRowsPerPass;
  const int chunk = tid % kChunks, crow = tid / kChunks;
  if (warp < 4) {
    // The producer's copies of Q first: they need no plan, so they overlap its loads (the first full barrier's
    // arrivals, after tile 0's copies, cover them). At d 64 / 128 a whole tile with aligned rows takes the contiguous
    // K/V tiles' form: one global address plus constant steps, one shared address plus immediates (the general form,
    // with an address product and a branch per copy, took ~2,000 cycles of every block's start).
    if constexpr (!Cfg::kRowCopies) {
      const int qrow = tid / 8, qchunk = tid % 8;  // the gathered tiles' layout: 8 threads a row
#pragma unroll
      for (int i = 0; i < kBlockM / 16; ++i) {
        const int row = qrow + 16 * i;
        const bool valid = bt.m0 + row < a.seq_q;
        const Elem* src = bt.q + (valid ? (bt.m0 + row) * a.q_stride[1] : 0) + qchunk * 8;
#pragma unroll
        for (int p = 0; p < Cfg::kDBlocks; ++p)
          if (Cfg::copied(qchunk, p))
            sm80::copy_chunk(q_s + sw128_offset<kBlockM>(row, qchunk + 8 * p), src + 64 * p, valid, a.aligned_inputs);
      }
    } else if (a.aligned_inputs && bt.m1 - bt.m0 == kBlockM) {
      const char* src = reinterpret_cast<const char*>(bt.q + (bt.m0 + crow) * a.q_stride[1] + chunk * 8);
      const std::int64_t step = a.q_stride[1] * static_cast<std::int64_t>(sizeof(Elem)) * kRowsPerPass;
      const std::uint32_t dst = smem_addr(q_s + sw128_offset<kBlockM>(crow, chunk));
#pragma unroll
      for (int pass = 0; pass < Cfg::kQPasses; ++pass)
        sm80::cp_async_16(dst + pass * kRowsPerPass * 128, src + pass * step, true);
    } else {
#pragma unroll
      for (int pass = 0; pass < Cfg::kQPasses; ++pass) {
        const int row = crow + pass * kRowsPerPass;
        const bool valid = bt.m0 + row < a.seq_q;
        const Elem* src = bt.q + (valid ? (bt.m0 + row) * a.q_stride[1] : 0) + chunk * 8;
        sm80::copy_chunk(q_s + sw128_offset<kBlockM>(row, chunk), src, valid, a.aligned_inputs);
      }
    }
  }
  // The plan without its stripes: the producer searches them (find_stripes) after tile 0's copies are issued.
  sm80::TilePlan<kBlockN> pl = sm80::make_plan<kBlockN>(a, bt.bh, bt.m0, bt.m1, head);
  __syncthreads();  // barriers initialised

  if (warp < 4) {
    // Producer.
    setmaxnreg_dec<Cfg::kProducerRegs>();
    // A gathered tile has its own thread layout: 8 threads per row, thread (grow, gchunk) = (tid / 8, tid % 8) copies
    // chunks gchunk + 8 p (p < kDBlocks, where copied(gchunk, p)) of rows grow + 16 i (i < kRowsPerThread), so that it
    // needs one address per row (key * row bytes + base: one 32 x 32 -> 64-bit multiply-add) and reads its chunks at
    // immediate offsets from it; the destinations are one shared address plus immediates (rows 16 apart keep row % 8,
    // hence the swizzle pattern). A warp still reads four 128-byte row halves per copy instruction. (The copy loop is
    // the producer's whole cost and it shares the SM's issue slots with the consumers: with ~11 instructions per
    // gathered copy (a key load, select and product per copy) a head keeping 95% of its columns ran at 0.72x the dense
    // rate at 128K on the H200; with ~3, as here and for contiguous tiles, at 0.94x.)
    constexpr int kRowsPerThread = kBlockN / 16;
    const int grow = tid / 8, gchunk = tid % 8;
    // Keys of a gathered tile t, staged in idx_s[t & 1] one tile ahead so that its copies only wait on shared
    // memory: row r at (r % 16) kRowsPerThread + r / 16 (a thread's rows side by side, read as int4), 0 past
    // the end of the kept list (those rows are zero-filled, not read). Thread `tid` < kBlockN stages row tid.
    auto key_slot = [](int row) { return (row & 15) * kRowsPerThread + (row >> 4); };
    auto tile_key = [&](int t) -> std::int32_t {
      const sm80::TileRef tr = sm80::tile_ref<kBlockN, Cfg::kSpanFromLast>(pl, t);
      const int slot = tr.base + tid;
      return tr.gather && tid < kBlockN && slot < tr.end ? __ldg(pl.cols + slot) : 0;
    };
    // The copies of gathered tile t (`rows` kept rows) from `from` (this thread's chunk of key 0) to `to` (its
    // chunk of row grow); kPartial: the last tile of a stripe, whose rows from `rows` on are zero-filled.
    auto gather_tile = [&](int t, std::uint32_t to, const char* from, std::uint32_t row_bytes, int rows,
                           auto partial) {
      constexpr bool kPartial = decltype(partial)::value;
      const int rows_left = rows - grow;  // row grow + 16 i is kept iff 16 i < rows_left
      const int4* keys = reinterpret_cast<const int4*>(&idx_s[t & 1][grow * kRowsPerThread]);
#pragma unroll
      for (int v = 0; v < kRowsPerThread / 4; ++v) {
        const int4 k4 = keys[v];
        const std::int32_t key[4] = {k4.x, k4.y, k4.z, k4.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int i = 4 * v + j;
          const bool valid = !kPartial || 16 * i < rows_left;
          const char* row =
              static_cast<const char*>(add_wide_product(from, static_cast<std::uint32_t>(key[j]), row_bytes));
#pragma unroll
          for (int p = 0; p < Cfg::kDBlocks; ++p)
            if (Cfg::copied(gchunk, p)) sm80::cp_async_16(to + i * 16 * 128 + p * kBlockN * 128, row + p * 128, valid);
        }
      }
    };
    // Rows of K or V for tile t into their stage; the stage's "full" barrier gets this thread's arrival when the copies
    // have landed. With aligned inputs and row strides below 2^32 bytes (narrow_strides: 32-bit row bytes), a gathered
    // tile takes gather_tile and a contiguous tile inside the sequence (every dense tile but the last) at d 64 / 128
    // the Q layout: one address plus constant steps, one shared address plus immediates (the row step of the passes is
    // a multiple of 8, so the swizzle pattern is the same in every pass; gather_tile's layout for contiguous tiles too
    // measured 1.5% slower dense and 7% slower on nearly full heads at 128K). The last contiguous tile, unaligned
    // inputs and wider strides take the general path.
    auto copy_tile = [&](int t, Elem* dst, const Elem* src, std::int64_t stride, std::uint64_t* full) {
      const sm80::TileRef tr = sm80::tile_ref<kBlockN, Cfg::kSpanFromLast>(pl, t);
      if (a.aligned_inputs && a.narrow_strides && (tr.gather || tr.base + kBlockN <= a.seq_k)) {
        const char* from = reinterpret_cast<const char*>(src + gchunk * 8);
        const std::uint32_t row_bytes = static_cast<std::uint32_t>(stride * static_cast<std::int64_t>(sizeof(Elem)));
        if (tr.gather) {
          const std::uint32_t to = smem_addr(dst + sw128_offset<kBlockN>(grow, gchunk));
          const int rows = tr.end - tr.base;
          if (rows >= kBlockN) {
            gather_tile(t, to, from, row_bytes, rows, std::false_type{});
          } else {
            gather_tile(t, to, from, row_bytes, rows, std::true_type{});
          }
        } else if constexpr (!Cfg::kRowCopies) {
          // Rows of 96 or 256 elements: the gathered tiles' layout, one address per row.
          const std::uint32_t to = smem_addr(dst + sw128_offset<kBlockN>(grow, gchunk));
          const char* row =
              static_cast<const char*>(add_wide_product(from, static_cast<std::uint32_t>(tr.base + grow), row_bytes));
          const std::int64_t step = stride * static_cast<std::int64_t>(sizeof(Elem)) * 16;
#pragma unroll
          for (int i = 0; i < kRowsPerThread; ++i)
#pragma unroll
            for (int p = 0; p < Cfg::kDBlocks; ++p)
              if (Cfg::copied(gchunk, p))
                sm80::cp_async_16(to + i * 16 * 128 + p * kBlockN * 128, row + i * step + p * 128, true);
        } else {
          // Chunk `chunk` of row crow is chunk gchunk of its 64-column half chunk / 8.
          const std::uint32_t to = smem_addr(dst + sw128_offset<kBlockN>(crow, chunk));
          const char* row =
              static_cast<const char*>(add_wide_product(from, static_cast<std::uint32_t>(tr.base + crow), row_bytes)) +
              (chunk - gchunk) * 16;
          const std::int64_t step = stride * static_cast<std::int64_t>(sizeof(Elem)) * kRowsPerPass;
#pragma unroll
          for (int pass = 0; pass < Cfg::kKvPasses; ++pass)
            sm80::cp_async_16(to + pass * kRowsPerPass * 128, row + pass * step, true);
        }
        cp_async_arrive(smem_addr(full));
        return;
      }
      // The general path, in gather_tile's layout.
      Elem* to = dst + sw128_offset<kBlockN>(grow, gchunk);
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        const int row = grow + 16 * i;
        const bool valid = tr.gather ? row < tr.end - tr.base : tr.base + row < a.seq_k;
        const std::int64_t key = tr.gather ? idx_s[t & 1][grow * kRowsPerThread + i] : tr.base + row;
        const Elem* from = src + (valid ? key * stride : 0) + gchunk * 8;
#pragma unroll
        for (int p = 0; p < Cfg::kDBlocks; ++p) {
          if (!Cfg::copied(gchunk, p)) continue;
          Elem* chunk_to = to + i * 16 * 64 + p * kBlockN * 64;  // sw128_offset of (row, gchunk + 8 p)
          if (a.aligned_inputs) {
            sm80::cp_async_16(smem_addr(chunk_to), from + 64 * p, valid);
          } else {
            sm80::copy_chunk(chunk_to, from + 64 * p, valid, false);
          }
        }
      }
      if (a.aligned_inputs) {
        cp_async_arrive(smem_addr(full));
      } else {
        mbar_arrive(smem_addr(full));
      }
    };
    // Tile 0 is a band span tile (the span comes first in every plan that has one), contiguous: its copies go
    // out before the searches.
    int t0 = 0;
    if (pl.span_tiles > 0) {
      copy_tile(0, k_s, bt.k, a.k_stride[1], &full_k[0]);  // its arrival covers Q
      copy_tile(0, v_s, bt.v, a.v_stride[1], &full_v[0]);
      t0 = 1;
    }
    sm80::find_stripes(pl, a);
    if (tid == 0) {
      stripes_s[0] = pl.left_count;
      stripes_s[1] = pl.right_begin;
      mbar_arrive(smem_addr(&stripes_full));
    }
    const int num_tiles = pl.total_tiles();
    if (pl.sparse && t0 < num_tiles) {
      if (tid < kBlockN) idx_s[t0 & 1][key_slot(tid)] = tile_key(t0);
      named_barrier_sync(3, 128);
    }
    for (int t = t0; t < num_tiles; ++t) {
      const std::int32_t next = pl.sparse && t + 1 < num_tiles ? tile_key(t + 1) : 0;
      const int ks = t % kKStages, vs = t % kVStages;
      mbar_wait(smem_addr(&empty_k[ks]), ((t / kKStages) & 1) ^ 1);
      copy_tile(t, k_s + ks * Cfg::kTileElems, bt.k, a.k_stride[1], &full_k[ks]);
      mbar_wait(smem_addr(&empty_v[vs]), ((t / kVStages) & 1) ^ 1);
      copy_tile(t, v_s + vs * Cfg::kTileElems, bt.v, a.v_stride[1], &full_v[vs]);
      if (pl.sparse) {
        // Slot (t + 1) & 1 held tile t - 1's indices, read before the previous barrier.
        if (tid < kBlockN) idx_s[(t + 1) & 1][key_slot(tid)] = next;
        named_barrier_sync(3, 128);
      }
    }
    sm80::cp_async_commit();  // nothing may land after the block's end
    sm80::cp_async_wait<0>();
    return;
  }

  // Consumers.
  setmaxnreg_inc<Cfg::kConsumerRegs>();
  // The stripes come from the producer's search (the band span's tiles, first in the plan, need none): the
  // consumers start on tile 0 at once and take them after it (a search of their own put ~2,000 cycles of
  // dependent loads before every block's first product).
  const bool stripes_pending = pl.sparse && !pl.tail_mode;
  auto take_stripes = [&] {
    mbar_wait(smem_addr(&stripes_full), 0);
    sm80::set_stripes(pl, a, stripes_s[0], stripes_s[1]);
  };
  if (stripes_pending && pl.span_tiles == 0) take_stripes();
  int num_tiles = pl.total_tiles();
  const int ctid = tid - 128, cwarp = warp - 4, wg = cwarp / 4;
  const std::uint32_t k_base = smem_addr(k_s), v_base = smem_addr(v_s);
  // K tile (B of Q K^T, K-major): k-step ks is 16 columns of 64-column block ks / 4; V tile (B of P V,
  // MN-major): k-step kk is keys 16 kk .. 16 kk + 15, d-blocks kBlockN * 128 bytes apart.
  auto k_desc = [&](int stage, int ks) {
    return sw128_desc(k_base + stage * Cfg::kTileBytes + (ks >> 2) * (kBlockN * 128) + (ks & 3) * 32, 16, 1024);
  };
  auto v_desc = [&](int stage, int kk) {
    return sw128_desc(v_base + stage * Cfg::kTileBytes + kk * 16 * 128, kBlockN * 128, 1024);
  };
  const std::uint32_t q_wg = smem_addr(q_s) + wg * 64 * 128;  // this warpgroup's rows of Q
  auto q_desc = [&](int ks) { return sw128_desc(q_wg + (ks >> 2) * (kBlockM * 128) + (ks & 3) * 32, 16, 1024); };
  std::uint32_t p_frag[2][Cfg::kPSteps][4];
  float o[Cfg::kOTiles][4];
#pragma unroll
  for (int dt = 0; dt < Cfg::kOTiles; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[dt][e] = 0.0f;
  sm80::OnlineSoftmax<Cfg::kNTiles, Cfg::kOTiles> softmax;
  softmax.init();
  const std::int64_t row0 = bt.m0 + cwarp * 16 + lane / 4;  // this lane's rows: row0, row0 + 8

  // Ping-pong: consumer g waits on barrier 1 + g for its turn and hands the turn over on the other's; consumer 1
  // hands the first turn to consumer 0, which takes the last hand-over at the end.
  auto turn_begin = [&] {
    if constexpr (Cfg::kPingPong) named_barrier_sync(1 + wg, 256);
  };
  auto turn_end = [&] {
    if constexpr (Cfg::kPingPong) named_barrier_arrive(2 - wg, 256);
  };
  // A stage is freed by lane 0 of each warp once the warp's reads of it are done (wgmma waits; the
  // __syncwarp orders the other lanes' work before lane 0's release).
  auto release = [&](std::uint64_t* bar) {
    __syncwarp();
    if (lane == 0) mbar_arrive(smem_addr(bar));
  };

  // Iteration t (see the top of the file). What keeps the softmax before the wait for P_{t-1} V_{t-1} in the
  // machine code: ptxas hoists a wgmma wait above register-only work, never above a shared-memory store, so
  // each thread stores its row sums (which depend on every exponential) first; the wait also takes P_t as
  // operands. P alternates between two register sets (tile parity; the loop is unrolled by two) because P_t
  // is written while P_{t-1} V_{t-1} still reads its registers. Tile 0 is peeled (no P V).
  float alpha[2];
  const std::uint32_t order_slot = smem_addr(&order_s[ctid]);
  auto step = [&](int t, auto first_tile, auto parity) {
    constexpr bool kFirst = decltype(first_tile)::value;
    constexpr int kCur = decltype(parity)::value;
    std::uint32_t(&p_cur)[Cfg::kPSteps][4] = p_frag[kCur];
    std::uint32_t(&p_prev)[Cfg::kPSteps][4] = p_frag[1 - kCur];
    const int ks = t % kKStages, vp = (t + kVStages - 1) % kVStages;
    // V_{t-1} was copied before K_t: waiting for both first keeps the two products in one basic block (a wait
    // loop between them makes ptxas insert a warpgroup fence).
    mbar_wait(smem_addr(&full_k[ks]), (t / kKStages) & 1);
    if constexpr (!kFirst) mbar_wait(smem_addr(&full_v[vp]), ((t - 1) / kVStages) & 1);
    fence_proxy_async();  // the copies wrote through the generic proxy; wgmma reads through the async one
    float s[Cfg::kNTiles][4];
    turn_begin();
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < Cfg::kKSteps; ++kk) wgmma_qk<Elem, kBlockN>(s, q_desc(kk), k_desc(ks, kk), kk > 0);
    wgmma_commit();
    if constexpr (!kFirst) {
#pragma unroll
      for (int kk = 0; kk < Cfg::kPSteps; ++kk) wgmma_pv<Elem, Cfg::kDs>(o, p_prev[kk], v_desc(vp, kk));
      wgmma_commit();
    }
    turn_end();
    if constexpr (kFirst) {
      wgmma_wait<0>();
    } else {
      wgmma_wait<1>();
    }
    fence_operand(s);
    release(&empty_k[ks]);

    const sm80::TileRef tr = sm80::tile_ref<kBlockN, Cfg::kSpanFromLast>(pl, t);
    const bool masked = tr.gather ? tr.end - tr.base < kBlockN : sm80::span_tile_needs_mask(pl, a, tr.base);
    if (masked) {
      // The column-bitmap words of a sparse contiguous tile (tr.base is a multiple of kBlockN).
      std::uint64_t bits[kBlockN / 64];
#pragma unroll
      for (int w = 0; w < kBlockN / 64; ++w) {
        const std::int64_t word = tr.base / 32 + 2 * w;
        const bool sparse_span = pl.sparse && !tr.gather;
        const std::uint32_t lo = sparse_span && word < a.bitmap_words ? __ldg(pl.bitmap + word) : 0u;
        const std::uint32_t hi = sparse_span && word + 1 < a.bitmap_words ? __ldg(pl.bitmap + word + 1) : 0u;
        bits[w] = (static_cast<std::uint64_t>(hi) << 32) | lo;
      }
      sm80::apply_mask<Cfg>(s, a, pl, tr, row0, bits);
    }
    softmax.scores(s, alpha, a.scale_log2);
#pragma unroll
    for (int kk = 0; kk < Cfg::kPSteps; ++kk) {
      p_cur[kk][0] = sm80::pack2<Elem>(s[2 * kk][0], s[2 * kk][1]);
      p_cur[kk][1] = sm80::pack2<Elem>(s[2 * kk][2], s[2 * kk][3]);
      p_cur[kk][2] = sm80::pack2<Elem>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      p_cur[kk][3] = sm80::pack2<Elem>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    }
    if constexpr (!kFirst) {
      asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(order_slot), "f"(softmax.row_sum[0] + softmax.row_sum[1])
                   : "memory");
      wgmma_wait_after<0>(p_cur);
      release(&empty_v[vp]);
      fence_operand(o);
    }
    softmax.rescale(o, alpha);
  };
  using Even = std::integral_constant<int, 0>;
  using Odd = std::integral_constant<int, 1>;
  auto last_product = [&](const std::uint32_t(&p)[Cfg::kPSteps][4]) {
    const int t = num_tiles - 1, last = t % kVStages;
    mbar_wait(smem_addr(&full_v[last]), (t / kVStages) & 1);
    fence_proxy_async();
    turn_begin();
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < Cfg::kPSteps; ++kk) wgmma_pv<Elem, Cfg::kDs>(o, p[kk], v_desc(last, kk));
    wgmma_commit();
    turn_end();
    wgmma_wait<0>();
    fence_operand(o);
  };
  if (num_tiles > 0) {
    if constexpr (Cfg::kPingPong) {
      if (wg == 1) named_barrier_arrive(1, 256);
    }
    step(0, std::true_type{}, Even{});
    if (stripes_pending && pl.span_tiles > 0) {
      take_stripes();
      num_tiles = pl.total_tiles();
    }
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
    if constexpr (Cfg::kPingPong) {
      if (wg == 0) named_barrier_sync(1, 256);
    }
  }

  Elem* out_g = static_cast<Elem*>(a.out) + bt.b * a.out_stride[0] + bt.h * a.out_stride[2];
  float inv_sum[2], lse[2];
  softmax.finish(inv_sum, lse);
  if (a.aligned_out_rows && num_tiles > 0) {
    // Through this warp's 16 rows of the Q tile (read only by its warpgroup's products, all done; the wait for tile 0
    // covered the Q copies): the fragments go to shared memory, then back as whole 16-byte chunks, so that each
    // instruction writes whole rows but at d 96 (the fragments' own 4-byte stores touch 8 rows each and took ~2,500
    // cycles of every block's end). Conflict-free both ways: the Q tile's 128-byte swizzle. Every accumulator tile goes
    // to shared memory, at head_dim 96 the 4 without output columns too: with those left dead ptxas serialised the
    // kernel's wgmma instructions (C7511, "insufficient register resources").
    const int wrow = cwarp * 16;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int row = wrow + lane / 4 + 8 * i;
#pragma unroll
      for (int dt = 0; dt < Cfg::kOTiles; ++dt) {
        const std::uint32_t packed = sm80::pack2<Elem>(o[dt][2 * i] * inv_sum[i], o[dt][2 * i + 1] * inv_sum[i]);
        *reinterpret_cast<std::uint32_t*>(q_s + sw128_offset<kBlockM>(row, dt) + 2 * (lane & 3)) = packed;
      }
    }
    __syncwarp();
    // The warp's 16 rows, 32 16-byte chunks at a time: whole rows, or at head_dim 96 (12 chunks a row) 8/3 rows.
    constexpr int kRowChunks = kD / 8;
#pragma unroll
    for (int j = 0; j < 16 * kRowChunks / 32; ++j) {
      int row, chunk_out;
      if constexpr (32 % kRowChunks == 0) {
        row = wrow + j * (32 / kRowChunks) + lane / kRowChunks;
        chunk_out = lane % kRowChunks;
      } else {
        row = wrow + (32 * j + lane) / kRowChunks;
        chunk_out = (32 * j + lane) % kRowChunks;
      }
      const uint4 v = *reinterpret_cast<const uint4*>(q_s + sw128_offset<kBlockM>(row, chunk_out));
      const std::int64_t r = bt.m0 + row;
      if (r < a.seq_q) *reinterpret_cast<uint4*>(out_g + r * a.out_stride[1] + chunk_out * 8) = v;
    }
  } else {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const std::int64_t r = row0 + 8 * i;
      if (r >= a.seq_q) continue;
      Elem* dst = out_g + r * a.out_stride[1] + 2 * (lane & 3);
#pragma unroll
      for (int dt = 0; dt < Cfg::kOutTiles; ++dt) {
        const std::uint32_t packed = sm80::pack2<Elem>(o[dt][2 * i] * inv_sum[i], o[dt][2 * i + 1] * inv_sum[i]);
        if (a.aligned_out) {
          *reinterpret_cast<std::uint32_t*>(dst + dt * 8) = packed;
        } else {
          reinterpret_cast<unsigned short*>(dst + dt * 8)[0] = static_cast<unsigned short>(packed & 0xffffu);
          reinterpret_cast<unsigned short*>(dst + dt * 8)[1] = static_cast<unsigned short>(packed >> 16);
        }
      }
    }
  }
  if (a.lse != nullptr && (lane & 3) == 0) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const std::int64_t r = row0 + 8 * i;
      if (r < a.seq_q) a.lse[bt.bh * a.seq_q + r] = lse[i];
    }
  }
#endif
}

// Whether this instance runs here (compute capability 9.0, sm_90a code; see sm90_check.h).
template <typename Elem, int kD>
bool attention_sm90_runnable() {
  static Sm90Check check;
  if constexpr (kD == 256) {
    return check.runnable(attention_kernel_sm90<Elem, kD, 2, 64>);
  } else {
    return check.runnable(attention_kernel_sm90<Elem, kD, 1, 64>, attention_kernel_sm90<Elem, kD, 2, 128>);
  }
}

template <typename Elem, int kD, int kConsumers, int kBlockN>
cudaError_t launch_instance(const KernelArgs& a, std::int64_t batch, cudaStream_t stream) {
  using Cfg = Config<Elem, kD, kConsumers, kBlockN>;
  auto kernel = attention_kernel_sm90<Elem, kD, kConsumers, kBlockN>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(a.num_m_tiles * a.q_heads), static_cast<unsigned>(batch));
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(a);
  return cudaGetLastError();
}

// a.block_m (chosen by the host) picks the instance: 64 rows x 64 keys or 128 x 128; head_dim 256 runs 128 rows
// x 64 keys only.
template <typename Elem, int kD>
cudaError_t launch_attention_sm90(const KernelArgs& a, std::int64_t batch, cudaStream_t stream) {
  if constexpr (kD == 256) {
    if (a.block_m != 128) return cudaErrorInvalidValue;
    return launch_instance<Elem, kD, 2, 64>(a, batch, stream);
  } else {
    if (a.block_m == 64) return launch_instance<Elem, kD, 1, 64>(a, batch, stream);
    return launch_instance<Elem, kD, 2, 128>(a, batch, stream);
  }
}

}  // namespace sampleattn::cuda::sm90
