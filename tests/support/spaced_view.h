// Views whose element offsets pass 2^31 without the memory behind them: a host buffer reserved with
// mmap(MAP_NORESERVE), whose pages are allocated only when touched, and [batch, seq, heads, d] views over a
// buffer with a chosen batch stride (each batch a contiguous [seq, heads, d] block). With a batch stride of
// 2^31 + 4096 elements, batch 1's offsets exceed int32 (and its byte offsets 2^32 for 16-bit types) while the
// test touches only a few kilobytes per batch.
#pragma once

#include <cstddef>
#include <cstdint>

#include "sampleattn/tensor.h"

namespace sampleattn::test {

class ReservedBuffer {
 public:
  explicit ReservedBuffer(std::size_t bytes);
  ~ReservedBuffer();
  ReservedBuffer(const ReservedBuffer&) = delete;
  ReservedBuffer& operator=(const ReservedBuffer&) = delete;
  void* data() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

// Elements a spaced view of `batch` batches needs: (batch - 1) * batch_stride + seq * heads * head_dim.
std::int64_t spaced_elements(std::int64_t batch, std::int64_t seq, std::int64_t heads, std::int64_t head_dim,
                             std::int64_t batch_stride);

TensorView spaced_view(void* data, DType dtype, std::int64_t batch, std::int64_t seq, std::int64_t heads,
                       std::int64_t head_dim, std::int64_t batch_stride, Device device = Device::cpu);

// Element-wise copy between two host views of the same shape and dtype.
void copy_view(const TensorView& from, const TensorView& to);

}  // namespace sampleattn::test
