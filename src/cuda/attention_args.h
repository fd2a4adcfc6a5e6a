// KernelArgs: what every attention kernel instance receives, built once on the host from AttentionParams
// (attention_launch.cu). Strides are in elements; the head_dim stride is 1 (checked on the host).
#pragma once

#include <cstdint>

namespace sampleattn::cuda {

struct KernelArgs {
  const void* q = nullptr;  // [B, Sq, Hq, d]
  const void* k = nullptr;  // [B, Sk, Hkv, d]
  const void* v = nullptr;  // [B, Sk, Hkv, d]
  void* out = nullptr;      // [B, Sq, Hq, d]
  float* lse = nullptr;     // [B, Hq, Sq] or null
  std::int64_t q_stride[3]{}, k_stride[3]{}, v_stride[3]{}, out_stride[3]{};  // batch, seq, head
  std::int64_t seq_q = 0, seq_k = 0, q_heads = 0, group = 1;  // group = Hq / Hkv
  std::int64_t block_m = 128;  // query rows per block: sm_90 64 or 128 (64 only below d 256); sm_80 128 (64 at d 256)
  std::int64_t num_m_tiles = 0;                                // ceil(Sq / block_m)
  float scale_log2 = 1.0f;                                     // softmax scale * log2(e)
  bool causal = true;
  bool aligned_inputs = true;  // q, k, v rows start on 16-byte boundaries: cp.async; else plain loads
  bool aligned_out = true;     // out element pairs start on 4-byte boundaries
  bool aligned_out_rows = true;  // out rows start on 16-byte boundaries (16-byte stores)
  bool narrow_strides = true;  // k and v sequence strides below 2^32 bytes (32-bit row offsets in gathers)

  // Sparse mode (col_indices != nullptr); see AttentionParams.
  const std::int32_t* window = nullptr;
  const std::int32_t* col_indices = nullptr;
  const std::int64_t* col_offsets = nullptr;
  const std::int32_t* col_counts = nullptr;
  const std::uint32_t* col_bitmap = nullptr;
  std::int64_t bitmap_words = 0;
  std::int64_t dense_tail = 0;
};

}  // namespace sampleattn::cuda
