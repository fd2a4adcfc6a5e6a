// The compiled attention kernel instances (one .cu file each: attention_sm80_<dtype>_d<head_dim>.cu), so
// that each compiles on its own and the dispatch (attention_launch.cu) needs no kernel code.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/attention_args.h"

namespace sampleattn::cuda {

cudaError_t launch_attention_sm80_bf16_d64(const KernelArgs& args, std::int64_t batch, cudaStream_t stream);
cudaError_t launch_attention_sm80_bf16_d128(const KernelArgs& args, std::int64_t batch, cudaStream_t stream);
cudaError_t launch_attention_sm80_f16_d64(const KernelArgs& args, std::int64_t batch, cudaStream_t stream);
cudaError_t launch_attention_sm80_f16_d128(const KernelArgs& args, std::int64_t batch, cudaStream_t stream);

}  // namespace sampleattn::cuda
