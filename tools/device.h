// CUDA device memory for the CLI: the subcommands read and generate host tensors, and copy them to the
// device when the backend is cuda. In a build without CUDA every function here reports that no device is
// present (and the copies throw).
#pragma once

#include <cstddef>
#include <string>

#include "sampleattn/tensor.h"

namespace sampleattn::cli {

// Built with the CUDA backend and a device answers.
bool cuda_present();
// The current device has a CUDA kernel for dtype and head_dim (head_dim 256 needs 160 KiB of shared memory a block).
bool cuda_supports(DType dtype, std::int64_t head_dim);
// "NVIDIA H200 (sm_90, driver 13.0)" or "" when no device is present.
std::string gpu_description();
// Waits for all work on the current device (no-op without CUDA).
void device_sync();

// Owns one device allocation; move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }
  void upload(const void* host, std::size_t bytes);
  void download(void* host, std::size_t bytes) const;

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

// A contiguous host view copied into `storage`; returns the device view (same shape and strides).
TensorView upload_tensor(const TensorView& host, DeviceBuffer& storage);

}  // namespace sampleattn::cli
