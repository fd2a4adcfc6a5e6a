// Programmatic dependent launch (PDL, compute capability 9.0 and newer) for the chain of selection kernels:
// every kernel after the first is launched with programmatic stream serialization, so the GPU may schedule
// its blocks while its predecessor's last blocks still run (and skips the launch gap between the two).
// Contract of a kernel launched this way: it calls pdl_wait() before it reads or writes anything a
// predecessor in the stream reads or writes, and it always calls it (also when it reads nothing of theirs), so
// that the completion of a kernel still implies the completion of every kernel before it. pdl_trigger()
// lets the next kernel be scheduled once every block of this one has called it (or exited); a dependent
// kernel calls it after its pdl_wait(), so that only the next kernel's blocks wait on the SMs (called first,
// the whole chain of small stage-2 kernels was scheduled at once: 8K selection 0.160 -> 0.167 ms).
// Kernels get the launch attribute only where their code was built for sm_90 or newer (so that pdl_wait is
// compiled in, pdl_allowed): an sm_80 build running on a Hopper GPU is launched the plain way, as on older GPUs.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "cuda/check.h"

namespace sampleattn::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Whether this library's kernels may be launched with PDL on the current device: compute capability 9.0 or
// newer, running code that was built for sm_90 or newer (every kernel file is built with the same -gencode
// flags, so one probe kernel answers for all). Cached per device (pdl.cu).
bool pdl_allowed();

// kernel<<<grid, block, smem, stream>>>(args...), with the PDL attribute when `pdl` is set; checked like every
// launch (check_launch names `what`).
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream, bool pdl,
            const char* what, Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = pdl ? 1 : 0;
  const cudaError_t err = cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
  if (err != cudaSuccess) cudaGetLastError();  // as check_launch: the next launch must not report it again
  check_cuda(err, what);
}

}  // namespace sampleattn::cuda
