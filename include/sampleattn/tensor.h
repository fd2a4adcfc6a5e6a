// Tensor views: a data pointer plus dtype, device, shape [batch, seq, heads, head_dim] and int64 element
// strides. Views never own memory; non-contiguous strides (e.g. a [batch, heads, seq, dim] buffer, or a
// slice of a fused QKV projection) are allowed.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace sampleattn {

enum class DType : std::uint8_t { f32, f16, bf16 };
enum class Device : std::uint8_t { cpu, cuda };

const char* to_string(DType dtype);
const char* to_string(Device device);
std::size_t dtype_size(DType dtype);

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::f32;
  Device device = Device::cpu;
  int device_index = 0;
  std::array<std::int64_t, 4> shape{};   // [batch, seq, heads, head_dim]
  std::array<std::int64_t, 4> stride{};  // element strides of the four axes

  std::int64_t batch() const { return shape[0]; }
  std::int64_t seq() const { return shape[1]; }
  std::int64_t heads() const { return shape[2]; }
  std::int64_t head_dim() const { return shape[3]; }
  std::int64_t offset(std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d) const {
    return b * stride[0] + s * stride[1] + h * stride[2] + d * stride[3];
  }

  // Row-major [batch, seq, heads, head_dim] view over `data`.
  static TensorView contiguous(void* data, DType dtype, std::int64_t batch, std::int64_t seq,
                               std::int64_t heads, std::int64_t head_dim, Device device = Device::cpu);
};

}  // namespace sampleattn
