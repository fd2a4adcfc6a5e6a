// Whether sm_90a kernels run on the current device: compute capability 9.0 and every kernel given built from
// sm_90a code (a build without sm_90a holds only their empty bodies, e.g. JIT-compiled sm_80 PTX, which must
// never run). Launchers ask at every call, so the answer is cached per device; one Sm90Check (a function-local
// static) per kernel family.
#pragma once

#include <cuda_runtime.h>

#include <atomic>

namespace sampleattn::cuda {

class Sm90Check {
 public:
  template <typename... Kernels>
  bool runnable(Kernels... kernels) {
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return false;
    const bool cacheable = device >= 0 && device < kMaxDevices;
    if (cacheable) {
      const int known = cache_[device].load(std::memory_order_relaxed);
      if (known != 0) return known == 2;
    }
    int major = 0, minor = 0;
    bool ok = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
              cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) == cudaSuccess &&
              major == 9 && minor == 0;
    ((ok = ok && built_for_sm90a(reinterpret_cast<const void*>(kernels))), ...);
    if (cacheable) cache_[device].store(ok ? 2 : 1, std::memory_order_relaxed);
    return ok;
  }

 private:
  static bool built_for_sm90a(const void* kernel) {
    cudaFuncAttributes attr{};
    return cudaFuncGetAttributes(&attr, kernel) == cudaSuccess && attr.ptxVersion >= 90 && attr.binaryVersion == 90;
  }

  static constexpr int kMaxDevices = 64;
  std::atomic<int> cache_[kMaxDevices]{};  // 0 unknown, 1 no, 2 yes
};

}  // namespace sampleattn::cuda
