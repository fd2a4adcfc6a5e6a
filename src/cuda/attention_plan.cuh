// Per query tile: which K/V rows the kernel visits, in what order, and which of those tiles need an element
// mask (attention.h, sparse mode). A query tile covers rows [m0, m1) at key positions p0 = p(m0) ..
// p1 = p(m1 - 1), p(r) = Sk - Sq + r. Its keys come in up to three runs of kBlockN-key tiles (visited band
// first; the order does not change the online softmax):
//   left stripes   kept columns j < span_lo, gathered by index (every row sees them, none has them in band);
//   band span      contiguous keys [span_lo, span_end): the band of every row of the tile, span_lo = the
//                  first row's band start rounded down to kBlockN; element masks only on edge tiles;
//   right stripes  (non-causal only) kept columns j >= span_end, gathered by index.
// Dense mode is a band span over every visible key, and so is a sparse head that keeps every column. A tile
// holding dense-tail rows runs the span over [0, visible end) with the full mask (band | column bit | tail
// row), and no stripes.
#pragma once

#include <cstdint>

#include "cuda/attention_args.h"

namespace sampleattn::cuda::sm80 {

// Number of entries of the sorted a[0, n) that are < value, found by one warp with 32 probes per round
// (three rounds of global loads for 128K entries instead of 17 dependent ones). Every lane returns it.
__device__ __forceinline__ std::int64_t warp_count_less(const std::int32_t* a, std::int64_t n,
                                                        std::int64_t value) {
  const int lane = threadIdx.x & 31;
  std::int64_t lo = 0, hi = n;  // a[i] < value for i < lo; a[i] >= value for i >= hi
  while (hi - lo > 32) {
    const std::int64_t step = (hi - lo + 31) / 32;
    const std::int64_t probe = lo + (lane + 1) * step - 1;
    const bool less = probe < hi && a[probe] < value;
    const int below = __popc(__ballot_sync(0xffffffffu, less));
    const std::int64_t new_lo = lo + below * step;
    const std::int64_t new_hi = lo + (below + 1) * step - 1;
    lo = new_lo;
    hi = new_hi < hi ? new_hi : hi;
  }
  const bool less = lo + lane < hi && a[lo + lane] < value;
  return lo + __popc(__ballot_sync(0xffffffffu, less));
}

#ifndef SAMPLEATTN_TILE_GROUP
#define SAMPLEATTN_TILE_GROUP 8
#endif

// Query tiles per group of the block order (BlockTile).
constexpr std::int64_t kTileGroup = SAMPLEATTN_TILE_GROUP;

// What one thread block of the attention grid owns: query tile mt (rows [m0, m1)) of query head h of batch
// b, with the base pointers of this (b, h). Block order: the query tiles in groups of kTileGroup, the longest
// group first (the causal bottom); within a group, head by head, and the group's tiles of one head side by
// side. The blocks that run together are then a few heads' consecutive query tiles: they do the same work
// (same band width and nearly the same stripes) at the same pace, so each K/V row they share, kept column
// or band, is read from memory once for the group and hit in L2 by the others; and the heads of one KV head
// are neighbours, so dense and band tiles are shared across them too.
template <typename Elem>
struct BlockTile {
  std::int64_t h, b, bh, kvh, m0, m1;
  const Elem* q;
  const Elem* k;
  const Elem* v;

