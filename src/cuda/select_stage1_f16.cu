// Stage 1 kernel instances for f16 (head_dim 64, 96, 128 and 256); the kernels live in select_stage1.cuh.
#include "cuda/select_stage1.cuh"
#include "sampleattn/error.h"

namespace sampleattn::cuda {

void launch_stage1_f16(const Stage1Args& args, std::int64_t head_dim, int pass, cudaStream_t stream) {
  switch (head_dim) {
    case 64: return sel::launch_stage1_instance<__half, 64>(args, pass, stream);
    case 96: return sel::launch_stage1_instance<__half, 96>(args, pass, stream);
    case 128: return sel::launch_stage1_instance<__half, 128>(args, pass, stream);
    case 256: return sel::launch_stage1_instance<__half, 256>(args, pass, stream);
    default: detail::fail("CUDA selection: no kernel for head_dim ", head_dim);
  }
}

}  // namespace sampleattn::cuda
