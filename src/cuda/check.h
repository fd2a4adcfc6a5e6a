// CUDA error handling for the CUDA backend: every runtime call and every kernel launch goes through these,
// turning a failure into sampleattn::Error that names the call and the CUDA error string (never exit/abort).
#pragma once

#include <cuda_runtime.h>

#include "sampleattn/error.h"

namespace sampleattn::cuda {

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    detail::fail("CUDA error in ", what, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
}

// After every <<<...>>>: a bad configuration or an earlier asynchronous fault surfaces here, naming the kernel.
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

}  // namespace sampleattn::cuda

#define SA_CUDA_CHECK(call) ::sampleattn::cuda::check_cuda((call), #call)
