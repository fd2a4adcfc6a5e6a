// A C entry point over sampleattn::cuda::run_attention so that the device benchmark script
// (bench/cuda_attention_bench.py) can drive the kernels on PyTorch tensors through ctypes, timing them
// beside PyTorch SDPA on the same inputs. Not part of the library; built by scripts/build_cudaattn_device.sh.
#include <cstdint>
#include <cstdio>
#include <exception>

#include "cuda/attention.h"

extern "C" {

// strides: 16 int64 (q, k, v, out; each [batch, seq, head, dim]); sizes: batch, seq_q, seq_k, q_heads,
// kv_heads, head_dim; dtype 0 = bf16, 1 = float16. Sparse mode when col_indices is non-null.
// Returns 0, or 1 with the error message in err.
int sa_attention(const void* q, const void* k, const void* v, void* out, float* lse, const std::int64_t* strides,
                 const std::int64_t* sizes, int dtype, float scale, int causal, const std::int32_t* window,
                 const std::int32_t* col_indices, const std::int64_t* col_offsets, const std::int32_t* col_counts,
                 const std::uint32_t* col_bitmap, std::int64_t bitmap_words, std::int64_t dense_tail,
                 std::int64_t window_hint, void* stream, char* err, int err_len) {
  sampleattn::cuda::AttentionParams p;
  p.q = q;
  p.k = k;
  p.v = v;
  p.out = out;
  p.lse = lse;
  for (int i = 0; i < 4; ++i) {
    p.q_stride[i] = strides[i];
    p.k_stride[i] = strides[4 + i];
    p.v_stride[i] = strides[8 + i];
    p.out_stride[i] = strides[12 + i];
  }
  p.batch = sizes[0];
  p.seq_q = sizes[1];
  p.seq_k = sizes[2];
  p.q_heads = sizes[3];
  p.kv_heads = sizes[4];
  p.head_dim = sizes[5];
  p.dtype = dtype == 0 ? sampleattn::DType::bf16 : sampleattn::DType::f16;
  p.scale = scale;
  p.causal = causal != 0;
  p.window = window;
  p.col_indices = col_indices;
  p.col_offsets = col_offsets;
  p.col_counts = col_counts;
  p.col_bitmap = col_bitmap;
  p.bitmap_words = bitmap_words;
  p.dense_tail = dense_tail;
  p.window_hint = window_hint;
  try {
    sampleattn::cuda::run_attention(p, stream);
  } catch (const std::exception& e) {
    std::snprintf(err, static_cast<std::size_t>(err_len), "%s", e.what());
    return 1;
  }
  return 0;
}

}  // extern "C"
