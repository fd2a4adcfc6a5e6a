// Tile loaders of the fast CPU backend: aligned scratch buffers, K/V panels (one batch and KV head's rows as
// fp32, or bf16 for the bf16 path, converted once and shared by every query head of the group) and query
// tiles (rows of Q converted, scaled and transposed to Q^T, or paired, for the kernels in fast_kernels.h).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

#include "cpu/fast_kernels.h"
#include "sampleattn/tensor.h"

namespace sampleattn::cpu::fast {

// Uninitialised elements, 64-byte aligned. resize() keeps nothing.
template <typename T>
class AlignedBuffer {
 public:
  T* resize(std::size_t n) {
    if (n > size_ || !data_) {
      data_.reset(static_cast<T*>(::operator new[](std::max<std::size_t>(n, 1) * sizeof(T), std::align_val_t(64))));
      size_ = n;
    }
    return data_.get();
  }
  T* data() const { return data_.get(); }

 private:
  struct Free {
    void operator()(T* p) const { ::operator delete[](p, std::align_val_t(64)); }
  };
  std::unique_ptr<T, Free> data_;
  std::size_t size_ = 0;
};
using FloatBuffer = AlignedBuffer<float>;

// Rows [0, rows) of one (batch, head) of a K or V view as fp32: row j at data + j * ld, with at least
// dim_padded readable floats per row (zeros past head_dim). f32 views with unit element stride and
// head_dim == dim_padded are used in place; everything else is converted (in parallel) into storage.
struct Panel {
  const float* data = nullptr;
  std::int64_t ld = 0;
  FloatBuffer storage;
};
void load_panel(const Kernels& kern, const TensorView& t, std::int64_t b, std::int64_t h, std::int64_t rows,
                std::int64_t dim_padded, int threads, Panel& panel);

// Q^T (d, rows_padded) = the rows rows[0..n) of (batch b, head h) of q times `scale`; columns n..rows_padded
// are zero. row_scratch holds at least d floats.
void load_query_tile(const Kernels& kern, const TensorView& q, std::int64_t b, std::int64_t h,
                     const std::int64_t* rows, int n, int rows_padded, float scale, float* row_scratch, float* qt);

// The bf16 path (Kernels::attend_chunk_bf16). Rows [0, rows) of one (batch, head) of a bf16 K or V view as
// bf16 bits, row j at data + j * ld, `width` (>= head_dim) elements per row, zeros past head_dim.
struct Panel16 {
  const std::uint16_t* data = nullptr;
  std::int64_t ld = 0;
  AlignedBuffer<std::uint16_t> storage;
};
void load_panel_bf16(const TensorView& t, std::int64_t b, std::int64_t h, std::int64_t rows, std::int64_t width,
                     int threads, Panel16& panel);

// V of one (batch, head) of a bf16 view as pairs of keys (KeyChunk::v_pairs): ceil(rows / 2) + 16 rows of
// `width` (>= head_dim) words, row p word x = V[2p][x] | V[2p + 1][x] << 16, zero past head_dim, past key
// rows - 1 and in the 16 padding rows.
void load_v_pairs(const TensorView& v, std::int64_t b, std::int64_t h, std::int64_t rows, std::int64_t width,
                  int threads, AlignedBuffer<std::uint32_t>& pairs);

// Q^T as bf16 pairs, (ceil(d / 2), rows_padded) words, of the rows rows[0..n) of (batch b, head h) of a bf16
// q: word (c, i) = Q[i][2c] | Q[i][2c + 1] << 16, zero past d and in columns n..rows_padded.
void load_query_pairs(const TensorView& q, std::int64_t b, std::int64_t h, const std::int64_t* rows, int n,
                      int rows_padded, std::uint32_t* qp);

}  // namespace sampleattn::cpu::fast