  // In 32-bit arithmetic (the host checks that query tiles x heads fit in int32): fewer instructions than
  // 64-bit divisions by run-time values at every block's start (measured: ~60 of the ~960 cycles from the
  // kernel's entry to here; bench/NOTES.md, thirteenth session).
  __device__ __forceinline__ BlockTile(const KernelArgs& a, std::int64_t block_m) {
    const int x = static_cast<int>(blockIdx.x), heads = static_cast<int>(a.q_heads);
    const int tiles = static_cast<int>(a.num_m_tiles), tile_group = static_cast<int>(kTileGroup);
    // More than 2^31 blocks per group means one group (x < 2^31).
    const int group_blocks = heads > 0x7fffffff / tile_group ? 0x7fffffff : tile_group * heads;
    const int group = x / group_blocks, first = group * tile_group;  // reversed tiles [first, ..)
    const int size = tiles - first < tile_group ? tiles - first : tile_group;
    const int rest = x - group * group_blocks;
    const int head = rest / size;
    const int mt = tiles - 1 - (first + rest - head * size);
    h = head;
    b = blockIdx.y;
    bh = b * a.q_heads + h;
    kvh = head / static_cast<int>(a.group);
    m0 = static_cast<std::int64_t>(mt) * block_m;
    m1 = m0 + block_m < a.seq_q ? m0 + block_m : a.seq_q;
    q = static_cast<const Elem*>(a.q) + b * a.q_stride[0] + h * a.q_stride[2];
    k = static_cast<const Elem*>(a.k) + b * a.k_stride[0] + kvh * a.k_stride[2];
    v = static_cast<const Elem*>(a.v) + b * a.v_stride[0] + kvh * a.v_stride[2];
  }
};

// Key positions, column counts and tile numbers all fit in int32 (seq_k < 2^31 is checked on the host);
// 32-bit fields keep the plan, which lives through the whole loop, at half the registers.
template <int kBlockN>
struct TilePlan {
  int p0 = 0, p1 = 0;        // key positions of the tile's first and last row
  int window = 0;            // band width w (sparse)
  int tail_row = 0;          // rows r >= tail_row keep every visible key (sparse)
  bool sparse = false, tail_mode = false;
  const std::int32_t* cols = nullptr;  // this head's sorted kept columns
  const std::uint32_t* bitmap = nullptr;
  int count = 0;                       // number of kept columns (sparse)
  int left_count = 0;                  // cols[0, left_count) are the left stripes
  int right_begin = 0, right_end = 0;  // cols[right_begin, right_end) are the right stripes
  int span_lo = 0, span_tiles = 0;
  int left_tiles = 0, right_tiles = 0;

