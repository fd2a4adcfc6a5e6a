// The compiled attention kernel instances (one .cu file each: attention_sm{80,90}_<dtype>_d<head_dim>.cu),
// so that each compiles on its own and the dispatch (attention_launch.cu) needs no kernel code. The sm_90
// instances run only where their *_runnable() says so (compute capability 9.0, sm_90a binary present).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/attention_args.h"

namespace sampleattn::cuda {

cudaError_t launch_attention_sm80_bf16_d64(const KernelArgs& args, std::int64_t batch, cudaStream_t stream);
cudaError_t launch_attention_sm80_bf16_d96(const KernelArgs& args, std::int64_t batch, cudaStream_t stream);
cudaError_t launch_attention_sm80_bf16_d128(const KernelArgs& args, std::int64_t batch, cudaStream_t stream);
cudaError_t launch_attention_sm80_bf16_d256(const KernelArgs& args, std::int64_t batch, cudaStream_t stream);
cudaError_t launch_attention_sm80_f16_d64(const KernelArgs& args, std::int64_t batch, cudaStream_t stream);
cudaError_t launch_attention_sm80_f16_d96(const KernelArgs& args, std::int64_t batch, cudaStream_t stream);
cudaError_t launch_attention_sm80_f16_d128(const KernelArgs& args, std::int64_t batch, cudaStream_t stream);
cudaError_t launch_attention_sm80_f16_d256(const KernelArgs& args, std::int64_t batch, cudaStream_t stream);

cudaError_t launch_attention_sm90_bf16_d64(const KernelArgs& args, std::int64_t batch, cudaStream_t stream);
cudaError_t launch_attention_sm90_bf16_d96(const KernelArgs& args, std::int64_t batch, cudaStream_t stream);
cudaError_t launch_attention_sm90_bf16_d128(const KernelArgs& args, std::int64_t batch, cudaStream_t stream);
cudaError_t launch_attention_sm90_f16_d64(const KernelArgs& args, std::int64_t batch, cudaStream_t stream);
cudaError_t launch_attention_sm90_f16_d96(const KernelArgs& args, std::int64_t batch, cudaStream_t stream);
cudaError_t launch_attention_sm90_f16_d128(const KernelArgs& args, std::int64_t batch, cudaStream_t stream);
cudaError_t launch_attention_sm90_bf16_d256(const KernelArgs& args, std::int64_t batch, cudaStream_t stream);
cudaError_t launch_attention_sm90_f16_d256(const KernelArgs& args, std::int64_t batch, cudaStream_t stream);
bool attention_sm90_bf16_d64_runnable();
bool attention_sm90_bf16_d96_runnable();
bool attention_sm90_bf16_d128_runnable();
bool attention_sm90_f16_d64_runnable();
bool attention_sm90_f16_d96_runnable();
bool attention_sm90_f16_d128_runnable();
bool attention_sm90_bf16_d256_runnable();
bool attention_sm90_f16_d256_runnable();

}  // namespace sampleattn::cuda
