// Stage 2 of SampleAttention on the GPU (SPEC.md step 3, core::choose_columns): per (batch, query head) the
// shortest prefix of the columns sorted by score (descending, ties lower index first) whose sum reaches
// alpha of the total, plus the sink columns; written as ascending indices, a count, a bitmap and the head's
// statistics. No sort. Each head's columns are split into chunks of Stage2Args::chunk columns, one 256-thread
// block per chunk (stage2_chunk: ~512 blocks in all, so every SM works), and five kernels (six when
// dense_head_density < 1) run in order on the stream after a kernel that zeroes the per-head scratch
// (Stage2Head); all of them as dependent launches of the kernel before (pdl.cuh):
//   1. level 0: the total of the scores as uint64 fixed point (exact and order-independent: per-block sums
//      meet in global atomics), a finiteness check, and the histogram of float bits 30..20 (fixed-point sum
//      per bin; block histograms in shared memory, added into the head's with global atomics);
//   2. level 1 (bits 19..10) and 3. level 2 (bits 9..0, also the count per bin): histograms of the columns
//      matching the prefix chosen so far. The last block of a head to finish each level (arrival counter,
//      no grid-wide wait: nothing spins, so any number of blocks may be resident) scans the head's bins in
//      descending order and picks the bin where the running sum crosses alpha * total; after level 2 the
//      threshold score tau is exact, and m = how many of the columns equal to tau (lowest indices first) are
//      still needed;
//   4. counts per chunk: columns equal to tau, kept whatever their tie rank (above tau, sinks), equal sinks;
//      the head's last block turns them into each chunk's first tie rank and first output slot (two scans
//      over the chunks in order) and writes the head's count;
//   5. the ordered pass: a warp takes 8 consecutive 32-column words (ballots give each word's masks), block
//      prefix sums over warps give each kept column its tie rank and output slot; the same pass writes the
//      bitmap and sums the kept entries (core::count_entries' closed form per column) and the sampled
//      coverage, which the head's last block adds up over the chunks in chunk order (deterministic);
//   6. a head whose mask keeps at least dense_entries of its entries (SampleConfig::dense_head_density) is
//      rewritten to keep every column (indices, bitmap, count, statistics); other heads return at once.
// Non-finite (or negative) scores make the head keep every column and report coverage NaN.
// Bench results and versions: bench/NOTES.md.
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "cuda/check.h"
#include "cuda/pdl.cuh"
#include "cuda/select_args.h"

namespace sampleattn::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kBatch = 8;                        // columns per thread loaded before any is used
constexpr int kWordsPerWarp = 8;                 // ordered pass: 32-column words per warp and tile
constexpr int kTile = kThreads * kWordsPerWarp;  // 2048 columns per ordered-pass tile
constexpr unsigned kFull = 0xffffffffu;
constexpr unsigned kMaxFinite = 0x7f7fffffu;  // bits of FLT_MAX: keys above are Inf or NaN

using u64 = unsigned long long;
using i64 = long long;

// One radix level: the digit is (key >> shift) & (bins - 1); candidates match the prefix in bits >= high.
struct Level {
  int shift, bins, offset, high;
};

__host__ __device__ constexpr Level level_of(int l) {
  return l == 0 ? Level{20, 2048, 0, 31} : l == 1 ? Level{10, 1024, 2048, 20} : Level{0, 1024, 3072, 10};
}

// Columns [begin, end) of head bh: block b of the head's blocks_per_head.
struct Chunk {
  std::int64_t bh, b, begin, end;
};

__device__ Chunk chunk_of(const Stage2Args& a) {
  Chunk c;
  c.bh = blockIdx.x / a.blocks_per_head;
  c.b = blockIdx.x % a.blocks_per_head;
  c.begin = c.b * a.chunk;
  c.end = min(c.begin + a.chunk, a.seq_k);
  return c;
}

__device__ __forceinline__ u64 to_fixed(float x, float scale) { return __float2ull_rz(x * scale); }
__device__ __forceinline__ u64* as_u64(std::uint64_t* p) { return reinterpret_cast<u64*>(p); }
__device__ __forceinline__ u64 load_l2(const std::uint64_t* p) { return __ldcg(reinterpret_cast<const u64*>(p)); }

