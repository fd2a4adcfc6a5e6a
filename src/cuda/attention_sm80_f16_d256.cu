// Kernel instance: sm_80-class attention for f16 inputs at head_dim 256 (attention_kernel_sm80.cuh).
#include "cuda/attention_instances.h"
#include "cuda/attention_kernel_sm80.cuh"

namespace sampleattn::cuda {

cudaError_t launch_attention_sm80_f16_d256(const KernelArgs& args, std::int64_t batch, cudaStream_t stream) {
  return sm80::launch_attention_sm80<__half, 256>(args, batch, stream);
}

}  // namespace sampleattn::cuda
