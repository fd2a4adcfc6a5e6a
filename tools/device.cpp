// CUDA device memory for the CLI (device.h).
#include "device.h"

#include <utility>

#include "sampleattn/error.h"
#ifdef SAMPLEATTN_WITH_CUDA
#include <cuda_runtime.h>

#include "cuda/attention.h"
#include "cuda/backend.h"
#endif

namespace sampleattn::cli {
namespace {

std::size_t view_bytes(const TensorView& t) {
  return static_cast<std::size_t>(t.shape[0] * t.shape[1] * t.shape[2] * t.shape[3]) * dtype_size(t.dtype);
}

#ifdef SAMPLEATTN_WITH_CUDA
void check(cudaError_t e, const char* what) {
  SA_CHECK(e == cudaSuccess, "CUDA ", what, " failed: ", cudaGetErrorString(e));
}
#endif

}  // namespace

#ifdef SAMPLEATTN_WITH_CUDA

bool cuda_present() { return cuda::available(); }
bool cuda_supports(DType dtype, std::int64_t head_dim) { return cuda::attention_supported(dtype, head_dim); }

std::string gpu_description() {
  if (!cuda_present()) return "";
  int device = 0, driver = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&device) != cudaSuccess || cudaGetDeviceProperties(&prop, device) != cudaSuccess) return "";
  cudaDriverGetVersion(&driver);
  return std::string(prop.name) + " (sm_" + std::to_string(prop.major * 10 + prop.minor) + ", driver " +
         std::to_string(driver / 1000) + "." + std::to_string(driver % 1000 / 10) + ")";
}

void device_sync() {
  if (cuda_present()) check(cudaDeviceSynchronize(), "device synchronize");
}

DeviceBuffer::DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
  check(cudaMalloc(&data_, bytes == 0 ? 1 : bytes), "cudaMalloc");
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) cudaFree(data_);
}

void DeviceBuffer::upload(const void* host, std::size_t bytes) {
  SA_CHECK(bytes <= bytes_, "device upload of ", bytes, " bytes into a buffer of ", bytes_);
  check(cudaMemcpy(data_, host, bytes, cudaMemcpyHostToDevice), "copy to the device");
}

void DeviceBuffer::download(void* host, std::size_t bytes) const {
  SA_CHECK(bytes <= bytes_, "device download of ", bytes, " bytes from a buffer of ", bytes_);
  check(cudaMemcpy(host, data_, bytes, cudaMemcpyDeviceToHost), "copy from the device");
}

#else

bool cuda_present() { return false; }
bool cuda_supports(DType, std::int64_t) { return false; }
std::string gpu_description() { return ""; }
void device_sync() {}
DeviceBuffer::DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
  detail::fail("backend cuda: this build of sampleattn has no CUDA backend");
}
DeviceBuffer::~DeviceBuffer() = default;
void DeviceBuffer::upload(const void*, std::size_t) { detail::fail("no CUDA backend in this build"); }
void DeviceBuffer::download(void*, std::size_t) const { detail::fail("no CUDA backend in this build"); }

#endif

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  std::swap(data_, other.data_);
  std::swap(bytes_, other.bytes_);
  return *this;
}

TensorView upload_tensor(const TensorView& host, DeviceBuffer& storage) {
  const std::size_t bytes = view_bytes(host);
  storage = DeviceBuffer(bytes);
  storage.upload(host.data, bytes);
  TensorView d = host;
  d.data = storage.data();
  d.device = Device::cuda;
  return d;
}

}  // namespace sampleattn::cli