// Sum over the block, the same in every thread: a fixed shuffle tree, then the warps in order (deterministic
// for doubles). Ends with a barrier, so `scratch` may be reused at once.
template <typename T>
__device__ T block_sum(T x, T* scratch) {
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(kFull, x, o);
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = x;
  __syncthreads();
  T total = 0;
  for (int w = 0; w < kWarps; ++w) total += scratch[w];
  __syncthreads();
  return total;
}

// x is one value per warp (the same in all its lanes): returns the sum over the earlier warps, `total` the
// sum over all. Ends with a barrier.
template <typename T>
__device__ T warp_prefix(T x, T* scratch, T& total) {
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) scratch[warp] = x;
  __syncthreads();
  T before = 0, all = 0;
  for (int w = 0; w < kWarps; ++w) {
    const T s = scratch[w];
    if (w < warp) before += s;
    all += s;
  }
  total = all;
  __syncthreads();
  return before;
}

// Exclusive scan of one value per thread in thread order; `total` gets the block's sum. Ends with a barrier.
template <typename T>
__device__ T block_exclusive_scan(T x, T* scratch, T& total) {
  const int lane = threadIdx.x % 32;
  T inc = x;
  for (int o = 1; o < 32; o *= 2) {
    const T y = __shfl_up_sync(kFull, inc, o);
    if (lane >= o) inc += y;
  }
  return warp_prefix(__shfl_sync(kFull, inc, 31), scratch, total) + inc - x;
}

// True in the whole block when it is the last of its head's blocks to arrive at `arrivals`. Every thread
// fences its global writes (atomics included) before the count, so the last block sees all of them; it
// reads them through L2 (ld.global.cg).
__device__ bool last_block_of_head(std::uint32_t* arrivals, std::int64_t blocks) {
  __shared__ int last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(arrivals, 1u) == static_cast<std::uint32_t>(blocks - 1);
  __syncthreads();
  const bool is_last = last != 0;
  if (is_last) __threadfence();
  return is_last;
}

// Calls f(j, valid, x) for the chunk's columns, thread t taking j = begin + t + kThreads * i, kBatch loads
// in flight. Every lane of a warp calls f equally often (past the end with valid = false, x = 0), so f may
// use warp collectives.
template <typename F>
__device__ void for_each_column(const float* __restrict__ s, std::int64_t begin, std::int64_t end, F f) {
  for (std::int64_t base = begin; base < end; base += kThreads * kBatch) {
    float x[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const std::int64_t j = base + u * kThreads + threadIdx.x;
      x[u] = j < end ? __ldg(s + j) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const std::int64_t j = base + u * kThreads + threadIdx.x;
      f(j, j < end, x[u]);
    }
  }
}

// Adds v (the fixed-point sum of n columns) to bin d of a block histogram kept as two 32-bit words per bin
// (native shared atomics; a 64-bit shared atomic add is a compare-and-swap loop): the carry out of the low
// word goes into the high one, so the sum stays exact. Counts only where kCount (level 2).
template <bool kCount>
__device__ __forceinline__ void add_to_bin(unsigned d, u64 v, unsigned n, unsigned* count, unsigned* sum_lo,
                                           unsigned* sum_hi) {
  if (kCount) atomicAdd(&count[d], n);
  const unsigned lo = static_cast<unsigned>(v);
  const unsigned old = atomicAdd(&sum_lo[d], lo);
  const unsigned hi = static_cast<unsigned>(v >> 32) + (old + lo < old ? 1u : 0u);
  if (hi != 0) atomicAdd(&sum_hi[d], hi);
}

