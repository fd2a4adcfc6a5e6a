// launch_stage1 (select_args.h): the one selector from (arch, dtype, head_dim) to a stage 1 kernel instance
// (sm_90a wgmma kernels on compute capability 9.0 when the binary has them, the sm_80 mma.sync kernels
// elsewhere), and the small kernel between the two passes that combines pass 1's per-chunk partials into each
// sampled row's log-sum-exp.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "cuda/attention_sm80_shape.h"
#include "cuda/check.h"
#include "cuda/pdl.cuh"
#include "cuda/select_args.h"
#include "cuda/select_mma_sm80.cuh"
#include "sampleattn/error.h"

namespace sampleattn::cuda {

void launch_stage1_bf16(const Stage1Args& args, std::int64_t head_dim, int pass, cudaStream_t stream);
void launch_stage1_f16(const Stage1Args& args, std::int64_t head_dim, int pass, cudaStream_t stream);
bool stage1_sm90_bf16_runnable(std::int64_t head_dim);
bool stage1_sm90_f16_runnable(std::int64_t head_dim);
void launch_stage1_sm90_bf16(const Stage1Args& args, std::int64_t head_dim, int pass, cudaStream_t stream);
void launch_stage1_sm90_f16(const Stage1Args& args, std::int64_t head_dim, int pass, cudaStream_t stream);

namespace {

// SAMPLEATTN_CUDA_KERNELS=sm80 keeps the sm_80 kernels on a Hopper GPU, as for attention (attention_launch.cu):
// tests of both kernel families on one GPU, benchmarks of one against the other.
bool sm80_forced() {
  static const bool forced = [] {
    const char* v = std::getenv("SAMPLEATTN_CUDA_KERNELS");
    return v != nullptr && std::strcmp(v, "sm80") == 0;
  }();
  return forced;
}

// Block = 32 rows (head bh, row i < sampled_stride) of 256 threads. The first 32 threads combine their row's
// lse2 = M + log2 sum_c l_c 2^(m_c - M) over the chunks the row sees (chunk c starts at key c * key_chunk),
// +inf past n; NaN in any partial stays NaN. Where a.qs_image is set, every thread then copies up to four of
// the rows' 16-byte query chunks (head_dim <= 256) into the image (consecutive threads on consecutive chunks of a row) and head 0's
// rows write qs_pos. 32 rows per block: a block per 256 rows left the 8K selection's few blocks copying 16
// chunks each, one after another.
constexpr int kCombineThreads = 256, kCombineRows = 32;
__global__ void __launch_bounds__(kCombineThreads) combine_kernel(const Stage1Args a) {
  pdl_wait();  // pass 1's partials (pdl.cuh)
  pdl_trigger();
  __shared__ std::int64_t src_of[kCombineRows];  // element offset of the row's query in q; -1 past n
  const std::int64_t n = a.num_sampled, stride = a.sampled_stride, rows = a.batch * a.q_heads * stride;
  const std::int64_t x0 = static_cast<std::int64_t>(blockIdx.x) * kCombineRows;
  if (threadIdx.x < kCombineRows && x0 + threadIdx.x < rows) {
    const std::int64_t x = x0 + threadIdx.x, bh = x / stride, i = x % stride;
    float lse = INFINITY;
    std::int64_t t = 0;
    if (i < n) {
      t = sel::sampled_row(i, a.seq_q, n, a.inv_sampled);
      const std::int64_t end = a.causal ? a.seq_k - a.seq_q + t + 1 : a.seq_k;
      const std::int64_t chunks = (end + a.key_chunk - 1) / a.key_chunk;
      const std::int64_t part_stride = a.batch * a.q_heads * n, at = bh * n + i;
      float m = -INFINITY;
      for (std::int64_t c = 0; c < chunks; ++c) m = fmaxf(m, a.part_m[c * part_stride + at]);
      const float m_use = m == -INFINITY ? 0.0f : m;
      float l = 0.0f;
      for (std::int64_t c = 0; c < chunks; ++c)
        l += a.part_l[c * part_stride + at] * exp2f(a.part_m[c * part_stride + at] - m_use);
      lse = m + log2f(l);
    }
    a.lse2[x] = lse;
    if (a.qs_image != nullptr) {
      if (bh == 0) a.qs_pos[i] = i < n ? static_cast<std::int32_t>(a.seq_k - a.seq_q + t) : -1;
      const std::int64_t b = bh / a.q_heads, h = bh % a.q_heads;
      src_of[threadIdx.x] = i < n ? b * a.q_stride[0] + t * a.q_stride[1] + h * a.q_stride[2] : -1;
    }
  }
  if (a.qs_image == nullptr) return;  // block-uniform
  __syncthreads();
  const int chunks = static_cast<int>(a.head_dim / 8);
  const int blocks = (chunks + 7) / 8;  // 64-column blocks of an image row (stored_dim_sm90: head_dim 96 in 2)
  const int total = static_cast<int>(rows - x0 < kCombineRows ? rows - x0 : kCombineRows) * chunks;
  const auto* q = static_cast<const unsigned short*>(a.q);
  auto* image = static_cast<uint4*>(a.qs_image);  // 16-byte chunks
  constexpr int kPerThread = kCombineRows * 32 / kCombineThreads;  // enough for head_dim 256
  uint4 v[kPerThread];
#pragma unroll
  for (int u = 0; u < kPerThread; ++u) {
    const int c = threadIdx.x + u * kCombineThreads;
    const std::int64_t off = c < total ? src_of[c / chunks] : -1;
    v[u] = make_uint4(0, 0, 0, 0);
    if (off >= 0) {
      const unsigned short* src = q + off + (c % chunks) * 8;
      if (a.aligned) {
        v[u] = *reinterpret_cast<const uint4*>(src);
      } else {
        unsigned short e[8];
#pragma unroll
        for (int k = 0; k < 8; ++k) e[k] = src[k];
        v[u] = *reinterpret_cast<const uint4*>(e);
      }
    }
  }
#pragma unroll
  for (int u = 0; u < kPerThread; ++u) {
    const int c = threadIdx.x + u * kCombineThreads;
    if (c < total) {
      const std::int64_t xr = x0 + c / chunks, bh = xr / stride, i = xr % stride;
      const int ch = c % chunks;
      image[((bh * blocks + ch / 8) * stride + i) * 8 + ((ch & 7) ^ (i & 7))] = v[u];
    }
  }
}

std::int64_t round128(std::int64_t x) { return (x + 127) / 128 * 128; }

}  // namespace

std::int64_t stage1_key_chunk(std::int64_t seq_k) { return std::max<std::int64_t>(4096, round128((seq_k + 15) / 16)); }

std::int64_t stage1_key_chunk_sm90(std::int64_t seq_k) {
  const std::int64_t quarter = std::max<std::int64_t>(4096, std::min<std::int64_t>(16384, round128((seq_k + 3) / 4)));
  return std::max(quarter, stage1_key_chunk(seq_k));
}

void launch_stage1(const Stage1Args& args, DType dtype, std::int64_t head_dim, void* stream) {
  SA_CHECK(sm80::supported_head_dim(head_dim), "CUDA selection: no kernel for head_dim ", head_dim,
           " (64, 96, 128 or 256)");
  SA_CHECK(dtype == DType::bf16 || dtype == DType::f16, "CUDA selection: no kernel for dtype ", to_string(dtype),
           " (bfloat16 or float16)");
  // The sm_90a pass 1 reads whole 128-key tiles up to its chunk's end, masking only at row ends.
  SA_CHECK(args.key_chunk > 0 && args.key_chunk % 128 == 0, "CUDA selection: key_chunk ", args.key_chunk,
           " must be a positive multiple of 128");
  SA_CHECK(args.num_chunks >= 1 && args.num_chunks <= sel::kPass1MaxChunks, "CUDA selection: num_chunks ",
           args.num_chunks, " must be in [1, ", sel::kPass1MaxChunks, "]");
  Stage1Args a = args;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const bool bf16 = dtype == DType::bf16;
  const bool sm90 =
      !sm80_forced() && (bf16 ? stage1_sm90_bf16_runnable(head_dim) : stage1_sm90_f16_runnable(head_dim));
  if (sm90) {  // longer chunks (select_args.h): fewer partials than the workspace holds
    a.key_chunk = std::max(a.key_chunk, stage1_key_chunk_sm90(a.seq_k));
    a.num_chunks = (a.seq_k + a.key_chunk - 1) / a.key_chunk;
  }
  a.pass1_order = sel::make_pass1_order(a.seq_q, a.seq_k, a.num_sampled, a.group, a.key_chunk, a.num_chunks, a.causal);
  auto pass = [&](int which) {
    if (sm90) {
      bf16 ? launch_stage1_sm90_bf16(a, head_dim, which, s) : launch_stage1_sm90_f16(a, head_dim, which, s);
    } else {
      bf16 ? launch_stage1_bf16(a, head_dim, which, s) : launch_stage1_f16(a, head_dim, which, s);
    }
  };
  if (!sm90) a.qs_image = nullptr;  // only the sm_90a pass 2 reads the image
  SA_CHECK(!sm90 || (a.qs_image != nullptr && a.qs_pos != nullptr),
           "CUDA selection: the sm_90a pass 2 needs the workspace's query image (qs_image, qs_pos)");
  a.head_dim = head_dim;
  a.sampled_stride = sampled_stride(a.num_sampled);  // the workspace's rows per head (workspace_layout)
  pass(1);
  const std::int64_t rows = a.batch * a.q_heads * a.sampled_stride;
  launch(combine_kernel, dim3(static_cast<unsigned>((rows + kCombineRows - 1) / kCombineRows)),
         dim3(kCombineThreads), 0, s, pdl_allowed(), "stage 1 log-sum-exp combine", a);
  pass(2);
}

}  // namespace sampleattn::cuda