  __device__ int total_tiles() const { return left_tiles + span_tiles + right_tiles; }
};

// One 64-key tile of the plan: contiguous keys [base, base + 64) or gathered columns cols[base, end).
struct TileRef {
  bool gather;
  int base;
  int end;
};

// Tile order: the band span first (its first tile needs no index list, so nothing waits before the first
// copy), from its first tile up or, with kSpanFromLast, from its last tile down; then the left stripes, then
// the right stripes.
template <int kBlockN, bool kSpanFromLast = false>
__device__ __forceinline__ TileRef tile_ref(const TilePlan<kBlockN>& pl, int t) {
  if (t < pl.span_tiles) return {false, pl.span_lo + (kSpanFromLast ? pl.span_tiles - 1 - t : t) * kBlockN, 0};
  t -= pl.span_tiles;
  if (t < pl.left_tiles) return {true, t * kBlockN, pl.left_count};
  t -= pl.left_tiles;
  return {true, pl.right_begin + t * kBlockN, pl.right_end};
}

__device__ __forceinline__ std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// What the plan reads of a sparse head: its kept-column count, band width and column offset, loaded
// together (one round trip; a kernel can issue them before other work and use them after).
struct HeadSelection {
  std::int64_t count = 0, window = 0, col_offset = 0;
};

__device__ __forceinline__ HeadSelection load_head_selection(const KernelArgs& a, std::int64_t bh) {
  HeadSelection hs;
  if (a.col_indices != nullptr) {
    hs.count = a.col_counts[bh];
    hs.window = a.window[bh];
    hs.col_offset = a.col_offsets[bh];
  }
  return hs;
}

// bh = b * Hq + h; rows [m0, m1) of the query tile; hs = load_head_selection(a, bh). Called by every thread
// (uniform result). Leaves the stripes empty: find_stripes completes the plan (the band span, whose first tile
// is the first tile of every plan, needs only the head's window and count, so that its copies can start before
// the searches).
template <int kBlockN>
__device__ __forceinline__ TilePlan<kBlockN> make_plan(const KernelArgs& a, std::int64_t bh, std::int64_t m0,
                                                       std::int64_t m1, const HeadSelection& hs) {
  TilePlan<kBlockN> pl;
  const std::int64_t offset = a.seq_k - a.seq_q;
  const std::int64_t p0 = offset + m0, p1 = offset + m1 - 1;
  pl.p0 = static_cast<int>(p0);
  pl.p1 = static_cast<int>(p1);
  const std::int64_t visible_end = a.causal ? p1 + 1 : a.seq_k;
  pl.sparse = a.col_indices != nullptr;
  if (!pl.sparse) {
    pl.span_tiles = static_cast<int>(ceil_div(visible_end, kBlockN));
    return pl;
  }
  const std::int64_t count = hs.count;
  if (count == a.seq_k) {
    // Every column kept (SampleConfig::dense_head_density, or a head whose scores need them all): the mask is
    // plain attention, so the head runs the dense plan (no index reads, masks only at the causal edge).
    pl.sparse = false;
    pl.span_tiles = static_cast<int>(ceil_div(visible_end, kBlockN));
    return pl;
  }
  const std::int64_t w = hs.window;
  pl.window = static_cast<int>(w);
  pl.tail_row = static_cast<int>(a.seq_q - a.dense_tail);  // may be negative: every row is a tail row
  pl.cols = a.col_indices + hs.col_offset;
  pl.bitmap = a.col_bitmap + bh * a.bitmap_words;
  if (m1 > a.seq_q - a.dense_tail) {
    pl.tail_mode = true;
    pl.span_tiles = static_cast<int>(ceil_div(visible_end, kBlockN));
    return pl;
  }
  const std::int64_t lo = p0 - w + 1 > 0 ? p0 - w + 1 : 0;
  std::int64_t hi = a.causal ? p1 + 1 : p1 + w;
  if (hi > a.seq_k) hi = a.seq_k;
  const std::int64_t span_lo = lo / kBlockN * kBlockN;
  const std::int64_t span_tiles = hi > span_lo ? ceil_div(hi - span_lo, kBlockN) : 0;
  pl.span_lo = static_cast<int>(span_lo);
  pl.span_tiles = static_cast<int>(span_tiles);
  pl.count = static_cast<int>(count);
  return pl;
}

// The stripes of a plan from the positions of its band span in the kept columns: cols[0, left) lie left of
// it, cols[right, count) right of it (right is read only when not causal).
template <int kBlockN>
__device__ __forceinline__ void set_stripes(TilePlan<kBlockN>& pl, const KernelArgs& a, int left, int right) {
  pl.left_count = left;
  pl.left_tiles = static_cast<int>(ceil_div(left, kBlockN));
  if (!a.causal) {
    pl.right_begin = right;
    pl.right_end = pl.count;
    pl.right_tiles = static_cast<int>(ceil_div(pl.count - right, kBlockN));
  }
}

// The kept columns left of the band span (and right of it when not causal): one warp search each, called
// after make_plan by every warp that needs them (uniform result).
template <int kBlockN>
__device__ __forceinline__ void find_stripes(TilePlan<kBlockN>& pl, const KernelArgs& a) {
  if (!pl.sparse || pl.tail_mode) return;
  const std::int64_t left = warp_count_less(pl.cols, pl.count, pl.span_lo);
  std::int64_t right = 0;
  if (!a.causal) {
    std::int64_t span_end = static_cast<std::int64_t>(pl.span_lo) + static_cast<std::int64_t>(pl.span_tiles) * kBlockN;
    if (span_end > a.seq_k) span_end = a.seq_k;
    right = warp_count_less(pl.cols, pl.count, span_end);
  }
  set_stripes(pl, a, static_cast<int>(left), static_cast<int>(right));
}

// Whether a contiguous tile starting at key n0 holds an entry some row of the query tile drops.
template <int kBlockN>
__device__ __forceinline__ bool span_tile_needs_mask(const TilePlan<kBlockN>& pl, const KernelArgs& a, int n0) {
  // int32 throughout: n0 + kBlockN, p1 - window and n0 - window stay within it (seq_k < 2^31 - 256).
  bool need = n0 + kBlockN > static_cast<int>(a.seq_k);
  if (a.causal) need = need || n0 + kBlockN - 1 > pl.p0;
  if (pl.sparse) {
    need = need || pl.tail_mode || n0 <= pl.p1 - pl.window;
    if (!a.causal) need = need || n0 + kBlockN - 1 - pl.window >= pl.p0;
  }
  return need;
}

}  // namespace sampleattn::cuda::sm80
