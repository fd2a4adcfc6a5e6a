// Shared-memory tiles of the sm_80 attention kernel and the copies that fill them.
// A tile is [rows][kD] 16-bit elements, row-major, with the 16-byte chunks of row r stored at chunk
// c ^ (r % 8): the 8 rows an ldmatrix reads at one logical chunk then sit in 8 different bank groups,
// for both row widths (128 B at d = 64, 256 B at d = 128).
// Copies go through cp.async (16 bytes a thread, zero-filled past the end of the sequence) when every row
// starts on a 16-byte boundary; otherwise (odd strides, e.g. a slice of a packed buffer) through plain
// 2-byte loads, which are slow but keep every layout working.
#pragma once

#include <cstdint>

#include "cuda/ptx_sm80.cuh"

namespace sampleattn::cuda::sm80 {

template <int kD>
__device__ __forceinline__ int swizzled(int row, int chunk) {
  return row * kD + ((chunk ^ (row & 7)) << 3);
}

// One 16-byte chunk: dst (shared) <- src (global), zeros when !valid.
template <typename Elem>
__device__ __forceinline__ void copy_chunk(Elem* dst, const Elem* src, bool valid, bool aligned) {
  if (aligned) {
    cp_async_16(smem_addr(dst), src, valid);
    return;
  }
  const unsigned short* s = reinterpret_cast<const unsigned short*>(src);
  unsigned short e[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  if (valid) {
#pragma unroll
    for (int i = 0; i < 8; ++i) e[i] = s[i];
  }
  uint4 packed;
  packed.x = e[0] | (static_cast<unsigned>(e[1]) << 16);
  packed.y = e[2] | (static_cast<unsigned>(e[3]) << 16);
  packed.z = e[4] | (static_cast<unsigned>(e[5]) << 16);
  packed.w = e[6] | (static_cast<unsigned>(e[7]) << 16);
  *reinterpret_cast<uint4*>(dst) = packed;
}

// Which rows and chunk a thread copies: chunk tid % kChunks of rows tid / kChunks + pass * kRowsPerPass.
template <int kD, int kThreads>
struct CopyLayout {
  static constexpr int kChunks = kD / 8;
  static constexpr int kRowsPerPass = kThreads / kChunks;  // 16 (d 128) or 32 (d 64) with 256 threads
  static_assert(kThreads % kChunks == 0 && kRowsPerPass % 8 == 0, "rows of one pass must keep row % 8");
};

}  // namespace sampleattn::cuda::sm80
