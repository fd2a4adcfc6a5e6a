// launch_stage1 (select_args.h): the one selector from (arch, dtype, head_dim) to a stage 1 kernel instance
// (sm_90a wgmma kernels on compute capability 9.0 when the binary has them, the sm_80 mma.sync kernels
// elsewhere), and the small kernel between the two passes that combines pass 1's per-chunk partials into each
// sampled row's log-sum-exp.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

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

// One thread per (head bh, sampled row i): lse2 = M + log2 sum_c l_c 2^(m_c - M) over the chunks the row
// sees (chunk c starts at key c * key_chunk). NaN in any partial stays NaN.
__global__ void combine_kernel(const Stage1Args a) {
  pdl_wait();  // pass 1's partials (pdl.cuh)
  pdl_trigger();
  const std::int64_t n = a.num_sampled, rows = a.batch * a.q_heads * n;
  const std::int64_t x = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (x >= rows) return;
  const std::int64_t i = x % n;
  const std::int64_t end = a.causal ? a.seq_k - a.seq_q + sel::sampled_row(i, a.seq_q, n, a.inv_sampled) + 1 : a.seq_k;
  const std::int64_t chunks = (end + a.key_chunk - 1) / a.key_chunk;
  const std::int64_t stride = a.batch * a.q_heads * n;
  float m = -INFINITY;
  for (std::int64_t c = 0; c < chunks; ++c) m = fmaxf(m, a.part_m[c * stride + x]);
  const float m_use = m == -INFINITY ? 0.0f : m;
  float l = 0.0f;
  for (std::int64_t c = 0; c < chunks; ++c) l += a.part_l[c * stride + x] * exp2f(a.part_m[c * stride + x] - m_use);
  a.lse2[x] = m + log2f(l);
}

std::int64_t round128(std::int64_t x) { return (x + 127) / 128 * 128; }

}  // namespace

std::int64_t stage1_key_chunk(std::int64_t seq_k) { return std::max<std::int64_t>(4096, round128((seq_k + 15) / 16)); }

std::int64_t stage1_key_chunk_sm90(std::int64_t seq_k) {
  const std::int64_t quarter = std::max<std::int64_t>(4096, std::min<std::int64_t>(16384, round128((seq_k + 3) / 4)));
  return std::max(quarter, stage1_key_chunk(seq_k));
}

void launch_stage1(const Stage1Args& args, DType dtype, std::int64_t head_dim, void* stream) {
  SA_CHECK(head_dim == 64 || head_dim == 128, "CUDA selection: no kernel for head_dim ", head_dim, " (64 or 128)");
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
  pass(1);
  const std::int64_t rows = a.batch * a.q_heads * a.num_sampled;
  launch(combine_kernel, dim3(static_cast<unsigned>((rows + 255) / 256)), dim3(256), 0, s, pdl_allowed(),
         "stage 1 log-sum-exp combine", a);
  pass(2);
}

}  // namespace sampleattn::cuda
