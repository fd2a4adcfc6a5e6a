// fill_i32 (fill.h).
#include "cuda/fill.h"

#include <cuda_runtime.h>

#include "cuda/check.h"

namespace sampleattn::cuda {
namespace {

__global__ void fill_i32_kernel(std::int32_t* dst, std::int64_t n, std::int32_t value) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = value;
}

}  // namespace

void fill_i32(std::int32_t* dst, std::int64_t n, std::int32_t value, void* stream) {
  if (n <= 0) return;
  constexpr int kThreads = 256;
  const std::int64_t blocks = (n + kThreads - 1) / kThreads;
  fill_i32_kernel<<<static_cast<unsigned>(blocks < 1024 ? blocks : 1024), kThreads, 0,
                    static_cast<cudaStream_t>(stream)>>>(dst, n, value);
  check_launch("fill_i32_kernel");
}

}  // namespace sampleattn::cuda
