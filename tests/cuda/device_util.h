// Test helpers for the CUDA tests: ExecOptions for a backend, a GPU check for GTEST_SKIP, owning device
// buffers, and device copies of host tensors that keep the host strides byte for byte (so the GPU sees exactly
// the layout the CPU reference sees, padded and [b, h, s, d] layouts included).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "cuda/attention.h"
#include "sampleattn/config.h"
#include "sampleattn/error.h"
#include "sampleattn/tensor.h"
#include "support/host_tensor.h"

namespace sampleattn::test {

// ExecOptions for `backend` (and a CUDA stream).
inline ExecOptions on(Backend backend, void* stream = nullptr) {
  ExecOptions o;
  o.backend = backend;
  o.cuda_stream = stream;
  return o;
}

inline bool has_gpu() {
  int n = 0;
  const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  cudaGetLastError();
  return ok;
}

// Calls run(c) for each case whose (dtype, head_dim) has a kernel on this GPU and returns how many it left out:
// head_dim 256 needs 160 KiB of shared memory a block, which sm_86 / sm_89 / sm_120 GPUs do not give (the caller
// then skips the test, after the other cases ran, saying so).
template <typename Cases, typename Run>
int run_where_supported(const Cases& cases, Run run) {
  int left_out = 0;
  for (const auto& c : cases) {
    if (cuda::attention_supported(c.dtype, c.head_dim)) {
      run(c);
    } else {
      ++left_out;
    }
  }
  return left_out;
}

class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
    if (cudaMalloc(&ptr_, bytes > 0 ? bytes : 1) != cudaSuccess) throw Error("cudaMalloc failed");
  }
  DeviceBuffer(const void* host, std::size_t bytes) : DeviceBuffer(bytes) { upload(host); }
  template <typename T>
  explicit DeviceBuffer(const std::vector<T>& v) : DeviceBuffer(v.data(), v.size() * sizeof(T)) {}
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }
  void upload(const void* host) {
    if (bytes_ > 0 && cudaMemcpy(ptr_, host, bytes_, cudaMemcpyHostToDevice) != cudaSuccess)
      throw Error("cudaMemcpy to device failed");
  }
  void download(void* host) const {
    if (bytes_ > 0 && cudaMemcpy(host, ptr_, bytes_, cudaMemcpyDeviceToHost) != cudaSuccess)
      throw Error("cudaMemcpy to host failed");
  }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

// A device copy of a host view's whole buffer (extent from shape and strides), same strides.
class DeviceTensor {
 public:
  DeviceTensor(const TensorView& host, std::size_t bytes) : host_(host), buffer_(host.data, bytes) {}
  explicit DeviceTensor(const HostTensor& t) : DeviceTensor(t.view(), t.bytes()) {}
  TensorView view() const {
    TensorView v = host_;
    v.data = buffer_.get();
    v.device = Device::cuda;
    return v;
  }
  void download(HostTensor& t) const { buffer_.download(t.data()); }
  void upload(const HostTensor& t) { buffer_.upload(t.data()); }

 private:
  TensorView host_;
  DeviceBuffer buffer_;
};

// Bytes a contiguous view spans.
inline std::size_t view_bytes(const TensorView& t) {
  std::int64_t extent = 0;
  for (int a = 0; a < 4; ++a) extent += (t.shape[a] - 1) * t.stride[a];
  return static_cast<std::size_t>(extent + 1) * dtype_size(t.dtype);
}

}  // namespace sampleattn::test
