// Stage 2 of SampleAttention on the GPU (SPEC.md step 3, core::choose_columns): per (batch, query head) the
// shortest prefix of the columns sorted by score (descending, ties lower index first) whose sum reaches
// alpha of the total, plus the sink columns; written as ascending indices, a count, a bitmap and the head's
// statistics. One block of 512 threads per head, no sort:
//   1. total of the scores as uint64 fixed point (exact and order-independent), and a finiteness check;
//   2. radix select on the float bits (11 + 10 + 10 bits): per level a histogram of counts and fixed-point
//      sums of the candidates, and a suffix scan over the bins finds the bin where the running sum crosses
//      alpha * total; after three levels the threshold score tau is exact, and m = how many of the columns
//      equal to tau (lowest indices first) are still needed;
//   3. one ordered pass over the columns: keep s > tau, the first m with s == tau and j < sink_tokens; block
//      scans give each kept column its place; the same pass writes the bitmap and sums the kept entries
//      (core::count_entries' closed form per column) and the sampled coverage.
// Non-finite scores (NaN/Inf in q or k) make the head keep every column and report coverage NaN.
#include <cuda_runtime.h>

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "cuda/check.h"
#include "cuda/select_args.h"

namespace sampleattn::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 2048;  // first level: bits 30..20 of the (non-negative) float; then 10 + 10 bits

using u64 = unsigned long long;

__device__ __forceinline__ u64 to_fixed(float x, float scale) { return __float2ull_rz(x * scale); }

// Exclusive scan of one value per thread over the block; `total` gets the block's sum. Ends with a barrier,
// so `scratch` may be reused at once.
template <typename U>
__device__ U block_exclusive_scan(U x, U* scratch, U& total) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  U inc = x;
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    const U y = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += y;
  }
  if (lane == 31) scratch[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    U v = lane < kWarps ? scratch[lane] : U(0);
#pragma unroll
    for (int o = 1; o < 32; o *= 2) {
      const U y = __shfl_up_sync(0xffffffffu, v, o);
      if (lane >= o) v += y;
    }
    scratch[lane] = v;
  }
  __syncthreads();
  const U before = warp > 0 ? scratch[warp - 1] : U(0);
  total = scratch[kWarps - 1];
  __syncthreads();
  return before + inc - x;
}

template <typename U>
__device__ U block_sum(U x, U* scratch) {
  U total;
  block_exclusive_scan(x, scratch, total);
  return total;
}

__device__ __forceinline__ std::int64_t overlap(std::int64_t lo, std::int64_t hi, std::int64_t a, std::int64_t b) {
  const std::int64_t x = (hi < b ? hi : b) - (lo > a ? lo : a);
  return x > 0 ? x : 0;
}