// Adds a candidate column to the block's histogram; called by every lane of the warp. A warp whose columns
// all fall in one bin (flat score profiles: 32 lanes would serialise on one address) adds up first, in three
// 21-bit limbs of the fixed-point value so that the 32-bit lane sums cannot overflow.
template <bool kCount>
__device__ __forceinline__ void histogram_add(bool candidate, unsigned d, u64 fx, unsigned* count, unsigned* sum_lo,
                                              unsigned* sum_hi) {
  const unsigned d0 = __shfl_sync(kFull, d, 0);
  if (__all_sync(kFull, candidate && d == d0)) {
    const unsigned lo = __reduce_add_sync(kFull, static_cast<unsigned>(fx & 0x1fffffu));
    const unsigned mid = __reduce_add_sync(kFull, static_cast<unsigned>((fx >> 21) & 0x1fffffu));
    const unsigned hi = __reduce_add_sync(kFull, static_cast<unsigned>(fx >> 42));
    if (threadIdx.x % 32 == 0)
      add_to_bin<kCount>(d, static_cast<u64>(lo) + (static_cast<u64>(mid) << 21) + (static_cast<u64>(hi) << 42), 32,
                         count, sum_lo, sum_hi);
  } else if (candidate) {
    add_to_bin<kCount>(d, fx, 1, count, sum_lo, sum_hi);
  }
}

// Last block of level L: the head's bins in descending order, bins / kThreads consecutive ones per thread;
// the exclusive scan of their sums plus `above` is the running sum above each bin, and the bin where it
// reaches `target` is the level's digit. Updates prefix and above in every thread.
template <int L>
__device__ void choose_digit(const Stage2Head& st, u64 target, unsigned& prefix, u64& above, u64* scratch) {
  constexpr Level lv = level_of(L);
  constexpr int per = lv.bins / kThreads;
  __shared__ unsigned chosen_digit;
  __shared__ u64 chosen_above;
  if (threadIdx.x == 0) {
    chosen_digit = 0;
    chosen_above = above;
  }
  u64 s[per];
  u64 local = 0;
#pragma unroll
  for (int r = 0; r < per; ++r) {
    s[r] = load_l2(&st.bin_sum[lv.offset + lv.bins - 1 - (threadIdx.x * per + r)]);
    local += s[r];
  }
  u64 level_total;
  u64 run = block_exclusive_scan<u64>(local, scratch, level_total) + above;  // its barriers order the init
#pragma unroll
  for (int r = 0; r < per; ++r) {
    const u64 next = run + s[r];
    if (run < target && next >= target) {
      chosen_digit = static_cast<unsigned>(lv.bins - 1 - (threadIdx.x * per + r));
      chosen_above = run;
    }
    run = next;
  }
  __syncthreads();
  prefix |= chosen_digit << lv.shift;
  above = chosen_above;
}

// The per-head scratch to zero (it replaces a memset node, which would end the chain of dependent launches),
// and the workspace's stamp (selection_from_workspace checks it).
__global__ void __launch_bounds__(kThreads) zero_heads_kernel(const Stage2Args a) {
  static_assert(sizeof(Stage2Head) % sizeof(u64) == 0, "Stage2Head is zeroed in 8-byte words");
  pdl_wait();  // the previous kernel may still read the heads' scratch (pdl.cuh)
  pdl_trigger();
  if (blockIdx.x == 0 && threadIdx.x == 0 && a.stamp != nullptr) *a.stamp = a.stamp_value;
  u64* words = reinterpret_cast<u64*>(a.heads);
  const std::int64_t total = a.heads_total * static_cast<std::int64_t>(sizeof(Stage2Head) / sizeof(u64));
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * kThreads)
    words[i] = 0;
}

