// launch_stage1 (select_args.h): the one selector from (dtype, head_dim) to a stage 1 kernel instance.
#include <cuda_runtime.h>

#include "cuda/select_args.h"
#include "sampleattn/error.h"

namespace sampleattn::cuda {

void launch_stage1_bf16(const Stage1Args& args, std::int64_t head_dim, cudaStream_t stream);
void launch_stage1_f16(const Stage1Args& args, std::int64_t head_dim, cudaStream_t stream);

void launch_stage1(const Stage1Args& args, DType dtype, std::int64_t head_dim, void* stream) {
  SA_CHECK(head_dim == 64 || head_dim == 128, "CUDA selection: no kernel for head_dim ", head_dim,
           " (64 or 128)");
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case DType::bf16: launch_stage1_bf16(args, head_dim, s); break;
    case DType::f16: launch_stage1_f16(args, head_dim, s); break;
    default: detail::fail("CUDA selection: no kernel for dtype ", to_string(dtype), " (bfloat16 or float16)");
  }
}

}  // namespace sampleattn::cuda