__global__ void __launch_bounds__(kThreads) choose_kernel(const Stage2Args a) {
  __shared__ unsigned int bin_count[kBins];
  __shared__ u64 bin_sum[kBins];
  __shared__ u64 scratch_u64[32];
  __shared__ double scratch_f64[32];
  __shared__ std::int64_t scratch_i64[32];
  __shared__ unsigned int chosen_digit;
  __shared__ u64 chosen_above;

  const int tid = threadIdx.x;
  const std::int64_t bh = blockIdx.x;
  const std::int64_t seq_k = a.seq_k;
  const float* cs = a.colscore + bh * seq_k;
  const float* in = a.inside + bh * seq_k;

  // 1. Total (fixed point and double) and finiteness.
  u64 part = 0;
  double part_d = 0.0;
  int bad = 0;
  for (std::int64_t j = tid; j < seq_k; j += kThreads) {
    const float x = cs[j];
    if (!(x >= 0.0f && x <= FLT_MAX)) {
      bad = 1;
    } else {
      part += to_fixed(x, a.fixed_scale);
      part_d += x;
    }
  }
  bad = __syncthreads_or(bad);
  const u64 total = block_sum<u64>(part, scratch_u64);
  const double total_d = block_sum<double>(part_d, scratch_f64);

  // 2. Threshold tau (as float bits) and m, the number of columns equal to tau to keep. keep_positive:
  // alpha = 1 keeps every column with a non-zero score (core::choose_columns sums in sorted order).
  unsigned int tau = 0;
  u64 need_eq = 0;
  if (!bad && a.alpha < 1.0) {
    // min(): alpha * total rounds up past total when alpha is within 1e-16 of 1 and total > 2^53; then no
    // bin would cross the target and the choices below would be read unset.
    const u64 target = min(total, static_cast<u64>(ceil(a.alpha * static_cast<double>(total))));
    if (tid == 0) {
      chosen_digit = 0;
      chosen_above = 0;
    }
    __syncthreads();
    unsigned int prefix = 0;
    u64 above = 0;
    const int shifts[3] = {20, 10, 0};
    const int bins[3] = {2048, 1024, 1024};
    unsigned int digit = 0;
    for (int level = 0; level < 3 && target > 0; ++level) {
      const int shift = shifts[level], nb = bins[level];
      for (int d = tid; d < nb; d += kThreads) {
        bin_count[d] = 0;
        bin_sum[d] = 0;
      }
      __syncthreads();
      const int high = shift + (level == 0 ? 11 : 10);  // bits above this level's digit: the prefix
      for (std::int64_t j = tid; j < seq_k; j += kThreads) {
        const float x = cs[j];
        const unsigned int key = __float_as_uint(x);
        if ((key >> high) == (prefix >> high)) {
          // Scores cluster in few bins: lanes of a warp with the same bin add up first (three 21-bit limbs
          // of the fixed-point value, so the 32-bit warp sums cannot overflow), then one atomic per bin.
          const unsigned int d = (key >> shift) & static_cast<unsigned int>(nb - 1);
          const u64 fx = to_fixed(x, a.fixed_scale);
          const unsigned int peers = __match_any_sync(__activemask(), d);
          const unsigned int lo = __reduce_add_sync(peers, static_cast<unsigned int>(fx & 0x1fffffu));
          const unsigned int mid = __reduce_add_sync(peers, static_cast<unsigned int>((fx >> 21) & 0x1fffffu));
          const unsigned int hi = __reduce_add_sync(peers, static_cast<unsigned int>(fx >> 42));
          if ((threadIdx.x % 32) == static_cast<unsigned int>(__ffs(peers) - 1)) {
            atomicAdd(&bin_count[d], static_cast<unsigned int>(__popc(peers)));
            atomicAdd(&bin_sum[d], static_cast<u64>(lo) + (static_cast<u64>(mid) << 21) + (static_cast<u64>(hi) << 42));
          }
        }
      }
      __syncthreads();
      // Bins in descending order (nb / kThreads per thread): the exclusive scan gives the sum above a bin.
      const int per = nb / kThreads;
      u64 local = 0;
      for (int r = 0; r < per; ++r) local += bin_sum[nb - 1 - (tid * per + r)];
      u64 level_total;
      u64 run = block_exclusive_scan<u64>(local, scratch_u64, level_total) + above;
      for (int r = 0; r < per; ++r) {
        const int d = nb - 1 - (tid * per + r);
        const u64 next = run + bin_sum[d];
        if (run < target && next >= target) {
          chosen_digit = static_cast<unsigned int>(d);
          chosen_above = run;
        }
        run = next;
      }
      __syncthreads();
      digit = chosen_digit;
      above = chosen_above;
      prefix |= digit << shift;
      __syncthreads();
    }
    if (target > 0) {
      tau = prefix;
      const u64 fx_tau = to_fixed(__uint_as_float(tau), a.fixed_scale);
      const u64 equal = bin_count[digit];
      const u64 need = target - above;
      need_eq = fx_tau > 0 ? (need + fx_tau - 1) / fx_tau : equal;
      if (need_eq > equal) need_eq = equal;
      if (tau == 0) need_eq = 0;  // zero scores are never chosen
    }
  }

  // 3. Ordered pass: thread t owns columns [base + 32 t, base + 32 t + 32), one bitmap word.
  const std::int64_t body = a.seq_q - a.dense_tail;
  const std::int64_t p_lo = seq_k - a.seq_q, p_hi = p_lo + body, w = a.window_size;
  u64 eq_carry = 0, keep_carry = 0;
  std::int64_t entries = 0;
  double kept_mass = 0.0;
  std::int32_t* out_idx = a.indices + bh * seq_k;
  for (std::int64_t base = 0; base < seq_k; base += 32LL * kThreads) {
    const std::int64_t j_begin = base + 32LL * tid;
    unsigned int eq_bits = 0, gt_bits = 0, valid_bits = 0;
    for (int e = 0; e < 32; ++e) {
      const std::int64_t j = j_begin + e;
      if (j < seq_k) {
        const unsigned int key = __float_as_uint(cs[j]);
        valid_bits |= 1u << e;
        if (key == tau) eq_bits |= 1u << e;
        if (key > tau && key <= 0x7f7fffffu) gt_bits |= 1u << e;
      }
    }
    u64 eq_total;
    const u64 eq_before = block_exclusive_scan<u64>(__popc(eq_bits), scratch_u64, eq_total) + eq_carry;
    unsigned int keep = gt_bits;
    u64 rank = eq_before;
    for (int e = 0; e < 32; ++e) {
      if (eq_bits & (1u << e)) {
        if (rank < need_eq) keep |= 1u << e;
        ++rank;
      }
      if (j_begin + e < a.sink_tokens) keep |= 1u << e;
    }
    if (bad) keep = valid_bits;
    keep &= valid_bits;
    u64 keep_total;
    u64 slot = block_exclusive_scan<u64>(__popc(keep), scratch_u64, keep_total) + keep_carry;
    for (int e = 0; e < 32; ++e) {
      const std::int64_t j = j_begin + e;
      if (!(valid_bits & (1u << e))) break;
      if (keep & (1u << e)) {
        out_idx[slot++] = static_cast<std::int32_t>(j);
        kept_mass += cs[j];
        if (body > 0)
          entries += a.causal ? overlap(p_lo, p_hi, j + w, p_hi) : body - overlap(p_lo, p_hi, j - w + 1, j + w);
      } else {
        kept_mass += in[j];
      }
    }
    if (j_begin < seq_k) a.bitmap[bh * a.bitmap_words + j_begin / 32] = keep;
    eq_carry += eq_total;
    keep_carry += keep_total;
  }
  entries = block_sum<std::int64_t>(entries, scratch_i64);
  kept_mass = block_sum<double>(kept_mass, scratch_f64);
  if (tid == 0) {
    a.counts[bh] = static_cast<std::int32_t>(keep_carry);
    a.window[bh] = static_cast<std::int32_t>(w);
    a.offsets[bh] = bh * seq_k;
    if (bh == a.heads_total - 1) a.offsets[a.heads_total] = a.heads_total * seq_k;
    DeviceHeadStats s;
    s.kept_columns = static_cast<std::int64_t>(keep_carry);
    s.kept_entries = a.base_entries + entries;
    s.sampled_coverage = bad ? __longlong_as_double(0x7ff8000000000000LL) : (total_d > 0.0 ? kept_mass / total_d : 1.0);
    a.stats[bh] = s;
  }
}

}  // namespace

void launch_stage2(const Stage2Args& a, void* stream) {
  choose_kernel<<<static_cast<unsigned>(a.heads_total), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(a);
  check_launch("stage 2 (column choice)");
}

}  // namespace sampleattn::cuda
