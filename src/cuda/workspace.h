// The device workspace of one sample_attention call: what stage 1 and stage 2 leave there, where each array
// sits, and how the host turns it back into a Selection. The plan is computed on the host from the problem
// and the configuration alone (no device access), so sizes are known before anything runs.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/problem.h"
#include "cuda/select_args.h"
#include "sampleattn/config.h"
#include "sampleattn/selection.h"

namespace sampleattn::cuda {

struct SelectPlan {
  core::Problem problem;
  std::int64_t heads_total = 0;   // batch * q_heads
  std::int64_t num_sampled = 0;   // n = |core::sampled_rows|
  std::int64_t key_chunk = 4096;  // stage 1 pass 1 key chunk (stage1_key_chunk; the sm_90a kernels take longer ones)
  std::int64_t num_chunks = 1;
  std::int64_t window = 1;             // core::window_size
  std::int64_t dense_tail = 0;         // config.dense_tail clipped to Sq
  std::int64_t dense_tail_config = 0;  // as given (what Selection::dense_tail records, as on the CPU)
  std::int64_t sink_tokens = 0;
  std::int64_t dense_entries = 0;  // core::dense_head_entries: a head keeping this many entries keeps all
  double alpha = 0.95;
  std::int64_t bitmap_words = 0;     // ceil(Sk / 32)
  std::int64_t stage2_chunk = 2048;  // stage 2 columns per block (stage2_chunk; tests may set any multiple of 32)
  std::int64_t stage2_blocks = 1;    // ceil(Sk / stage2_chunk) blocks per head
  std::int64_t base_entries = 0;     // band + tail entries of one head (core::count_entries with no columns)
  std::int64_t visible_entries = 0;
};

// Byte offsets of the arrays inside the workspace (each 256-byte aligned) and the total size.
struct WorkspaceLayout {
  std::size_t part_m = 0, part_l = 0, lse2 = 0, qs_image = 0, qs_pos = 0, colscore = 0, inside = 0, indices = 0,
              offsets = 0, counts = 0, window = 0, bitmap = 0, stats = 0, stage2_heads = 0, stage2_blocks = 0,
              stamp = 0, bytes = 0;
};

// Typed pointers into one workspace.
struct Workspace {
  float* part_m;
  float* part_l;
  float* lse2;
  void* qs_image;
  std::int32_t* qs_pos;
  float* colscore;
  float* inside;
  std::int32_t* indices;
  std::int64_t* offsets;
  std::int32_t* counts;
  std::int32_t* window;
  std::uint32_t* bitmap;
  DeviceHeadStats* stats;
  Stage2Head* stage2_heads;    // [B * Hq] stage 2 scratch
  Stage2Block* stage2_blocks;  // [B * Hq, stage2_blocks]
  std::uint64_t* stamp;        // plan_stamp of the plan whose selection the workspace holds (written by stage 2)
};

SelectPlan make_plan(const core::Problem& p, const SampleConfig& config);
// A 64-bit hash of everything in the plan that decides the selection and the workspace layout.
std::uint64_t plan_stamp(const SelectPlan& plan);
WorkspaceLayout workspace_layout(const SelectPlan& plan);
// Throws sampleattn::Error when `bytes` is smaller than the layout needs or `base` is not 256-byte aligned.
Workspace carve_workspace(void* base, std::size_t bytes, const WorkspaceLayout& layout);

// Stages 1 and 2 on `stream`: afterwards the workspace holds the selection (indices, counts, bitmap, window,
// offsets) and the statistics. No allocation, no synchronisation.
void run_selection(const SelectPlan& plan, const TensorView& q, const TensorView& k, const Workspace& ws, void* stream);

// Stage 2 alone, on the column scores already in ws.colscore and ws.inside (run_selection's second half).
void run_stage2(const SelectPlan& plan, const Workspace& ws, void* stream);

// 2^F, the scale of stage 2's uint64 fixed-point sums for n sampled rows (column scores sum to n).
float stage2_fixed_scale(std::int64_t num_sampled);

// Sparse attention over the selection held in the workspace, on `stream`.
void run_sparse_attention(const SelectPlan& plan, const TensorView& q, const TensorView& k, const TensorView& v,
                          const TensorView& out, float* lse, const Workspace& ws, void* stream);

// Copies the selection and statistics to the host (synchronises `stream`). Throws sampleattn::Error when the
// workspace holds no selection of this plan (never written, or written by a call with other shapes or
// settings).
Selection download_selection(const SelectPlan& plan, const Workspace& ws, void* stream);

}  // namespace sampleattn::cuda
