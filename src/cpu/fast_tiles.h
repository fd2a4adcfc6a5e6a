// Tile loaders of the fast CPU backend: aligned scratch buffers, K/V panels (one batch and KV head's rows as
// fp32, converted once and shared by every query head of the group) and query tiles (rows of Q converted,
// scaled and transposed to Q^T for the kernels in fast_kernels.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "cpu/fast_kernels.h"
#include "sampleattn/tensor.h"

namespace sampleattn::cpu::fast {

// Uninitialised floats, 64-byte aligned. resize() keeps nothing.
class FloatBuffer {
 public:
  float* resize(std::size_t n);
  float* data() const { return data_.get(); }

 private:
  struct Free {
    void operator()(float* p) const;
  };
  std::unique_ptr<float, Free> data_;
  std::size_t size_ = 0;
};

// Rows [0, rows) of one (batch, head) of a K or V view as fp32: row j at data + j * ld, with at least
// dim_padded readable floats per row (zeros past head_dim). f32 views with unit element stride and
// head_dim == dim_padded are used in place; everything else is converted (in parallel) into storage.
struct Panel {
  const float* data = nullptr;
  std::int64_t ld = 0;
  FloatBuffer storage;
};
void load_panel(const TensorView& t, std::int64_t b, std::int64_t h, std::int64_t rows, std::int64_t dim_padded,
                int threads, Panel& panel);

// Q^T (d, rows_padded) = the rows rows[0..n) of (batch b, head h) of q times `scale`; columns n..rows_padded
// are zero. row_scratch holds at least d floats.
void load_query_tile(const TensorView& q, std::int64_t b, std::int64_t h, const std::int64_t* rows, int n,
                     int rows_padded, float scale, float* row_scratch, float* qt);

}  // namespace sampleattn::cpu::fast