// Kernels 1-3: level L's histogram over the chunk (level 0 also the totals and the finiteness check); the
// head's last block chooses the level's digit. Levels 1 and 2 do nothing for heads that keep columns by
// another rule (non-finite scores, alpha = 1, zero target).
template <int L>
__global__ void __launch_bounds__(kThreads) histogram_kernel(const Stage2Args a) {
  constexpr Level lv = level_of(L);
  constexpr bool kCount = L == 2;
  __shared__ unsigned bin_count[kCount ? lv.bins : 1];
  __shared__ unsigned bin_lo[lv.bins], bin_hi[lv.bins];
  __shared__ u64 scratch_u[kWarps];
  __shared__ double scratch_d[kWarps];
  pdl_wait();  // pdl.cuh
  pdl_trigger();
  const Chunk c = chunk_of(a);
  Stage2Head& st = a.heads[c.bh];
  if (L > 0 && st.run == 0) return;
  const unsigned prefix = L > 0 ? st.prefix : 0u;
  for (int d = threadIdx.x; d < lv.bins; d += kThreads) {
    if (kCount) bin_count[d] = 0;
    bin_lo[d] = 0;
    bin_hi[d] = 0;
  }
  __syncthreads();
  u64 part = 0;
  double part_d = 0.0;
  int bad = 0;
  for_each_column(a.colscore + c.bh * a.seq_k, c.begin, c.end, [&](std::int64_t, bool valid, float x) {
    const unsigned key = __float_as_uint(x);
    const u64 fx = to_fixed(x, a.fixed_scale);
    if (L == 0 && valid) {
      if (!(x >= 0.0f && x <= FLT_MAX)) {
        bad = 1;
      } else {
        part += fx;
        part_d += x;
      }
    }
    histogram_add<kCount>(valid && (key >> lv.high) == (prefix >> lv.high), (key >> lv.shift) & (lv.bins - 1), fx,
                          bin_count, bin_lo, bin_hi);
  });
  __syncthreads();
  for (int d = threadIdx.x; d < lv.bins; d += kThreads) {
    const u64 sum = (static_cast<u64>(bin_hi[d]) << 32) | bin_lo[d];
    if (sum != 0) atomicAdd(as_u64(&st.bin_sum[lv.offset + d]), sum);
    if (kCount && bin_count[d] != 0) atomicAdd(&st.level2_count[d], bin_count[d]);
  }
  if (L == 0) {
    bad = __syncthreads_or(bad);
    part = block_sum<u64>(part, scratch_u);
    part_d = block_sum<double>(part_d, scratch_d);
    if (threadIdx.x == 0) {
      atomicAdd(as_u64(&st.total), part);
      if (bad) atomicOr(&st.bad, 1u);
      a.blocks[c.bh * a.blocks_per_head + c.b].total_d = part_d;
    }
  }
  if (!last_block_of_head(&st.arrivals[L], a.blocks_per_head)) return;

  u64 target, above;
  unsigned chosen = 0;
  bool run = true;
  if (L == 0) {
    const u64 total = load_l2(&st.total);
    const bool head_bad = __ldcg(&st.bad) != 0;
    double total_d = 0.0;
    for (std::int64_t b = threadIdx.x; b < a.blocks_per_head; b += kThreads)
      total_d += __ldcg(&a.blocks[c.bh * a.blocks_per_head + b].total_d);
    total_d = block_sum<double>(total_d, scratch_d);
    // min(): alpha * total rounds up past total when alpha is within 1e-16 of 1 and total > 2^53; then no
    // bin would cross the target. alpha = 1 keeps every column with a non-zero score (as core::choose_columns
    // does): tau = 0, as for a zero target.
    target = min(total, static_cast<u64>(ceil(a.alpha * static_cast<double>(total))));
    run = !head_bad && a.alpha < 1.0 && target > 0;
    above = 0;
    if (threadIdx.x == 0) {
      st.target = target;
      st.total_d = total_d;
      st.run = run ? 1u : 0u;
      st.need_eq = 0;
    }
  } else {
    target = st.target;
    above = st.above;
    chosen = st.prefix;
  }
  if (run) choose_digit<L>(st, target, chosen, above, scratch_u);
  if (threadIdx.x == 0) {
    st.prefix = chosen;
    st.above = above;
    if (L == 2) {
      // m: the columns equal to tau (each adds fx_tau) needed after the sum above tau; zero scores are never
      // chosen.
      const u64 fx_tau = to_fixed(__uint_as_float(chosen), a.fixed_scale);
      const u64 equal = __ldcg(&st.level2_count[chosen & (lv.bins - 1)]);
      const u64 need = target - above;
      u64 need_eq = fx_tau > 0 ? (need + fx_tau - 1) / fx_tau : equal;
      if (need_eq > equal) need_eq = equal;
      if (chosen == 0) need_eq = 0;
      st.need_eq = need_eq;
    }
  }
}

