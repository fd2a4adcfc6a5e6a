// The order in which the sm_90a pass 1 runs its blocks (select_lse_sm90.cuh, lse_kernel_sm90). A block is
// (key chunk c, KV head, row tile rank), rank 0 the last 128 flat rows (the longest). Causal rows end at
// their own position, so in chunk c the first F_c ranks see the whole chunk ("full" blocks, the same work
// each), the next ones see less and less of it, the rest none. Blocks run in two phases:
//   1. every full block, chunk by chunk (the blocks that run together read one KV head's chunk from L2);
//   2. the others, by d = rank - F_c (0: the heaviest of the partial blocks), then chunk, then KV head; the
//      blocks that see nothing come last and return at once.
// So the last blocks to start are the shortest: with the chunks one after another (the order before), the
// last chunk's full blocks started last and ran ~8% of pass 1 past the others at 32K.
// Plain integer arithmetic, shared by the host (F_c, tests) and the device (block index -> block).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SA_HOST_DEVICE __host__ __device__
#else
#define SA_HOST_DEVICE
#endif

namespace sampleattn::cuda::sel {

constexpr int kPass1MaxChunks = 16;  // stage1_key_chunk keeps ceil(Sk / key_chunk) <= 16
constexpr int kPass1RowTile = 128;   // flat rows per pass 1 block (kLseRows)

struct Pass1Order {
  std::int32_t chunks = 1;                    // key chunks (<= kPass1MaxChunks)
  std::int32_t tiles = 0;                     // row tiles of 128 flat rows (n * group / 128, rounded up)
  std::int32_t full[kPass1MaxChunks] = {};    // F_c, non-increasing in c
};

// F_c for every chunk: the ranks whose first flat row f0 = (tiles - 1 - rank) * 128 (sampled row f0 / group,
// position pos_off + t_i, t_i = floor((i + 1) Sq / n) - 1) sees every key of chunk c, i.e. t_i + 1 + pos_off
// >= min((c + 1) * key_chunk, Sk). Not causal: every rank. Clamped to be non-increasing (phase 2's decoding
// needs it; it holds anyway).
inline Pass1Order make_pass1_order(std::int64_t seq_q, std::int64_t seq_k, std::int64_t n, std::int64_t group,
                                   std::int64_t key_chunk, std::int64_t chunks, bool causal) {
  constexpr std::int64_t row_tile = kPass1RowTile;
  Pass1Order o;
  o.chunks = static_cast<std::int32_t>(chunks);
  o.tiles = static_cast<std::int32_t>((n * group + row_tile - 1) / row_tile);
  const std::int64_t pos_off = seq_k - seq_q;
  std::int64_t prev = o.tiles;
  for (std::int64_t c = 0; c < chunks; ++c) {
    std::int64_t f = o.tiles;
    if (causal) {
      const std::int64_t end = (c + 1) * key_chunk < seq_k ? (c + 1) * key_chunk : seq_k;
      const std::int64_t need = end - pos_off;  // t_i + 1 >= need <=> (i + 1) Sq >= need * n
      const std::int64_t first = need <= 0 ? 0 : (need * n + seq_q - 1) / seq_q - 1;
      if (first >= n) {
        f = 0;
      } else {
        const std::int64_t skip = (group * first + row_tile - 1) / row_tile;  // tiles whose f0 < group * first
        f = o.tiles - skip > 0 ? o.tiles - skip : 0;
      }
    }
    prev = f < prev ? f : prev;
    o.full[c] = static_cast<std::int32_t>(prev);
  }
  return o;
}

// Block x of the flat grid (tiles * chunks * kv_heads blocks) -> (chunk, kvh, rank); a bijection.
SA_HOST_DEVICE inline void pass1_block(const Pass1Order& o, std::int64_t kv_heads, std::int64_t x, std::int64_t& chunk,
                                       std::int64_t& kvh, std::int64_t& rank) {
  for (int c = 0; c < o.chunks; ++c) {  // phase 1: chunk-major, then KV head, then rank
    const std::int64_t here = std::int64_t{o.full[c]} * kv_heads;
    if (x < here) {
      chunk = c;
      kvh = x / o.full[c];
      rank = x % o.full[c];
      return;
    }
    x -= here;
  }
  // Phase 2: D_c = tiles - F_c blocks per (chunk, KV head), non-decreasing in c. Level d holds the chunks with
  // D_c > d; levels [D_{k-1}, D_k) hold chunks k .. chunks - 1.
  kvh = x % kv_heads;
  std::int64_t y = x / kv_heads, lo = 0;
  for (int k = 0; k < o.chunks; ++k) {
    const std::int64_t hi = o.tiles - o.full[k], width = o.chunks - k, count = (hi - lo) * width;
    if (y < count) {
      chunk = k + y % width;
      rank = o.full[chunk] + lo + y / width;
      return;
    }
    y -= count;
    lo = hi;
  }
  chunk = o.chunks;  // past the grid: no block
  rank = 0;
}

}  // namespace sampleattn::cuda::sel
