// Kernel instance: sm_80-class attention for bf16 inputs at head_dim 96 (attention_kernel_sm80.cuh).
#include "cuda/attention_instances.h"
#include "cuda/attention_kernel_sm80.cuh"

namespace sampleattn::cuda {

cudaError_t launch_attention_sm80_bf16_d96(const KernelArgs& args, std::int64_t batch, cudaStream_t stream) {
  return sm80::launch_attention_sm80<__nv_bfloat16, 96>(args, batch, stream);
}

}  // namespace sampleattn::cuda