// Kernel 4: per chunk the columns equal to tau, those kept whatever their tie rank (above tau, sinks; every
// column when the head is not finite) and the equal sinks. The head's last block turns them into each
// chunk's first tie rank and first output slot, in chunk order.
__global__ void __launch_bounds__(kThreads) count_kernel(const Stage2Args a) {
  __shared__ u64 scratch[kWarps];
  pdl_wait();  // pdl.cuh
  pdl_trigger();
  const Chunk c = chunk_of(a);
  Stage2Head& st = a.heads[c.bh];
  const unsigned tau = st.prefix;
  const bool bad = st.bad != 0;
  u64 eq = 0, keep_base = 0, eq_sink = 0;
  if (!bad) {
    for_each_column(a.colscore + c.bh * a.seq_k, c.begin, c.end, [&](std::int64_t j, bool valid, float x) {
      const unsigned key = __float_as_uint(x);
      const bool sink = j < a.sink_tokens;
      const bool equal = valid && key == tau;
      eq += equal;
      eq_sink += equal && sink;
      keep_base += valid && ((key > tau && key <= kMaxFinite) || sink);
    });
  }
  eq = block_sum<u64>(eq, scratch);
  eq_sink = block_sum<u64>(eq_sink, scratch);
  keep_base = block_sum<u64>(keep_base, scratch);
  if (bad) keep_base = static_cast<u64>(c.end - c.begin);
  Stage2Block* blocks = a.blocks + c.bh * a.blocks_per_head;
  if (threadIdx.x == 0) {
    blocks[c.b].eq = eq;
    blocks[c.b].keep_base = keep_base;
    blocks[c.b].eq_sink = eq_sink;
  }
  if (!last_block_of_head(&st.arrivals[3], a.blocks_per_head)) return;

  const u64 need_eq = st.need_eq;
  u64 eq_carry = 0, kept_carry = 0;
  for (std::int64_t r = 0; r < a.blocks_per_head; r += kThreads) {
    const std::int64_t b = r + threadIdx.x;
    const bool here = b < a.blocks_per_head;
    const u64 e = here ? load_l2(&blocks[b].eq) : 0;
    const u64 base = here ? load_l2(&blocks[b].keep_base) : 0;
    const u64 es = here ? load_l2(&blocks[b].eq_sink) : 0;
    u64 e_total, k_total;
    const u64 eq_before = block_exclusive_scan<u64>(e, scratch, e_total) + eq_carry;
    // The chunk's first `take` equal columns have tie ranks below m; its equal sinks (lowest indices) come
    // first among them and are already in keep_base.
    const u64 take = need_eq > eq_before ? min(e, need_eq - eq_before) : 0;
    const u64 kept = base + take - min(take, es);
    const u64 kept_before = block_exclusive_scan<u64>(kept, scratch, k_total) + kept_carry;
    if (here) {
      blocks[b].eq_before = eq_before;
      blocks[b].kept_before = kept_before;
    }
    eq_carry += e_total;
    kept_carry += k_total;
  }
  if (threadIdx.x == 0) {
    st.kept = static_cast<std::uint32_t>(kept_carry);
    a.counts[c.bh] = static_cast<std::int32_t>(kept_carry);
    a.window[c.bh] = static_cast<std::int32_t>(a.window_size);
    a.offsets[c.bh] = c.bh * a.seq_k;
    if (c.bh == a.heads_total - 1) a.offsets[a.heads_total] = a.heads_total * a.seq_k;
  }
}

__device__ __forceinline__ std::int64_t overlap(std::int64_t lo, std::int64_t hi, std::int64_t a, std::int64_t b) {
  const std::int64_t x = (hi < b ? hi : b) - (lo > a ? lo : a);
  return x > 0 ? x : 0;
}

