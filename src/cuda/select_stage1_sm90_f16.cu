// Stage 1 sm_90a kernel instances for f16 (head_dim 64 and 128): select_stage1_sm90.cuh and its two passes.
#include "cuda/select_stage1_sm90.cuh"

namespace sampleattn::cuda {

bool stage1_sm90_f16_runnable(std::int64_t head_dim) {
  if (head_dim == 64) return sel::stage1_sm90_runnable<__half, 64>();
  if (head_dim == 128) return sel::stage1_sm90_runnable<__half, 128>();
  return false;  // other head dims run the sm_80 kernels
}

void launch_stage1_sm90_f16(const Stage1Args& args, std::int64_t head_dim, int pass, cudaStream_t stream) {
  if (head_dim == 64) {
    sel::launch_stage1_sm90_instance<__half, 64>(args, pass, stream);
  } else {
    sel::launch_stage1_sm90_instance<__half, 128>(args, pass, stream);
  }
}

}  // namespace sampleattn::cuda
