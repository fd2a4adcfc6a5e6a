// The public C++ API: validate -> select -> attend, plus dense attention and exact metrics.
//
// Tensors are [batch, seq, heads, head_dim] views (tensor.h). q: [B, Sq, Hq, d]; k, v: [B, Sk, Hkv, d] with
// Hq % Hkv == 0 (query head h reads KV head h / (Hq / Hkv)); Sq <= Sk, the queries being the LAST Sq
// positions (chunked prefill). out: [B, Sq, Hq, d], any supported dtype. lse (optional): float32,
// contiguous [B, Hq, Sq], natural-log log-sum-exp of the scaled scores over the kept entries of each row.
// Every function throws sampleattn::Error on bad input, before writing anything.
#pragma once

#include <cstdint>
#include <vector>

#include "sampleattn/config.h"
#include "sampleattn/selection.h"
#include "sampleattn/tensor.h"

namespace sampleattn {

// Stage 1 + stage 2: choose, per (batch, query head), the columns kept besides the local window.
Selection select(const TensorView& q, const TensorView& k, const AttnParams& params = {},
                 const SampleConfig& config = {}, const ExecOptions& options = {});

// Sparse attention over the mask a selection describes.
void attend(const TensorView& q, const TensorView& k, const TensorView& v, const Selection& selection,
            const TensorView& out, float* lse = nullptr, const AttnParams& params = {},
            const ExecOptions& options = {});

// Sliding-window attention, exact: attend() over the selection of window `window` (>= 1) in every head and no
// columns, i.e. causal row r keeps keys p(r) - window < j <= p(r) (non-causal: |j - p(r)| < window). The cost
// follows the band (O(Sq * window)), as for the window-attention layers of Mistral or Gemma. On CUDA the selection
// is built on the device: nothing is copied from the host, so the call can be captured in a CUDA graph.
void window_attention(const TensorView& q, const TensorView& k, const TensorView& v, std::int64_t window,
                      const TensorView& out, float* lse = nullptr, const AttnParams& params = {},
                      const ExecOptions& options = {});

// select() then attend(); returns the selection that was used.
Selection sample_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                           const TensorView& out, float* lse = nullptr, const AttnParams& params = {},
                           const SampleConfig& config = {}, const ExecOptions& options = {});

// Exact (dense) attention, causal or not: the baseline and the fallback.
void dense_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                     float* lse = nullptr, const AttnParams& params = {}, const ExecOptions& options = {});

// Packed variable-length batches, as FlashAttention's varlen functions take them: q and out [1, total_q, Hq, d],
// k and v [1, total_k, Hkv, d]; sequence i owns query rows [cu_seqlens_q[i], cu_seqlens_q[i + 1]) and key rows
// [cu_seqlens_k[i], cu_seqlens_k[i + 1]) (host vectors of n + 1 non-decreasing offsets from 0 to total_q and
// total_k), and is a prefill of its own: its q_len <= k_len queries are its last positions. lse (optional):
// float32, sequence i's [Hq, q_len] block at lse + Hq * cu_seqlens_q[i] (what the functions above write for
// that sequence alone). Everything is checked before the first sequence runs, the packed views as one problem
// (so the single-call limits, e.g. k.seq < 2^31, apply to the totals); then each sequence with queries runs as
// its own call (on CUDA, on options.cuda_stream, allocating and synchronising per sequence: a failed
// allocation or launch there can leave earlier sequences written; cuda.h has the no-allocation form). Returns
// one Selection per sequence (a default-constructed one where it has no queries); a batch without queries
// does nothing.
std::vector<Selection> sample_attention_varlen(const TensorView& q, const TensorView& k, const TensorView& v,
                                               const std::vector<std::int64_t>& cu_seqlens_q,
                                               const std::vector<std::int64_t>& cu_seqlens_k, const TensorView& out,
                                               float* lse = nullptr, const AttnParams& params = {},
                                               const SampleConfig& config = {}, const ExecOptions& options = {});
void dense_attention_varlen(const TensorView& q, const TensorView& k, const TensorView& v,
                            const std::vector<std::int64_t>& cu_seqlens_q, const std::vector<std::int64_t>& cu_seqlens_k,
                            const TensorView& out, float* lse = nullptr, const AttnParams& params = {},
                            const ExecOptions& options = {});

// Exact metrics of a selection against dense attention, on chosen query rows, computed in fp64 on the CPU
// (host tensors). Per (batch, query head):
//   min_kept_mass: min over the rows of the dense probability mass the mask keeps (the paper's CRA);
//   mean_kept_mass: its mean;
//   rel_error: ||O~ - O||_F / ||O||_F over the rows, O~ the renormalised sparse output, O the dense one.
struct HeadMetrics {
  std::int64_t rows = 0;
  double min_kept_mass = 1.0;
  double mean_kept_mass = 1.0;
  double rel_error = 0.0;
};
std::vector<HeadMetrics> exact_metrics(const TensorView& q, const TensorView& k, const TensorView& v,
                                       const Selection& selection, const std::vector<std::int64_t>& rows,
                                       const AttnParams& params = {});

// n query rows spread evenly over [0, seq_q), the last row included (the rows exact_metrics is given by
// the CLI). n >= seq_q gives every row.
std::vector<std::int64_t> metric_rows(std::int64_t seq_q, std::int64_t n);

}  // namespace sampleattn