// Kernel 5: the ordered pass over the chunk in tiles of 2048 columns. Warp w takes the tile's words
// [8 w, 8 w + 8); lane l holds column 32 i + l of word i. Keeps s > tau, the equal columns of tie rank < m,
// the sinks; writes indices, bitmap words and the chunk's entries and coverage sums; the head's last block
// writes its statistics. Three blocks per SM: 79 registers, no spills (four would spill).
__global__ void __launch_bounds__(kThreads, 3) write_kernel(const Stage2Args a) {
  __shared__ u64 scratch_u[kWarps];
  __shared__ i64 scratch_i[kWarps];
  __shared__ double scratch_d[kWarps];
  pdl_wait();  // pdl.cuh
  pdl_trigger();
  const Chunk c = chunk_of(a);
  Stage2Head& st = a.heads[c.bh];
  const unsigned tau = st.prefix;
  const u64 need_eq = st.need_eq;
  const bool bad = st.bad != 0;
  Stage2Block* blocks = a.blocks + c.bh * a.blocks_per_head;
  u64 eq_carry = blocks[c.b].eq_before, keep_carry = blocks[c.b].kept_before;
  const float* cs = a.colscore + c.bh * a.seq_k;
  const float* in = a.inside + c.bh * a.seq_k;
  std::int32_t* out = a.indices + c.bh * a.seq_k;
  std::uint32_t* bitmap = a.bitmap + c.bh * a.bitmap_words;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const unsigned below = (1u << lane) - 1u;  // lanes before this one
  const std::int64_t body = a.seq_q - a.dense_tail;
  const std::int64_t p_lo = a.seq_k - a.seq_q, p_hi = p_lo + body, w = a.window_size;
  i64 entries = 0;
  double kept_mass = 0.0;
  for (std::int64_t tile = c.begin; tile < c.end; tile += kTile) {
    const std::int64_t first = tile + static_cast<std::int64_t>(warp) * kWordsPerWarp * 32;
    float x[kWordsPerWarp];
#pragma unroll
    for (int u = 0; u < kWordsPerWarp; ++u) {
      const std::int64_t j = first + u * 32 + lane;
      x[u] = j < c.end ? __ldg(cs + j) : 0.0f;
    }
    unsigned eq_mask[kWordsPerWarp], keep_mask[kWordsPerWarp];
    unsigned above = 0;  // bit u: this lane's column of word u scores above tau
    u64 warp_eq = 0;
#pragma unroll
    for (int u = 0; u < kWordsPerWarp; ++u) {
      const bool valid = first + u * 32 + lane < c.end;
      const unsigned key = __float_as_uint(x[u]);
      eq_mask[u] = __ballot_sync(kFull, valid && key == tau);
      if (valid && key > tau && key <= kMaxFinite) above |= 1u << u;
      warp_eq += __popc(eq_mask[u]);
    }
    u64 eq_total;
    u64 rank = warp_prefix<u64>(warp_eq, scratch_u, eq_total) + eq_carry;  // tie rank of the warp's first
    u64 warp_keep = 0;
#pragma unroll
    for (int u = 0; u < kWordsPerWarp; ++u) {
      const std::int64_t j = first + u * 32 + lane;
      const bool valid = j < c.end;
      const bool eq = (eq_mask[u] >> lane) & 1u, gt = (above >> u) & 1u;
      const bool keep =
          bad ? valid : valid && (gt || (eq && rank + __popc(eq_mask[u] & below) < need_eq) || j < a.sink_tokens);
      keep_mask[u] = __ballot_sync(kFull, keep);
      rank += __popc(eq_mask[u]);
      warp_keep += __popc(keep_mask[u]);
    }
    u64 keep_total;
    u64 slot = warp_prefix<u64>(warp_keep, scratch_u, keep_total) + keep_carry;  // the warp's first slot
#pragma unroll
    for (int u = 0; u < kWordsPerWarp; ++u) {
      const std::int64_t j = first + u * 32 + lane;
      if ((keep_mask[u] >> lane) & 1u) {
        out[slot + __popc(keep_mask[u] & below)] = static_cast<std::int32_t>(j);
        kept_mass += x[u];
        if (body > 0)
          entries += a.causal ? overlap(p_lo, p_hi, j + w, p_hi) : body - overlap(p_lo, p_hi, j - w + 1, j + w);
      } else if (j < c.end) {
        kept_mass += __ldg(in + j);
      }
      slot += __popc(keep_mask[u]);
      if (lane == 0 && first + u * 32 < c.end) bitmap[(first + u * 32) / 32] = keep_mask[u];
    }
    eq_carry += eq_total;
    keep_carry += keep_total;
  }
  entries = block_sum<i64>(entries, scratch_i);
  kept_mass = block_sum<double>(kept_mass, scratch_d);
  if (threadIdx.x == 0) {
    blocks[c.b].entries = entries;
    blocks[c.b].kept_mass = kept_mass;
  }
  if (!last_block_of_head(&st.arrivals[4], a.blocks_per_head)) return;

  i64 all_entries = 0;
  double all_mass = 0.0;
  for (std::int64_t b = threadIdx.x; b < a.blocks_per_head; b += kThreads) {
    all_entries += __ldcg(reinterpret_cast<const i64*>(&blocks[b].entries));
    all_mass += __ldcg(&blocks[b].kept_mass);
  }
  all_entries = block_sum<i64>(all_entries, scratch_i);
  all_mass = block_sum<double>(all_mass, scratch_d);
  if (threadIdx.x == 0) {
    const double total_d = st.total_d;
    DeviceHeadStats s;
    s.kept_columns = st.kept;
    s.kept_entries = a.base_entries + all_entries;
    s.sampled_coverage = bad ? __longlong_as_double(0x7ff8000000000000LL) : (total_d > 0.0 ? all_mass / total_d : 1.0);
    a.stats[c.bh] = s;
    st.dense = !bad && static_cast<std::int64_t>(st.kept) < a.seq_k && s.kept_entries >= a.dense_entries ? 1u : 0u;
  }
}

