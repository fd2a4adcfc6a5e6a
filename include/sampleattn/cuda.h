// SampleAttention on CUDA without allocation or synchronisation: the caller owns the workspace and the
// stream, so a whole prefill (every layer's sample_attention) can be captured in a CUDA graph.
// Available when sampleattn is built with its CUDA backend (SAMPLEATTN_WITH_CUDA is then defined).
//
//   std::size_t bytes = sampleattn::cuda::sample_attention_workspace_size(q, k, params, config);
//   cudaMalloc(&ws, bytes);                                  // once; reuse across calls of the same shape
//   sampleattn::cuda::sample_attention(q, k, v, out, lse, params, config, ws, bytes, stream);
//   Selection s = sampleattn::cuda::selection_from_workspace(q, k, params, config, ws, bytes, stream);
//
// Tensors are CUDA views (tensor.h) of bfloat16 or float16 with head_dim 64, 96, 128 or 256 (256 needs a GPU that
// gives a block 160 KiB of shared memory: A100, H100, H200), head_dim contiguous;
// shapes and the optional lse output as in api.h. The call runs on the current device: the tensors, the
// workspace and `stream` (a cudaStream_t; nullptr: the legacy default stream) must belong to it. Any number of
// host threads may call at once, each with its own workspace. The workspace must be 256-byte aligned
// (cudaMalloc memory is) and apart from every tensor; out and lse may not overlap each other or the inputs. Every function validates its arguments on the host and
// throws sampleattn::Error before enqueuing anything (a CUDA error, e.g. a failed launch, also throws, possibly
// after earlier stages were enqueued).
//
// Non-finite inputs: the CUDA path does not scan q/k/v (that would need a synchronisation). A head whose
// column scores are not finite (NaN/Inf in q or k reaching the sampled rows) keeps every column, and its
// HeadStats::sampled_coverage is NaN; its output then carries the NaN exactly as dense attention would.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "sampleattn/config.h"
#include "sampleattn/selection.h"
#include "sampleattn/tensor.h"

namespace sampleattn::cuda {

// Bytes of workspace sample_attention() and select_to_workspace() need for these shapes and settings.
// Depends only on the shapes and the configuration, never on the data.
std::size_t sample_attention_workspace_size(const TensorView& q, const TensorView& k, const AttnParams& params = {},
                                            const SampleConfig& config = {});

// Stage 1, stage 2 and sparse attention, all enqueued on `stream`; the selection stays in the workspace.
void sample_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out, float* lse,
                      const AttnParams& params, const SampleConfig& config, void* workspace,
                      std::size_t workspace_bytes, void* stream);

// Stages 1 and 2 only (the selection, e.g. to time it or to reuse it).
void select_to_workspace(const TensorView& q, const TensorView& k, const AttnParams& params, const SampleConfig& config,
                         void* workspace, std::size_t workspace_bytes, void* stream);

// The selection and statistics the last call on this workspace left there, copied to the host; waits for
// `stream`. Pass the same shapes, params and config as that call: the workspace carries a stamp of them, and
// a mismatch (or a workspace no call has filled) throws sampleattn::Error.
Selection selection_from_workspace(const TensorView& q, const TensorView& k, const AttnParams& params,
                                   const SampleConfig& config, const void* workspace, std::size_t workspace_bytes,
                                   void* stream);

// Packed variable-length batches (api.h's sample_attention_varlen, same arguments): every check first, then
// each sequence with queries enqueued on `stream` in turn, all on the one workspace (stream order keeps them
// apart). Its size is the largest any sequence needs; selection_from_workspace afterwards describes the last
// sequence with queries (pass its row ranges of q and k; the stamp it checks holds shapes and settings, so an
// earlier sequence of the same lengths is not told apart from it).
std::size_t sample_attention_varlen_workspace_size(const TensorView& q, const TensorView& k,
                                                   const std::vector<std::int64_t>& cu_seqlens_q,
                                                   const std::vector<std::int64_t>& cu_seqlens_k,
                                                   const AttnParams& params = {}, const SampleConfig& config = {});
void sample_attention_varlen(const TensorView& q, const TensorView& k, const TensorView& v,
                             const std::vector<std::int64_t>& cu_seqlens_q,
                             const std::vector<std::int64_t>& cu_seqlens_k, const TensorView& out, float* lse,
                             const AttnParams& params, const SampleConfig& config, void* workspace,
                             std::size_t workspace_bytes, void* stream);

}  // namespace sampleattn::cuda
