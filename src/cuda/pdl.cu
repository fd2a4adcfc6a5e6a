// pdl_allowed (pdl.cuh): one probe kernel built with the same -gencode flags as every other kernel file.
#include <cuda_runtime.h>

#include <atomic>

#include "cuda/pdl.cuh"

namespace sampleattn::cuda {
namespace {

__global__ void pdl_probe_kernel() { pdl_wait(); }

constexpr int kMaxDevices = 64;
std::atomic<int> g_pdl[kMaxDevices];  // 0 unknown, 1 no, 2 yes

}  // namespace

bool pdl_allowed() {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  const bool cacheable = device >= 0 && device < kMaxDevices;
  if (cacheable) {
    const int known = g_pdl[device].load(std::memory_order_relaxed);
    if (known != 0) return known == 2;
  }
  int major = 0;
  cudaFuncAttributes attr{};
  const bool ok = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
                  major >= 9 &&
                  cudaFuncGetAttributes(&attr, reinterpret_cast<const void*>(pdl_probe_kernel)) == cudaSuccess &&
                  attr.ptxVersion >= 90 && attr.binaryVersion >= 90;
  if (!ok) cudaGetLastError();  // a failed query must not surface at the next launch
  if (cacheable) g_pdl[device].store(ok ? 2 : 1, std::memory_order_relaxed);
  return ok;
}

}  // namespace sampleattn::cuda
