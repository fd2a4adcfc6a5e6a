// Shared-memory tiles of the sm_80 attention kernel and the copies that fill them.
// A tile is [rows][Layout::kRowElems] 16-bit elements, row-major. Rows of 64, 128 or 256 elements store the
// 16-byte chunk c of row r at chunk c ^ (r % 8): the 8 rows an ldmatrix reads at one logical chunk then sit in 8
// different bank groups. Rows of 96 elements are padded to 104 instead (attention_sm80_shape.h).
// Copies go through cp.async (16 bytes a thread, zero-filled past the end of the sequence) when every row
// starts on a 16-byte boundary; otherwise (odd strides, e.g. a slice of a packed buffer) through plain
// 2-byte loads, which are slow but keep every layout working.
#pragma once

#include <cstdint>

#include "cuda/attention_sm80_shape.h"
#include "cuda/ptx_sm80.cuh"

namespace sampleattn::cuda::sm80 {

template <int kD>
struct Layout {
  static constexpr Shape kShape = shape_for(kD);
  static constexpr bool kSwizzled = kShape.swizzled;
  static constexpr int kRowElems = kShape.row_elems;
  static constexpr int kRowBytes = kRowElems * 2;
  static_assert(!kSwizzled || kD % 64 == 0, "a swizzled row holds a multiple of 8 chunks");

  // Element offset of chunk `chunk` (8 elements) of row `row`.
  __device__ static __forceinline__ int offset(int row, int chunk) {
    return row * kRowElems + ((kSwizzled ? chunk ^ (row & 7) : chunk) << 3);
  }
  // Byte offset inside its row of the chunk that an ldmatrix lane reads at step 0, for logical chunk x (0 or 1)
  // of the lane's row (swizzled: every row an ldmatrix lane reads is = lane mod 8).
  __device__ static __forceinline__ std::uint32_t lane_offset(int x, int lane) {
    return static_cast<std::uint32_t>(kSwizzled ? x ^ (lane & 7) : x) << 4;
  }
  // The same lane's offset at step j (two chunks per step): chunk 2j + x is stored at (2j + x) ^ (row % 8),
  // which is 2j ^ (x ^ row % 8) when swizzled.
  __device__ static __forceinline__ std::uint32_t step(std::uint32_t off, int j) {
    return kSwizzled ? off ^ (static_cast<std::uint32_t>(j) << 5) : off + (static_cast<std::uint32_t>(j) << 5);
  }
};

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

// Which rows and chunk a thread copies: chunk tid % kChunks of rows tid / kChunks + pass * kRowsPerPass (the
// sm_90a kernel's producer; its rows are 64 or 128 elements).
template <int kD, int kThreads>
struct CopyLayout {
  static constexpr int kChunks = kD / 8;
  static constexpr int kRowsPerPass = kThreads / kChunks;  // 16 (d 128) or 32 (d 64) with 256 threads
  static_assert(kThreads % kChunks == 0 && kRowsPerPass % 8 == 0, "rows of one pass must keep row % 8");
};

// The sm_80 kernel's copies, for any head_dim: in each pass over a tile of kRows rows a thread copies chunk
// i = tid + pass * kThreads of the tile, row i / kChunks, chunk i % kChunks. When kThreads is a multiple of
// kChunks a thread keeps its chunk and steps kThreads / kChunks rows a pass.
template <int kD, int kThreads, int kRows>
struct TileCopy {
  static constexpr int kChunks = kD / 8;
  static constexpr int kPasses = (kRows * kChunks + kThreads - 1) / kThreads;
  static constexpr bool kFixedChunk = kThreads % kChunks == 0;
  static constexpr bool kExact = kRows * kChunks % kThreads == 0;  // every thread copies in every pass
  int tid, first_row, fixed_chunk;
  __device__ __forceinline__ explicit TileCopy(int t) : tid(t), first_row(t / kChunks), fixed_chunk(t % kChunks) {}
  __device__ __forceinline__ int row(int pass) const {
    if constexpr (kFixedChunk) return first_row + pass * (kThreads / kChunks);
    return (tid + pass * kThreads) / kChunks;
  }
  __device__ __forceinline__ int chunk(int pass) const {
    if constexpr (kFixedChunk) return fixed_chunk;
    return (tid + pass * kThreads) % kChunks;
  }
  __device__ __forceinline__ bool active(int pass) const { return kExact || tid + pass * kThreads < kRows * kChunks; }
};

}  // namespace sampleattn::cuda::sm80
