// Tile loaders of the fast CPU backend (fast_tiles.h).
#include "cpu/fast_tiles.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "cpu/fast_parallel.h"

namespace sampleattn::cpu::fast {

void load_panel(const Kernels& kern, const TensorView& t, std::int64_t b, std::int64_t h, std::int64_t rows,
                std::int64_t dim_padded, int threads, Panel& panel) {
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
  // Row blocks of 256 keys: large enough to amortise the hand-out, small enough to balance.
  constexpr std::int64_t kBlock = 256;
  parallel_for((rows + kBlock - 1) / kBlock, threads, [&](std::int64_t blk, int) {
    const std::int64_t end = std::min(rows, (blk + 1) * kBlock);
    for (std::int64_t j = blk * kBlock; j < end; ++j)
      kern.convert_row(base + t.offset(b, j, h, 0) * static_cast<std::int64_t>(esize), t.dtype, t.stride[3], d,
                       1.0f, dst + j * dim_padded, dim_padded);
  });
}

void load_query_tile(const Kernels& kern, const TensorView& q, std::int64_t b, std::int64_t h,
                     const std::int64_t* rows, int n, int rows_padded, float scale, float* row_scratch, float* qt) {
  const std::int64_t d = q.head_dim();
  const std::size_t esize = dtype_size(q.dtype);
  const char* base = static_cast<const char*>(q.data);
  for (int i = 0; i < n; ++i) {
    kern.convert_row(base + q.offset(b, rows[i], h, 0) * static_cast<std::int64_t>(esize), q.dtype, q.stride[3], d,
                     scale, row_scratch, d);
    for (std::int64_t c = 0; c < d; ++c) qt[c * rows_padded + i] = row_scratch[c];
  }
  for (std::int64_t c = 0; c < d; ++c)
    std::fill(qt + c * rows_padded + n, qt + (c + 1) * rows_padded, 0.0f);
}

void load_panel_bf16(const TensorView& t, std::int64_t b, std::int64_t h, std::int64_t rows, std::int64_t width,
                     int threads, Panel16& panel) {
  const std::int64_t d = t.head_dim();
  const auto* base = static_cast<const std::uint16_t*>(t.data);
  panel.ld = width;
  std::uint16_t* dst = panel.storage.resize(static_cast<std::size_t>(rows * width));
  panel.data = dst;
  constexpr std::int64_t kBlock = 256;
  parallel_for((rows + kBlock - 1) / kBlock, threads, [&](std::int64_t blk, int) {
    const std::int64_t end = std::min(rows, (blk + 1) * kBlock);
    for (std::int64_t j = blk * kBlock; j < end; ++j) {
      const std::uint16_t* src = base + t.offset(b, j, h, 0);
      std::uint16_t* row = dst + j * width;
      if (t.stride[3] == 1) {
        std::copy(src, src + d, row);
      } else {
        for (std::int64_t c = 0; c < d; ++c) row[c] = src[c * t.stride[3]];
      }
      std::fill(row + d, row + width, std::uint16_t{0});
    }
  });
}

void load_v_pairs(const TensorView& v, std::int64_t b, std::int64_t h, std::int64_t rows, std::int64_t width,
                  int threads, AlignedBuffer<std::uint32_t>& pairs) {
  const std::int64_t d = v.head_dim(), sd = v.stride[3], n = (rows + 1) / 2 + 16;
  const auto* base = static_cast<const std::uint16_t*>(v.data);
  std::uint32_t* dst = pairs.resize(static_cast<std::size_t>(n * width));
  constexpr std::int64_t kBlock = 128;
  parallel_for((n + kBlock - 1) / kBlock, threads, [&](std::int64_t blk, int) {
    const std::int64_t end = std::min(n, (blk + 1) * kBlock);
    for (std::int64_t p = blk * kBlock; p < end; ++p) {
      std::uint32_t* row = dst + p * width;
      std::fill(row, row + width, 0u);
      for (std::int64_t half = 0; half < 2; ++half) {
        const std::int64_t key = 2 * p + half;
        if (key >= rows) break;
        const std::uint16_t* src = base + v.offset(b, key, h, 0);
        for (std::int64_t x = 0; x < d; ++x) row[x] |= static_cast<std::uint32_t>(src[x * sd]) << (16 * half);
      }
    }
  });
}

void load_query_pairs(const TensorView& q, std::int64_t b, std::int64_t h, const std::int64_t* rows, int n,
                      int rows_padded, std::uint32_t* qp) {
  const std::int64_t d = q.head_dim(), pairs = (d + 1) / 2;
  const auto* base = static_cast<const std::uint16_t*>(q.data);
  for (int i = 0; i < n; ++i) {
    const std::uint16_t* src = base + q.offset(b, rows[i], h, 0);
    std::int64_t c = 0;
    if (q.stride[3] == 1) {  // a pair is one 32-bit word of the row
      for (; c < d / 2; ++c) std::memcpy(qp + c * rows_padded + i, src + 2 * c, sizeof(std::uint32_t));
    }
    for (; c < pairs; ++c) {
      const std::uint32_t lo = src[2 * c * q.stride[3]];
      const std::uint32_t hi = 2 * c + 1 < d ? src[(2 * c + 1) * q.stride[3]] : 0u;
      qp[c * rows_padded + i] = lo | hi << 16;
    }
  }
  for (std::int64_t c = 0; c < pairs; ++c) std::fill(qp + c * rows_padded + n, qp + (c + 1) * rows_padded, 0u);
}

}  // namespace sampleattn::cpu::fast
