// Views whose element offsets pass 2^32 without the memory behind them: a host buffer reserved with
// mmap(MAP_NORESERVE), whose pages are allocated only when touched, and [batch, seq, heads, d] views with
// chosen batch and seq strides over a buffer (heads and d stay packed, so each (batch, seq) row of
// heads * d elements is contiguous). The offset tests use two shapes of it:
//   - q and out with a batch stride of 2^32 + 4096 elements: batch 1 starts past 2^32 elements;
//   - k and v with batches interleaved in rows 2^22 + 64 elements apart: row 1024 starts past 2^32.
// So a batch offset and a row offset each overflow both int32 and uint32, while a test touches only a few
// kilobytes per row.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "sampleattn/tensor.h"

namespace sampleattn::test {

constexpr std::int64_t kSpacedBatchStride = (std::int64_t{1} << 32) + 4096;
constexpr std::int64_t kSpacedRowStride = (std::int64_t{1} << 22) + 64;

class ReservedBuffer {
 public:
  explicit ReservedBuffer(std::size_t bytes);  // throws sampleattn::Error when the reservation fails
  ~ReservedBuffer();
  ReservedBuffer(const ReservedBuffer&) = delete;
  ReservedBuffer& operator=(const ReservedBuffer&) = delete;
  void* data() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

// A [batch, seq, heads, head_dim] view with the given batch and seq strides (head stride head_dim, unit
// element stride), and the number of elements it spans.
TensorView spaced_view(void* data, DType dtype, const std::array<std::int64_t, 4>& shape, std::int64_t batch_stride,
                       std::int64_t seq_stride, Device device = Device::cpu);
std::int64_t spanned_elements(const TensorView& t);

// Element-wise copy between two host views of the same shape and dtype.
void copy_view(const TensorView& from, const TensorView& to);

}  // namespace sampleattn::test
