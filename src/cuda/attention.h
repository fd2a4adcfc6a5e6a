// Plain parameter struct and launcher of the CUDA attention kernels (dense and sparse). No framework types. Layout of
// every tensor: [batch, seq, heads, head_dim] with int64 element strides; the head_dim stride must be 1. Rows that
// start on 16-byte boundaries (base pointer 16-byte aligned, batch / seq / head strides multiples of 8) take the
// cp.async path; other strides work through a slower plain-load path. Kernels: src/cuda/attention_kernel_sm90.cuh
// (wgmma, mbarriers, a producer warpgroup; compute capability 9.0 with the sm_90a cubin) and
// src/cuda/attention_kernel_sm80.cuh (mma.sync; every other GPU of compute capability 8.0 or newer, or any GPU with
// SAMPLEATTN_CUDA_KERNELS=sm80); one thread block per 128 query rows of one head (64 for sm_90 small windows at
// head_dim 64 / 96 / 128, and for the sm_80 kernel at head_dim 256). Plan of the sparse key runs:
// src/cuda/attention_plan.cuh; measurements: bench/NOTES.md.
#pragma once

#include <cstdint>

#include "core/problem.h"
#include "sampleattn/tensor.h"

#ifndef SAMPLEATTN_SM90_SMALL_WINDOW
#define SAMPLEATTN_SM90_SMALL_WINDOW 768
#endif

namespace sampleattn::cuda {

struct AttentionParams {
  const void* q = nullptr;  // [B, Sq, Hq, d]
  const void* k = nullptr;  // [B, Sk, Hkv, d]
  const void* v = nullptr;  // [B, Sk, Hkv, d]
  void* out = nullptr;      // [B, Sq, Hq, d], same dtype as q
  float* lse = nullptr;     // optional, contiguous [B, Hq, Sq]
  std::int64_t q_stride[4]{}, k_stride[4]{}, v_stride[4]{}, out_stride[4]{};
  std::int64_t batch = 0, seq_q = 0, seq_k = 0, q_heads = 0, kv_heads = 0, head_dim = 0;
  DType dtype = DType::bf16;
  float scale = 1.0f;
  bool causal = true;

  // Sparse mode when col_indices != nullptr. Per query head bh = b * Hq + h, all device arrays:
  //   window[bh]: band width w (row r keeps p(r) - w < j <= p(r); non-causal: p(r) - w < j < p(r) + w);
  //   col_indices + col_offsets[bh] .. col_offsets[bh] + col_counts[bh]: kept columns, sorted ascending;
  //   col_bitmap + bh * bitmap_words: bit j set iff column j is kept (for the masks inside the band span).
  //   dense_tail: the last dense_tail rows keep every visible key.
  // A row that keeps no key (possible only with window 0) gets O = 0 and lse = -inf.
  // Cost follows the kept entries: per query tile, the kept columns left of the tile's band are
  // gathered by index (binary search on the device), the band span is read in place; element masks only
  // on edge tiles. The selection arrays are read on the device only: nothing waits on the host.
  const std::int32_t* window = nullptr;
  const std::int32_t* col_indices = nullptr;
  const std::int64_t* col_offsets = nullptr;
  const std::int32_t* col_counts = nullptr;
  const std::uint32_t* col_bitmap = nullptr;
  std::int64_t bitmap_words = 0;
  std::int64_t dense_tail = 0;
  // Host-side hint: the band width most heads use (e.g. the SampleConfig's window), 0 if unknown. On sm_90
  // a sparse launch with 0 < window_hint <= kSmallWindowRows uses 64-row query tiles (less waste at the band
  // edges; every head_dim but 256); it never changes results.
  std::int64_t window_hint = 0;
};

// Sparse launches whose window_hint is at most this use 64-row query tiles on sm_90 (bench/NOTES.md).
constexpr std::int64_t kSmallWindowRows = SAMPLEATTN_SM90_SMALL_WINDOW;

// Dense-mode parameters of a validated problem (the sparse fields are left empty for the caller).
AttentionParams attention_params(const core::Problem& p, const TensorView& q, const TensorView& k,
                                 const TensorView& v, const TensorView& out, float* lse);

// Whether a kernel instance exists for (dtype, head_dim) and runs on the current device (compute capability 8.0
// or newer, and the shared memory the instance needs: head_dim 256 needs 160 KiB per block).
bool attention_supported(DType dtype, std::int64_t head_dim);
// The same, as an Error naming the dtype, head_dim and what the device lacks.
void check_attention_supported(DType dtype, std::int64_t head_dim);
// The checks run_attention makes, without launching anything (callers validate before enqueuing work).
void check_attention_params(const AttentionParams& params);
// Launches on `stream` (a cudaStream_t); no allocation, no synchronisation (graph-capturable). Throws
// sampleattn::Error naming the argument for unsupported parameters (dtype, head_dim other than 64, 96, 128 and
// 256, head_dim stride != 1, seq_q > seq_k, seq_k >= 2^31 - 256, batch > 65535) and on a launch failure.
void run_attention(const AttentionParams& params, void* stream);

}  // namespace sampleattn::cuda
