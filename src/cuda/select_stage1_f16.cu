// Stage 1 kernel instances for f16 (head_dim 64 and 128); the kernels live in select_stage1.cuh.
#include "cuda/select_stage1.cuh"

namespace sampleattn::cuda {

void launch_stage1_f16(const Stage1Args& args, std::int64_t head_dim, int pass, cudaStream_t stream) {
  if (head_dim == 64) {
    sel::launch_stage1_instance<__half, 64>(args, pass, stream);
  } else {
    sel::launch_stage1_instance<__half, 128>(args, pass, stream);
  }
}

}  // namespace sampleattn::cuda