// Kernel 6: the heads marked dense by kernel 5 keep every column: the chunk's indices and bitmap words (the
// chunk is a multiple of 32 columns, so each word has one writer), and block 0 the count and statistics
// (every visible entry, the whole sampled mass).
__global__ void __launch_bounds__(kThreads) dense_head_kernel(const Stage2Args a) {
  pdl_wait();  // pdl.cuh
  pdl_trigger();
  const Chunk c = chunk_of(a);
  if (a.heads[c.bh].dense == 0) return;
  std::int32_t* out = a.indices + c.bh * a.seq_k;
  for (std::int64_t j = c.begin + threadIdx.x; j < c.end; j += kThreads) out[j] = static_cast<std::int32_t>(j);
  std::uint32_t* bitmap = a.bitmap + c.bh * a.bitmap_words;
  for (std::int64_t w = c.begin / 32 + threadIdx.x; w * 32 < c.end; w += kThreads) {
    const std::int64_t bits = c.end - w * 32;
    bitmap[w] = bits >= 32 ? kFull : (1u << bits) - 1u;
  }
  if (c.b == 0 && threadIdx.x == 0) {
    a.counts[c.bh] = static_cast<std::int32_t>(a.seq_k);
    DeviceHeadStats s = a.stats[c.bh];
    s.kept_columns = a.seq_k;
    s.kept_entries = a.visible_entries;
    s.sampled_coverage = 1.0;
    a.stats[c.bh] = s;
  }
}

}  // namespace

std::int64_t stage2_chunk(std::int64_t heads, std::int64_t seq_k) {
  const std::int64_t per_block = (heads * seq_k + 511) / 512;
  return std::max<std::int64_t>((per_block + kTile - 1) / kTile * kTile, kTile);
}

void launch_stage2(const Stage2Args& a, void* stream) {
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const unsigned grid = static_cast<unsigned>(a.heads_total * a.blocks_per_head);
  const bool pdl = pdl_allowed();
  launch(zero_heads_kernel, grid, kThreads, 0, s, pdl, "stage 2 scratch", a);
  launch(histogram_kernel<0>, grid, kThreads, 0, s, pdl, "stage 2 level 0 (totals, histogram)", a);
  launch(histogram_kernel<1>, grid, kThreads, 0, s, pdl, "stage 2 level 1 (histogram)", a);
  launch(histogram_kernel<2>, grid, kThreads, 0, s, pdl, "stage 2 level 2 (histogram)", a);
  launch(count_kernel, grid, kThreads, 0, s, pdl, "stage 2 counts per chunk", a);
  launch(write_kernel, grid, kThreads, 0, s, pdl, "stage 2 ordered pass", a);
  if (a.dense_entries <= a.visible_entries)
    launch(dense_head_kernel, grid, kThreads, 0, s, pdl, "stage 2 dense heads", a);
}

}  // namespace sampleattn::cuda
