// Stage 1 sm_90a kernel instances for f16 (head_dim 64, 96, 128 and 256): select_stage1_sm90.cuh and its two passes.
#include "cuda/select_stage1_sm90.cuh"
#include "sampleattn/error.h"

namespace sampleattn::cuda {

bool stage1_sm90_f16_runnable(std::int64_t head_dim) {
  if (head_dim == 64) return sel::stage1_sm90_runnable<__half, 64>();
  if (head_dim == 96) return sel::stage1_sm90_runnable<__half, 96>();
  if (head_dim == 128) return sel::stage1_sm90_runnable<__half, 128>();
  if (head_dim == 256) return sel::stage1_sm90_runnable<__half, 256>();
  return false;
}

void launch_stage1_sm90_f16(const Stage1Args& args, std::int64_t head_dim, int pass, cudaStream_t stream) {
  switch (head_dim) {
    case 64: return sel::launch_stage1_sm90_instance<__half, 64>(args, pass, stream);
    case 96: return sel::launch_stage1_sm90_instance<__half, 96>(args, pass, stream);
    case 128: return sel::launch_stage1_sm90_instance<__half, 128>(args, pass, stream);
    case 256: return sel::launch_stage1_sm90_instance<__half, 256>(args, pass, stream);
    default: detail::fail("CUDA selection: no sm_90a kernel for head_dim ", head_dim);
  }
}

}  // namespace sampleattn::cuda
