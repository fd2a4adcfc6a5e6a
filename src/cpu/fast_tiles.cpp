// Tile loaders of the fast CPU backend (fast_tiles.h).
#include "cpu/fast_tiles.h"

#include <algorithm>
#include <new>

#include "cpu/fast_parallel.h"

namespace sampleattn::cpu::fast {

void FloatBuffer::Free::operator()(float* p) const { ::operator delete[](p, std::align_val_t(64)); }

float* FloatBuffer::resize(std::size_t n) {
  if (n > size_ || !data_) {
    data_.reset(static_cast<float*>(::operator new[](std::max<std::size_t>(n, 1) * sizeof(float), std::align_val_t(64))));
    size_ = n;
  }
  return data_.get();
}

void load_panel(const TensorView& t, std::int64_t b, std::int64_t h, std::int64_t rows, std::int64_t dim_padded,
                int threads, Panel& panel) {
  const std::int64_t d = t.head_dim();
  const std::size_t esize = dtype_size(t.dtype);
  const char* base = static_cast<const char*>(t.data);
  if (t.dtype == DType::f32 && t.stride[3] == 1 && d == dim_padded) {
    panel.data = reinterpret_cast<const float*>(base) + t.offset(b, 0, h, 0);
    panel.ld = t.stride[1];
    return;
  }
  panel.ld = dim_padded;
  float* dst = panel.storage.resize(static_cast<std::size_t>(rows * dim_padded));
  panel.data = dst;
  const Kernels& kern = kernels();
  // Row blocks of 256 keys: large enough to amortise the hand-out, small enough to balance.
  constexpr std::int64_t kBlock = 256;
  parallel_for((rows + kBlock - 1) / kBlock, threads, [&](std::int64_t blk, int) {
    const std::int64_t end = std::min(rows, (blk + 1) * kBlock);
    for (std::int64_t j = blk * kBlock; j < end; ++j)
      kern.convert_row(base + t.offset(b, j, h, 0) * static_cast<std::int64_t>(esize), t.dtype, t.stride[3], d,
                       1.0f, dst + j * dim_padded, dim_padded);
  });
}

void load_query_tile(const TensorView& q, std::int64_t b, std::int64_t h, const std::int64_t* rows, int n,
                     int rows_padded, float scale, float* row_scratch, float* qt) {
  const std::int64_t d = q.head_dim();
  const std::size_t esize = dtype_size(q.dtype);
  const char* base = static_cast<const char*>(q.data);
  const Kernels& kern = kernels();
  for (int i = 0; i < n; ++i) {
    kern.convert_row(base + q.offset(b, rows[i], h, 0) * static_cast<std::int64_t>(esize), q.dtype, q.stride[3], d,
                     scale, row_scratch, d);
    for (std::int64_t c = 0; c < d; ++c) qt[c * rows_padded + i] = row_scratch[c];
  }
  for (std::int64_t c = 0; c < d; ++c)
    std::fill(qt + c * rows_padded + n, qt + (c + 1) * rows_padded, 0.0f);
}

}  // namespace sampleattn::cpu::fast
