// Stage 1 kernel instances for bf16 (head_dim 64 and 128); the kernels live in select_stage1.cuh.
#include "cuda/select_stage1.cuh"

namespace sampleattn::cuda {

void launch_stage1_bf16(const Stage1Args& args, std::int64_t head_dim, int pass, cudaStream_t stream) {
  if (head_dim == 64) {
    sel::launch_stage1_instance<__nv_bfloat16, 64>(args, pass, stream);
  } else {
    sel::launch_stage1_instance<__nv_bfloat16, 128>(args, pass, stream);
  }
}

}  // namespace sampleattn::cuda
