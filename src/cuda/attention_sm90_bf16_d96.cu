// Kernel instance: sm_90a attention for bf16 inputs at head_dim 96 (attention_kernel_sm90.cuh).
#include "cuda/attention_instances.h"
#include "cuda/attention_kernel_sm90.cuh"

namespace sampleattn::cuda {

cudaError_t launch_attention_sm90_bf16_d96(const KernelArgs& args, std::int64_t batch, cudaStream_t stream) {
  return sm90::launch_attention_sm90<__nv_bfloat16, 96>(args, batch, stream);
}

bool attention_sm90_bf16_d96_runnable() { return sm90::attention_sm90_runnable<__nv_bfloat16, 96>(); }

}  // namespace sampleattn::cuda
