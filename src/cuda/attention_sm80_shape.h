// Tile shape of the sm_80 attention kernel per head_dim (attention_kernel_sm80.cuh), readable on the host so
// that the launcher knows the query rows per block and the shared memory an instance needs before it launches.
//   d 64, 96, 128: 128 query rows per block, 4 warps x 32 rows (8 x 16 with SAMPLEATTN_SM80_WARP_ROWS=16, Q then
//                  in registers), Q re-read from shared memory per K tile.
//   d 256: 64 query rows per block, 4 warps x 16 rows (O alone is 128 registers a thread), Q from shared memory;
//          160 KiB of shared memory, so it runs where a block may opt in to that much (A100, H100 / H200; not
//          the 99 KiB of sm_86 / sm_89 GPUs).
// Rows of 64, 128 and 256 elements are stored swizzled (chunk c of row r at c ^ (r % 8)); rows of 96 elements
// (12 chunks, which an XOR with r % 8 would carry past the row) are padded to 104 elements instead: the 8 rows of
// an ldmatrix then start 208 bytes apart, in 8 different groups of 4 banks.
#pragma once

#include <cstdint>

namespace sampleattn::cuda::sm80 {

#ifndef SAMPLEATTN_SM80_WARP_ROWS
#define SAMPLEATTN_SM80_WARP_ROWS 32
#endif

struct Shape {
  int block_m;    // query rows per thread block
  int warp_rows;  // query rows per warp (16 or 32)
  int block_n;    // keys per K / V tile
  int row_elems;  // shared-memory elements per tile row (head_dim, or head_dim + 8 when padded)
  bool swizzled;  // rows stored swizzled (else padded)
};

// The head dims the CUDA backend has kernels for (every stage: attention and both selection passes).
constexpr bool supported_head_dim(std::int64_t d) { return d == 64 || d == 96 || d == 128 || d == 256; }

constexpr Shape shape_for(int d) {
  const bool swizzled = d % 64 == 0;
  if (d == 256) return Shape{64, 16, 64, d, true};
  return Shape{128, SAMPLEATTN_SM80_WARP_ROWS, 64, swizzled ? d : d + 8, swizzled};
}

// Q [block_m] + two stages of K and V [block_n] rows, 16-bit elements.
constexpr int smem_bytes(int d) {
  const Shape s = shape_for(d);
  return (s.block_m + 4 * s.block_n) * s.row_elems * 2;
}

}  // namespace sampleattn::cuda::sm80
