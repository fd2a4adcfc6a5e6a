// Plain parameter structs of the selection kernels (stage 1: select_stage1*.cu, stage 2: select_stage2.cu),
// built on the host by workspace.cpp from a validated Problem and SampleConfig. No CUDA types.
#pragma once

#include <cstdint>

#include "cuda/select_pass1_order.h"
#include "sampleattn/tensor.h"

namespace sampleattn::cuda {

// Per-head statistics as stage 2 leaves them on the device (copied to HeadStats on request).
struct DeviceHeadStats {
  std::int64_t kept_columns;
  std::int64_t kept_entries;  // band + stripes + dense tail, each entry once (core::count_entries)
  double sampled_coverage;    // NaN when the head's column scores were not finite (fallback: every column)
};

// Stage 1: sampled-row log-sum-exp (pass 1), then column scores (pass 2).
struct Stage1Args {
  const void* q = nullptr;                    // [B, Sq, Hq, d], head_dim contiguous
  const void* k = nullptr;                    // [B, Sk, Hkv, d], head_dim contiguous
  std::int64_t q_stride[3]{}, k_stride[3]{};  // batch, seq, head strides in elements
  std::int64_t batch = 0, seq_q = 0, seq_k = 0, q_heads = 0, kv_heads = 0, group = 1;
  std::int64_t num_sampled = 0;  // n: sampled row i is t_i = floor((i + 1) * Sq / n) - 1
  double inv_sampled = 1.0;      // 1.0 / n
  std::int64_t window = 1;       // w (core::window_size)
  std::int64_t dense_tail = 0;   // clipped to Sq
  float scale_log2 = 1.0f;       // softmax scale * log2(e): scores are handled in base 2
  bool causal = true;
  bool aligned = true;            // q and k rows start on 16-byte boundaries (cp.async); else plain loads
  // Pass 1 splits each row's keys into chunks of this many (a multiple of 128: the sm_90a pass 1 tile).
  std::int64_t key_chunk = 4096;
  std::int64_t num_chunks = 1;    // ceil(Sk / key_chunk)
  sel::Pass1Order pass1_order;    // the sm_90a pass 1 block order (launch_stage1 fills it)
  float* part_m = nullptr;        // [num_chunks, B * Hq, n]: pass 1 reference (log2 units) per key chunk, at
                                  // most the chunk's max (sm_90a pass 1 exponentiates lazily; any works)
  float* part_l = nullptr;        // [num_chunks, B * Hq, n]: pass 1 partial sum of 2^(s - part_m), < 2^51
  std::int64_t head_dim = 0;        // launch_stage1 sets it (its head_dim argument)
  std::int64_t sampled_stride = 0;  // rows per head of lse2 and qs_image: launch_stage1 sets sampled_stride(n)
  float* lse2 = nullptr;            // [B * Hq, sampled_stride]: log2-sum-exp2 of each sampled row (combined, read by
                                    // pass 2); +inf in the rows past n
  // [B * Hq, ceil(head_dim / 64), sampled_stride, 64]: the sampled query rows as the sm_90a pass 2 reads them, in
  // 64-column blocks with 128-byte rows, 16-byte chunk c of row i at chunk c ^ (i % 8) (the tiles' swizzle), zeros past
  // n; columns from head_dim on (head_dim 96) are not written (the products never read them). The combine kernel writes
  // it (and qs_pos) where it is set: run_selection sets it, launch_stage1 clears it for the sm_80 kernels.
  void* qs_image = nullptr;
  std::int32_t* qs_pos = nullptr;  // [sampled_stride]: key position Sk - Sq + t_i of sampled row i, -1 past n
  float* colscore = nullptr;       // [B * Hq, Sk]: sum over sampled rows of P[row, j]
  float* inside = nullptr;         // [B * Hq, Sk]: the part of colscore inside the rows' bands or dense tail
};

// Stage 2 scratch of one head, zeroed (zero_heads_kernel) before the stage-2 kernels run: histograms the
// head's blocks add into with atomics, the running state of the radix select that the last block of each
// kernel writes for the next, and one arrival counter per kernel. Bins: level 0 at [0, 2048) (float bits
// 30..20), level 1 at [2048, 3072) (bits 19..10), level 2 at [3072, 4096) (bits 9..0).
struct Stage2Head {
  static constexpr int kBins = 4096;
  std::uint64_t bin_sum[kBins];      // uint64 fixed-point sums of the columns in each bin
  std::uint32_t level2_count[1024];  // columns in each level-2 bin (those equal to tau: the tie count)
  std::uint64_t total;               // fixed-point sum of every column
  std::uint64_t target;              // min(total, ceil(alpha * total))
  std::uint64_t above;               // fixed-point sum of the columns above the prefix chosen so far
  std::uint64_t need_eq;             // columns equal to tau to keep (lowest indices first)
  double total_d;                    // the scores summed in double (sampled coverage)
  std::uint32_t prefix;              // float bits chosen so far; after level 2, tau
  std::uint32_t bad;                 // some score is NaN, Inf or negative: keep every column
  std::uint32_t run;                 // the radix levels run (not bad, alpha < 1, target > 0)
  std::uint32_t kept;                // kept columns of the head
  std::uint32_t dense;               // the head's mask reaches dense_entries: it keeps every column
  std::uint32_t arrivals[5];         // blocks done, per stage-2 kernel
};

// Stage 2 results of one block (one chunk of a head's columns), written before they are read.
struct Stage2Block {
  double total_d;             // sum of the chunk's scores
  std::uint64_t eq;           // columns equal to tau
  std::uint64_t keep_base;    // columns kept whatever the tie rank: above tau, or sinks
  std::uint64_t eq_sink;      // columns equal to tau that are sinks
  std::uint64_t eq_before;    // columns equal to tau in the head's earlier chunks
  std::uint64_t kept_before;  // kept columns in the head's earlier chunks (first output slot)
  std::int64_t entries;       // kept entries of the chunk's kept columns
  double kept_mass;           // sampled coverage numerator over the chunk
};

// Stage 2: per head, the columns reaching alpha, their bitmap and the head's statistics. Each head's columns
// are split into blocks_per_head chunks of `chunk` columns (a multiple of 32: each bitmap word has one owner).
struct Stage2Args {
  const float* colscore = nullptr;
  const float* inside = nullptr;
  std::int32_t* indices = nullptr;   // [B * Hq, Sk]: head bh's kept columns at bh * Sk, ascending
  std::int64_t* offsets = nullptr;   // [B * Hq + 1]: offsets[bh] = bh * Sk (fixed capacity per head)
  std::int32_t* counts = nullptr;    // [B * Hq]
  std::int32_t* window = nullptr;    // [B * Hq]
  std::uint32_t* bitmap = nullptr;   // [B * Hq, bitmap_words]
  DeviceHeadStats* stats = nullptr;  // [B * Hq]
  Stage2Head* heads = nullptr;       // [B * Hq], zeroed by launch_stage2
  Stage2Block* blocks = nullptr;     // [B * Hq, blocks]
  std::uint64_t* stamp = nullptr;    // set to stamp_value: which plan's selection the workspace holds
  std::uint64_t stamp_value = 0;
  std::int64_t heads_total = 0, seq_q = 0, seq_k = 0, window_size = 1, dense_tail = 0, sink_tokens = 0;
  std::int64_t dense_entries = 0;    // a head keeping this many entries keeps every column (dense_head_density)
  std::int64_t visible_entries = 0;  // visible entries of one head
  std::int64_t bitmap_words = 0;
  std::int64_t chunk = 2048, blocks_per_head = 1;
  std::int64_t base_entries = 0;  // entries kept whatever the columns are (band + tail), per head
  double alpha = 0.95;
  float fixed_scale = 1.0f;  // 2^F: scores are summed as uint64 fixed point (order-independent)
  bool causal = true;
};

// Rows per head of the sampled-row arrays lse2 and qs_image: n rounded up to 8, plus 64, so that a 64-row tile
// starting at any multiple of 8 below n stays inside its head.
inline std::int64_t sampled_stride(std::int64_t n) { return (n + 7) / 8 * 8 + 64; }

// Launchers (select_stage1_*.cu, select_stage2.cu): enqueue on `stream`, throw sampleattn::Error on failure.
void launch_stage1(const Stage1Args& args, DType dtype, std::int64_t head_dim, void* stream);
// Keys per pass 1 block, the workspace's partials (at most 16 per row): enough blocks to balance the causal
// triangle. Sk = 131072 -> 8192 (16 chunks), 32768 -> 4096 (8); the sm_80 kernels run with it.
std::int64_t stage1_key_chunk(std::int64_t seq_k);
// The sm_90a kernels' chunk (launch_stage1 switches to it; never shorter than stage1_key_chunk, so the
// partials fit): a quarter of the keys within [4096, 16384]. Fewer, longer blocks pay their start once for
// more tiles: pass 1 -6% to -9% at 32K-128K on the H200 (the sm_80 kernels there: +7% at 32K, hence two
// rules); a single chunk left 8K's GPU half idle. Sk = 8192 -> 4096 (2 chunks), 32768 -> 8192 (4),
// 131072 -> 16384 (8), 2^20 -> 65536 (16).
std::int64_t stage1_key_chunk_sm90(std::int64_t seq_k);
// Columns per stage 2 block: a multiple of 2048 (one ordered-pass tile of the 256-thread block), about 512
// blocks over all heads so that every SM gets a few. Example: 32 heads, Sk = 32768 -> 2048 (16 blocks per
// head); 32 heads, Sk = 131072 -> 8192 (16 per head); 1 head, Sk = 2^20 -> 2048 (512 per head).
std::int64_t stage2_chunk(std::int64_t heads, std::int64_t seq_k);
void launch_stage2(const Stage2Args& args, void* stream);

}  // namespace sampleattn::cuda
