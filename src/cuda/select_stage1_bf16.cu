// Stage 1 kernel instances for bf16 (head_dim 64, 96, 128 and 256); the kernels live in select_stage1.cuh.
#include "cuda/select_stage1.cuh"
#include "sampleattn/error.h"

namespace sampleattn::cuda {

void launch_stage1_bf16(const Stage1Args& args, std::int64_t head_dim, int pass, cudaStream_t stream) {
  switch (head_dim) {
    case 64: return sel::launch_stage1_instance<__nv_bfloat16, 64>(args, pass, stream);
    case 96: return sel::launch_stage1_instance<__nv_bfloat16, 96>(args, pass, stream);
    case 128: return sel::launch_stage1_instance<__nv_bfloat16, 128>(args, pass, stream);
    case 256: return sel::launch_stage1_instance<__nv_bfloat16, 256>(args, pass, stream);
    default: detail::fail("CUDA selection: no kernel for head_dim ", head_dim);
  }
}

}  // namespace sampleattn::cuda
