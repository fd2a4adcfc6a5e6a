// run_attention / attention_supported (attention.h): checks the parameters, turns them into KernelArgs
// and picks the kernel instance for (dtype, head_dim). The one selector behind both functions.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "cuda/attention.h"
#include "cuda/attention_args.h"
#include "cuda/attention_instances.h"
#include "cuda/attention_sm80_shape.h"
#include "sampleattn/error.h"

namespace sampleattn::cuda {
namespace {

constexpr std::int64_t kMinBlockM = 64;  // fewest query rows per thread block (attention_kernel_sm90.cuh)

using Launcher = cudaError_t (*)(const KernelArgs&, std::int64_t, cudaStream_t);

Launcher select_sm80(DType dtype, std::int64_t head_dim) {
  const bool bf16 = dtype == DType::bf16;
  if (!bf16 && dtype != DType::f16) return nullptr;
  switch (head_dim) {
    case 64: return bf16 ? launch_attention_sm80_bf16_d64 : launch_attention_sm80_f16_d64;
    case 96: return bf16 ? launch_attention_sm80_bf16_d96 : launch_attention_sm80_f16_d96;
    case 128: return bf16 ? launch_attention_sm80_bf16_d128 : launch_attention_sm80_f16_d128;
    case 256: return bf16 ? launch_attention_sm80_bf16_d256 : launch_attention_sm80_f16_d256;
    default: return nullptr;
  }
}

// SAMPLEATTN_CUDA_KERNELS=sm80 keeps the sm_80 kernels on a Hopper GPU (tests of both families on one GPU,
// benchmarks of one against the other).
bool sm80_forced() {
  static const bool forced = [] {
    const char* v = std::getenv("SAMPLEATTN_CUDA_KERNELS");
    return v != nullptr && std::strcmp(v, "sm80") == 0;
  }();
  return forced;
}

// The sm_90a instance for (dtype, head_dim) when it runs on the current device, else the sm_80 one.
Launcher select_sm90(DType dtype, std::int64_t head_dim) {
  if (select_sm80(dtype, head_dim) == nullptr || sm80_forced()) return nullptr;
  const bool bf16 = dtype == DType::bf16;
  switch (head_dim) {
    case 64:
      if (bf16 && attention_sm90_bf16_d64_runnable()) return launch_attention_sm90_bf16_d64;
      if (!bf16 && attention_sm90_f16_d64_runnable()) return launch_attention_sm90_f16_d64;
      return nullptr;
    case 96:
      if (bf16 && attention_sm90_bf16_d96_runnable()) return launch_attention_sm90_bf16_d96;
      if (!bf16 && attention_sm90_f16_d96_runnable()) return launch_attention_sm90_f16_d96;
      return nullptr;
    case 128:
      if (bf16 && attention_sm90_bf16_d128_runnable()) return launch_attention_sm90_bf16_d128;
      if (!bf16 && attention_sm90_f16_d128_runnable()) return launch_attention_sm90_f16_d128;
      return nullptr;
    case 256:
      if (bf16 && attention_sm90_bf16_d256_runnable()) return launch_attention_sm90_bf16_d256;
      if (!bf16 && attention_sm90_f16_d256_runnable()) return launch_attention_sm90_f16_d256;
      return nullptr;
    default: return nullptr;
  }
}

// The current device's compute capability major and the shared memory a block may opt in to; `error` is the
// runtime's error where it could not tell (no device, no driver).
struct DeviceLimits {
  int major = 0, smem_optin = 0;
  cudaError_t error = cudaSuccess;
};
DeviceLimits device_limits() {
  DeviceLimits l;
  int device = 0;
  l.error = cudaGetDevice(&device);
  if (l.error == cudaSuccess) l.error = cudaDeviceGetAttribute(&l.major, cudaDevAttrComputeCapabilityMajor, device);
  if (l.error == cudaSuccess)
    l.error = cudaDeviceGetAttribute(&l.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  return l;
}

// Shared memory the sm_80 instance of head_dim needs, dynamic plus the kernel's static arrays (1.1 KiB by ptxas;
// 2 KiB budgeted): the instance every GPU of compute capability 8.0 or newer can fall back to. Where an sm_90a
// instance runs, the GPU gives a block 227 KiB, which each sm_90a Config checks at compile time.
constexpr int kSm80StaticSmemBudget = 2048;
int instance_smem_bytes(std::int64_t head_dim) {
  return sm80::smem_bytes(static_cast<int>(head_dim)) + kSm80StaticSmemBudget;
}

// Query rows per block of the instance that runs the launch (the sm_90a head_dim 256 instance has one shape).
std::int64_t block_rows(bool sm90, bool small_window, std::int64_t head_dim) {
  if (sm90) return small_window && head_dim != 256 ? 64 : 128;
  return sm80::shape_for(static_cast<int>(head_dim)).block_m;
}

// Rows of 16-bit elements that start on 16-byte boundaries: base aligned, batch/seq/head strides % 8 == 0.
bool rows_aligned16(const void* base, const std::int64_t (&stride)[4]) {
  return reinterpret_cast<std::uintptr_t>(base) % 16 == 0 && stride[0] % 8 == 0 && stride[1] % 8 == 0 &&
         stride[2] % 8 == 0;
}

bool pairs_aligned4(const void* base, const std::int64_t (&stride)[4]) {
  return reinterpret_cast<std::uintptr_t>(base) % 4 == 0 && stride[0] % 2 == 0 && stride[1] % 2 == 0 &&
         stride[2] % 2 == 0;
}

void check_tensor(const void* data, const std::int64_t (&stride)[4], const char* name) {
  SA_CHECK(data != nullptr, "attention: ", name, " is null");
  SA_CHECK(stride[3] == 1, "attention: ", name, ".stride[3] (", stride[3], ") must be 1 (head_dim contiguous)");
  for (int i = 0; i < 3; ++i)
    SA_CHECK(stride[i] >= 0, "attention: ", name, ".stride[", i, "] (", stride[i], ") must be >= 0");
  SA_CHECK(reinterpret_cast<std::uintptr_t>(data) % 2 == 0, "attention: ", name, " is not 2-byte aligned");
}

}  // namespace

bool attention_supported(DType dtype, std::int64_t head_dim) {
  if (select_sm80(dtype, head_dim) == nullptr) return false;
  const DeviceLimits l = device_limits();
  return l.error == cudaSuccess && l.major >= 8 && l.smem_optin >= instance_smem_bytes(head_dim);
}

void check_attention_supported(DType dtype, std::int64_t head_dim) {
  SA_CHECK(select_sm80(dtype, head_dim) != nullptr, "attention: no CUDA kernel for dtype ", to_string(dtype),
           " and head_dim ", head_dim, " (bfloat16 / float16 with head_dim 64, 96, 128 or 256)");
  const DeviceLimits l = device_limits();
  SA_CHECK(l.error == cudaSuccess, "attention (", to_string(dtype), ", head_dim ", head_dim,
           "): no usable CUDA device (", cudaGetErrorString(l.error), ")");
  SA_CHECK(l.major >= 8, "attention (", to_string(dtype), ", head_dim ", head_dim,
           "): the CUDA backend needs a GPU of compute capability 8.0 or newer (this one: ", l.major, ".x)");
  SA_CHECK(l.smem_optin >= instance_smem_bytes(head_dim), "attention: head_dim ", head_dim, " needs ",
           instance_smem_bytes(head_dim), " bytes of shared memory per thread block, and this GPU allows ",
           l.smem_optin, " (head_dim 256 runs on GPUs such as the A100, H100 and H200)");
}

void check_attention_params(const AttentionParams& p) {
  SA_CHECK(select_sm80(p.dtype, p.head_dim) != nullptr, "attention: no CUDA kernel for dtype ", to_string(p.dtype),
           " and head_dim ", p.head_dim, " (bfloat16 / float16 with head_dim 64, 96, 128 or 256)");
  SA_CHECK(p.batch > 0 && p.seq_q > 0 && p.seq_k > 0 && p.q_heads > 0 && p.kv_heads > 0,
           "attention: sizes must be > 0 (batch ", p.batch, ", seq_q ", p.seq_q, ", seq_k ", p.seq_k,
           ", q_heads ", p.q_heads, ", kv_heads ", p.kv_heads, ")");
  SA_CHECK(p.q_heads % p.kv_heads == 0, "attention: q_heads (", p.q_heads, ") must be a multiple of kv_heads (",
           p.kv_heads, ")");
  SA_CHECK(p.seq_q <= p.seq_k, "attention: seq_q (", p.seq_q, ") must be <= seq_k (", p.seq_k, ")");
  SA_CHECK(p.seq_k <= std::numeric_limits<std::int32_t>::max() - 256, "attention: seq_k (", p.seq_k,
           ") must be below 2^31 - 256 (int32 key positions and column indices)");
  SA_CHECK(std::isfinite(p.scale) && p.scale > 0.0f, "attention: scale (", p.scale, ") must be finite and > 0");
  check_tensor(p.q, p.q_stride, "q");
  check_tensor(p.k, p.k_stride, "k");
  check_tensor(p.v, p.v_stride, "v");
  check_tensor(p.out, p.out_stride, "out");
  const std::int64_t m_tiles = (p.seq_q + kMinBlockM - 1) / kMinBlockM;
  SA_CHECK(m_tiles * p.q_heads <= std::numeric_limits<std::int32_t>::max(), "attention: seq_q (", p.seq_q,
           ") x q_heads (", p.q_heads, ") exceeds the grid");
  SA_CHECK(p.batch <= 65535, "attention: batch (", p.batch, ") must be <= 65535");
}

void run_attention(const AttentionParams& p, void* stream) {
  check_attention_params(p);
  check_attention_supported(p.dtype, p.head_dim);
  const Launcher sm90 = select_sm90(p.dtype, p.head_dim);
  const Launcher launch = sm90 != nullptr ? sm90 : select_sm80(p.dtype, p.head_dim);
  const bool small_window = p.col_indices != nullptr && p.window_hint > 0 && p.window_hint <= kSmallWindowRows;
  const std::int64_t block_m = block_rows(sm90 != nullptr, small_window, p.head_dim);
  const std::int64_t m_tiles = (p.seq_q + block_m - 1) / block_m;

  KernelArgs a;
  a.q = p.q;
  a.k = p.k;
  a.v = p.v;
  a.out = p.out;
  a.lse = p.lse;
  for (int i = 0; i < 3; ++i) {
    a.q_stride[i] = p.q_stride[i];
    a.k_stride[i] = p.k_stride[i];
    a.v_stride[i] = p.v_stride[i];
    a.out_stride[i] = p.out_stride[i];
  }
  a.seq_q = p.seq_q;
  a.seq_k = p.seq_k;
  a.q_heads = p.q_heads;
  a.group = p.q_heads / p.kv_heads;
  a.block_m = block_m;
  a.num_m_tiles = m_tiles;
  a.scale_log2 = p.scale * 1.4426950408889634f;
  a.causal = p.causal;
  a.aligned_inputs = rows_aligned16(p.q, p.q_stride) && rows_aligned16(p.k, p.k_stride) &&
                     rows_aligned16(p.v, p.v_stride);
  a.aligned_out = pairs_aligned4(p.out, p.out_stride);
  a.aligned_out_rows = rows_aligned16(p.out, p.out_stride);
  a.narrow_strides = p.k_stride[1] < (std::int64_t{1} << 31) && p.v_stride[1] < (std::int64_t{1} << 31);
  if (p.col_indices != nullptr) {
    SA_CHECK(p.window != nullptr && p.col_offsets != nullptr && p.col_counts != nullptr && p.col_bitmap != nullptr,
             "attention: sparse mode needs window, col_offsets, col_counts and col_bitmap");
    SA_CHECK(p.bitmap_words * 32 >= p.seq_k, "attention: bitmap_words (", p.bitmap_words,
             ") must cover seq_k (", p.seq_k, ") bits");
    SA_CHECK(p.dense_tail >= 0, "attention: dense_tail (", p.dense_tail, ") must be >= 0");
    a.window = p.window;
    a.col_indices = p.col_indices;
    a.col_offsets = p.col_offsets;
    a.col_counts = p.col_counts;
    a.col_bitmap = p.col_bitmap;
    a.bitmap_words = p.bitmap_words;
    a.dense_tail = p.dense_tail < p.seq_q ? p.dense_tail : p.seq_q;
  }
  const cudaError_t err = launch(a, p.batch, static_cast<cudaStream_t>(stream));
  SA_CHECK(err == cudaSuccess, "attention: kernel launch failed (", to_string(p.dtype), ", head_dim ", p.head_dim,
           "): ", cudaGetErrorString(err));
}

}  // namespace sampleattn::cuda
