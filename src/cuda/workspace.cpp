// Workspace plan and layout, the stage 1 / stage 2 / attention sequence on one stream, and the copy of a
// selection back to the host (workspace.h).
#include "cuda/workspace.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <vector>

#include "core/schedule.h"
#include "cuda/attention.h"
#include "cuda/check.h"
#include "sampleattn/error.h"

namespace sampleattn::cuda {
namespace {

constexpr std::size_t kAlign = 256;

void copy_strides(const TensorView& t, std::int64_t (&dst)[3]) {
  for (int i = 0; i < 3; ++i) dst[i] = t.stride[i];
}

bool rows_aligned16(const TensorView& t) {
  return reinterpret_cast<std::uintptr_t>(t.data) % 16 == 0 && t.stride[0] % 8 == 0 && t.stride[1] % 8 == 0 &&
         t.stride[2] % 8 == 0;
}

void check_device_view(const TensorView& t, const char* name) {
  SA_CHECK(t.device == Device::cuda, name, ".device is ", to_string(t.device), ", the CUDA backend needs cuda");
  SA_CHECK(t.stride[3] == 1 || t.shape[3] == 1, name, ".stride[3] (", t.stride[3],
           ") must be 1 on the CUDA backend (head_dim contiguous)");
  SA_CHECK(reinterpret_cast<std::uintptr_t>(t.data) % 2 == 0, name, ".data is not 2-byte aligned");
}

}  // namespace

// Fractional bits of the fixed-point sums in stage 2: the total of the column scores is n (each sampled row's
// probabilities sum to 1), so n * 2^F must stay well inside 64 bits. 2^-40 per column is far below the fp32
// rounding of the scores themselves.
float stage2_fixed_scale(std::int64_t n) {
  int bits = 0;
  while ((std::int64_t{1} << bits) <= n) ++bits;
  const int f = std::min(40, 61 - bits);
  return std::ldexp(1.0f, f);
}

SelectPlan make_plan(const core::Problem& p, const SampleConfig& config) {
  SA_CHECK(p.seq_k <= std::numeric_limits<std::int32_t>::max() - 256, "k.seq (", p.seq_k,
           ") must be below 2^31 - 256 on the CUDA backend (int32 column indices)");
  SA_CHECK(p.batch <= 65535 && p.kv_heads <= 65535, "batch (", p.batch, ") and k.heads (", p.kv_heads,
           ") must be <= 65535 on the CUDA backend");
  SelectPlan plan;
  plan.problem = p;
  plan.heads_total = p.batch * p.q_heads;
  plan.num_sampled = std::clamp<std::int64_t>(core::ceil_ratio(config.sample_ratio, p.seq_q), 1, p.seq_q);
  plan.window = core::window_size(config, p.seq_k);
  plan.key_chunk = stage1_key_chunk(p.seq_k);
  plan.num_chunks = (p.seq_k + plan.key_chunk - 1) / plan.key_chunk;
  plan.dense_tail = std::min(config.dense_tail, p.seq_q);
  plan.dense_tail_config = config.dense_tail;
  plan.sink_tokens = config.sink_tokens;
  plan.alpha = config.alpha;
  plan.bitmap_words = (p.seq_k + 31) / 32;
  plan.stage2_chunk = stage2_chunk(plan.heads_total, p.seq_k);
  plan.stage2_blocks = (p.seq_k + plan.stage2_chunk - 1) / plan.stage2_chunk;
  const core::EntryCount base = core::count_entries(p, plan.window, plan.dense_tail, nullptr, 0);
  plan.base_entries = base.kept;
  plan.visible_entries = base.visible;
  plan.dense_entries = core::dense_head_entries(config.dense_head_density, base.visible);
  SA_CHECK(plan.heads_total * sampled_stride(plan.num_sampled) / 32 < std::numeric_limits<std::int32_t>::max(),
           "batch * q.heads (", plan.heads_total, ") times ", sampled_stride(plan.num_sampled),
           " padded sampled rows per head exceeds the CUDA grid of the stage 1 combine kernel");
  // Stage 1's grids in x, per KV head: 128 sampled rows of the group's heads per block and key chunk (pass 1),
  // 128 keys per block (pass 2); in double, whose rounding cannot move a product across 2^31 here.
  const double group = static_cast<double>(p.q_heads / p.kv_heads), kv = static_cast<double>(p.kv_heads);
  const double pass1_blocks = std::ceil(static_cast<double>(plan.num_sampled) * group / 128.0) *
                              static_cast<double>(plan.num_chunks) * kv;
  SA_CHECK(pass1_blocks <= std::numeric_limits<std::int32_t>::max(), "q.heads (", p.q_heads, ") times ",
           plan.num_sampled, " sampled rows and ", plan.num_chunks,
           " key chunks exceeds the CUDA grid of stage 1's first pass");
  SA_CHECK(std::ceil(static_cast<double>(p.seq_k) / 128.0) * kv <= std::numeric_limits<std::int32_t>::max(),
           "k.seq (", p.seq_k, ") times k.heads (", p.kv_heads, ") exceeds the CUDA grid of stage 1's second pass");
  SA_CHECK(plan.heads_total * plan.stage2_blocks <= std::numeric_limits<std::int32_t>::max(), "batch * q.heads (",
           plan.heads_total, ") times ", plan.stage2_blocks, " stage 2 blocks per head exceeds the CUDA grid");
  return plan;
}

std::uint64_t plan_stamp(const SelectPlan& plan) {
  const core::Problem& p = plan.problem;
  std::uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a over the fields, 8 bytes each
  auto mix = [&h](std::uint64_t x) {
    for (int i = 0; i < 8; ++i, x >>= 8) h = (h ^ (x & 0xff)) * 0x100000001b3ull;
  };
  std::uint32_t scale_bits = 0;
  std::memcpy(&scale_bits, &p.scale, sizeof scale_bits);
  std::uint64_t alpha_bits = 0;
  std::memcpy(&alpha_bits, &plan.alpha, sizeof alpha_bits);
  for (const std::int64_t x : {p.batch, p.seq_q, p.seq_k, p.q_heads, p.kv_heads, p.head_dim,
                               std::int64_t{p.causal}, plan.num_sampled, plan.num_chunks, plan.window,
                               plan.dense_tail, plan.dense_tail_config, plan.sink_tokens, plan.dense_entries,
                               plan.stage2_chunk})
    mix(static_cast<std::uint64_t>(x));
  mix(scale_bits);
  mix(alpha_bits);
  return h | 1;  // never 0, the value of a cleared workspace
}

WorkspaceLayout workspace_layout(const SelectPlan& plan) {
  const std::int64_t sk_plan = plan.problem.seq_k;
  SA_CHECK(plan.stage2_chunk > 0 && plan.stage2_chunk % 32 == 0 &&
               plan.stage2_blocks == (sk_plan + plan.stage2_chunk - 1) / plan.stage2_chunk,
           "stage 2 split: chunk ", plan.stage2_chunk, " (a positive multiple of 32) and ", plan.stage2_blocks,
           " blocks per head for seq_k ", sk_plan);
  const std::size_t heads = static_cast<std::size_t>(plan.heads_total);
  const std::size_t sk = static_cast<std::size_t>(plan.problem.seq_k);
  // Every size, product and offset checked: the plan's own checks bound the grids, not the bytes.
  auto mul = [](std::initializer_list<std::size_t> factors) {
    std::size_t r = 1;
    for (const std::size_t f : factors)
      SA_CHECK(!__builtin_mul_overflow(r, f, &r), "the workspace size of these shapes overflows size_t");
    return r;
  };
  WorkspaceLayout l;
  std::size_t at = 0;
  auto place = [&at](std::size_t bytes) {
    const std::size_t here = at;
    SA_CHECK(bytes < SIZE_MAX - kAlign && !__builtin_add_overflow(at, bytes + kAlign - 1, &at),
             "the workspace size of these shapes overflows size_t");
    at = at / kAlign * kAlign;
    return here;
  };
  const std::size_t rows = mul({heads, static_cast<std::size_t>(plan.num_sampled)});
  l.part_m = place(mul({static_cast<std::size_t>(plan.num_chunks), rows, sizeof(float)}));
  l.part_l = place(mul({static_cast<std::size_t>(plan.num_chunks), rows, sizeof(float)}));
  const std::size_t stride = static_cast<std::size_t>(sampled_stride(plan.num_sampled));
  l.lse2 = place(mul({heads, stride, sizeof(float)}));
  // Rows of whole 64-column blocks (sel::stored_dim_sm90): head_dim 96 takes 128 columns.
  const std::size_t image_cols = static_cast<std::size_t>((plan.problem.head_dim + 63) / 64 * 64);
  l.qs_image = place(mul({heads, stride, image_cols, 2}));
  l.qs_pos = place(mul({stride, sizeof(std::int32_t)}));
  l.colscore = place(mul({heads, sk, sizeof(float)}));
  l.inside = place(mul({heads, sk, sizeof(float)}));
  l.indices = place(mul({heads, sk, sizeof(std::int32_t)}));
  l.offsets = place(mul({heads + 1, sizeof(std::int64_t)}));
  l.counts = place(mul({heads, sizeof(std::int32_t)}));
  l.window = place(mul({heads, sizeof(std::int32_t)}));
  l.bitmap = place(mul({heads, static_cast<std::size_t>(plan.bitmap_words), sizeof(std::uint32_t)}));
  l.stats = place(mul({heads, sizeof(DeviceHeadStats)}));
  l.stage2_heads = place(mul({heads, sizeof(Stage2Head)}));
  l.stage2_blocks = place(mul({heads, static_cast<std::size_t>(plan.stage2_blocks), sizeof(Stage2Block)}));
  l.stamp = place(sizeof(std::uint64_t));
  l.bytes = at;
  return l;
}

Workspace carve_workspace(void* base, std::size_t bytes, const WorkspaceLayout& l) {
  SA_CHECK(base != nullptr, "workspace is null");
  SA_CHECK(reinterpret_cast<std::uintptr_t>(base) % kAlign == 0, "workspace must be ", kAlign,
           "-byte aligned (cudaMalloc memory is)");
  SA_CHECK(bytes >= l.bytes, "workspace_bytes (", bytes, ") is smaller than sample_attention_workspace_size (", l.bytes,
           ")");
  auto* b = static_cast<unsigned char*>(base);
  return Workspace{reinterpret_cast<float*>(b + l.part_m),
                   reinterpret_cast<float*>(b + l.part_l),
                   reinterpret_cast<float*>(b + l.lse2),
                   b + l.qs_image,
                   reinterpret_cast<std::int32_t*>(b + l.qs_pos),
                   reinterpret_cast<float*>(b + l.colscore),
                   reinterpret_cast<float*>(b + l.inside),
                   reinterpret_cast<std::int32_t*>(b + l.indices),
                   reinterpret_cast<std::int64_t*>(b + l.offsets),
                   reinterpret_cast<std::int32_t*>(b + l.counts),
                   reinterpret_cast<std::int32_t*>(b + l.window),
                   reinterpret_cast<std::uint32_t*>(b + l.bitmap),
                   reinterpret_cast<DeviceHeadStats*>(b + l.stats),
                   reinterpret_cast<Stage2Head*>(b + l.stage2_heads),
                   reinterpret_cast<Stage2Block*>(b + l.stage2_blocks),
                   reinterpret_cast<std::uint64_t*>(b + l.stamp)};
}

void run_selection(const SelectPlan& plan, const TensorView& q, const TensorView& k, const Workspace& ws,
                   void* stream) {
  const core::Problem& p = plan.problem;
  check_device_view(q, "q");
  check_device_view(k, "k");
  Stage1Args a;
  a.q = q.data;
  a.k = k.data;
  copy_strides(q, a.q_stride);
  copy_strides(k, a.k_stride);
  a.batch = p.batch;
  a.seq_q = p.seq_q;
  a.seq_k = p.seq_k;
  a.q_heads = p.q_heads;
  a.kv_heads = p.kv_heads;
  a.group = p.group();
  a.num_sampled = plan.num_sampled;
  a.inv_sampled = 1.0 / static_cast<double>(plan.num_sampled);
  a.window = plan.window;
  a.dense_tail = plan.dense_tail;
  a.scale_log2 = p.scale * 1.4426950408889634f;
  a.causal = p.causal;
  a.aligned = rows_aligned16(q) && rows_aligned16(k);
  a.key_chunk = plan.key_chunk;
  a.num_chunks = plan.num_chunks;
  a.part_m = ws.part_m;
  a.part_l = ws.part_l;
  a.lse2 = ws.lse2;
  a.qs_image = ws.qs_image;
  a.qs_pos = ws.qs_pos;
  a.colscore = ws.colscore;
  a.inside = ws.inside;
  launch_stage1(a, q.dtype, p.head_dim, stream);

  run_stage2(plan, ws, stream);
}

void run_stage2(const SelectPlan& plan, const Workspace& ws, void* stream) {
  const core::Problem& p = plan.problem;
  Stage2Args c;
  c.colscore = ws.colscore;
  c.inside = ws.inside;
  c.indices = ws.indices;
  c.offsets = ws.offsets;
  c.counts = ws.counts;
  c.window = ws.window;
  c.bitmap = ws.bitmap;
  c.stats = ws.stats;
  c.heads = ws.stage2_heads;
  c.blocks = ws.stage2_blocks;
  c.heads_total = plan.heads_total;
  c.seq_q = p.seq_q;
  c.seq_k = p.seq_k;
  c.window_size = plan.window;
  c.dense_tail = plan.dense_tail;
  c.sink_tokens = plan.sink_tokens;
  c.dense_entries = plan.dense_entries;
  c.visible_entries = plan.visible_entries;
  c.bitmap_words = plan.bitmap_words;
  c.chunk = plan.stage2_chunk;
  c.blocks_per_head = plan.stage2_blocks;
  c.base_entries = plan.base_entries;
  c.alpha = plan.alpha;
  c.fixed_scale = stage2_fixed_scale(plan.num_sampled);
  c.causal = p.causal;
  c.stamp = ws.stamp;
  c.stamp_value = plan_stamp(plan);
  launch_stage2(c, stream);
}

void run_sparse_attention(const SelectPlan& plan, const TensorView& q, const TensorView& k, const TensorView& v,
                          const TensorView& out, float* lse, const Workspace& ws, void* stream) {
  const core::Problem& p = plan.problem;
  AttentionParams ap = attention_params(p, q, k, v, out, lse);
  ap.window = ws.window;
  ap.col_indices = ws.indices;
  ap.col_offsets = ws.offsets;
  ap.col_counts = ws.counts;
  ap.col_bitmap = ws.bitmap;
  ap.bitmap_words = plan.bitmap_words;
  ap.dense_tail = plan.dense_tail;
  ap.window_hint = plan.window;
  run_attention(ap, stream);
}

Selection download_selection(const SelectPlan& plan, const Workspace& ws, void* stream) {
  const core::Problem& p = plan.problem;
  const std::int64_t heads = plan.heads_total;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  std::vector<std::int32_t> counts(static_cast<std::size_t>(heads));
  std::vector<DeviceHeadStats> stats(static_cast<std::size_t>(heads));
  std::vector<std::int32_t> indices(static_cast<std::size_t>(heads * p.seq_k));
  SA_CUDA_CHECK(
      cudaMemcpyAsync(counts.data(), ws.counts, counts.size() * sizeof(std::int32_t), cudaMemcpyDeviceToHost, s));
  SA_CUDA_CHECK(
      cudaMemcpyAsync(stats.data(), ws.stats, stats.size() * sizeof(DeviceHeadStats), cudaMemcpyDeviceToHost, s));
  SA_CUDA_CHECK(
      cudaMemcpyAsync(indices.data(), ws.indices, indices.size() * sizeof(std::int32_t), cudaMemcpyDeviceToHost, s));
  std::uint64_t stamp = 0;
  SA_CUDA_CHECK(cudaMemcpyAsync(&stamp, ws.stamp, sizeof stamp, cudaMemcpyDeviceToHost, s));
  SA_CUDA_CHECK(cudaStreamSynchronize(s));
  SA_CHECK(stamp == plan_stamp(plan), "the workspace holds no selection made with these shapes, params and config "
           "(never written, or written by a call with others): pass those of the call that filled it");
  for (std::int64_t bh = 0; bh < heads; ++bh) {
    SA_CHECK(counts[bh] >= 0 && counts[bh] <= p.seq_k, "the workspace's column count of head ", bh, " (",
             counts[bh], ") is outside [0, ", p.seq_k, "]: not a selection of this call");
  }

  Selection sel;
  sel.batch = p.batch;
  sel.heads = p.q_heads;
  sel.seq_q = p.seq_q;
  sel.seq_k = p.seq_k;
  sel.causal = p.causal;
  sel.dense_tail = plan.dense_tail_config;
  sel.window.assign(static_cast<std::size_t>(heads), plan.window);
  sel.offsets.assign(1, 0);
  sel.stats.resize(static_cast<std::size_t>(heads));
  for (std::int64_t bh = 0; bh < heads; ++bh) {
    const std::int32_t* first = indices.data() + bh * p.seq_k;
    sel.indices.insert(sel.indices.end(), first, first + counts[bh]);
    sel.offsets.push_back(static_cast<std::int64_t>(sel.indices.size()));
    HeadStats& h = sel.stats[bh];
    h.kept_columns = stats[bh].kept_columns;
    h.kept_entries = stats[bh].kept_entries;
    h.visible_entries = plan.visible_entries;
    h.density = plan.visible_entries > 0
                    ? static_cast<double>(h.kept_entries) / static_cast<double>(plan.visible_entries)
                    : 0.0;
    h.sampled_coverage = stats[bh].sampled_coverage;
  }
  return sel;
}

}  // namespace sampleattn::cuda
