// NumPy .npy files (format versions 1.0, 2.0 and 3.0): read and write C-order arrays of float32, float16
// and uint16 (the latter carrying bfloat16 bits when the caller says so: NumPy has no bfloat16).
//
// Reading is defensive: every problem (missing file, bad magic, malformed header dict, unsupported dtype,
// Fortran order, negative or overflowing shape, a data section shorter or longer than the header says)
// throws sampleattn::Error naming the file and what is wrong. The byte count the header implies is checked
// against the file size before anything is allocated, so a lying header cannot cause a huge allocation.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sampleattn/tensor.h"

namespace sampleattn::io {

struct NpyArray {
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> data;  // little-endian elements, C order; never empty (at least 8 bytes)

  std::int64_t elements() const;
  // A contiguous [batch, seq, heads, head_dim] view; throws naming `what` unless the array has rank 4.
  TensorView view4d(const std::string& what) const;
};

// uint16_is_bf16: accept '<u2' arrays as bfloat16 bit patterns (otherwise they are rejected, with a hint).
NpyArray read_npy(const std::string& path, bool uint16_is_bf16);

// Writes `data` (C order, dtype elements) with a version 1.0 header; bfloat16 is written as '<u2'.
void write_npy(const std::string& path, DType dtype, const std::vector<std::int64_t>& shape, const void* data);

// "(2, 3, 4)": shapes as NumPy prints them, for messages.
std::string shape_string(const std::vector<std::int64_t>& shape);

}  // namespace sampleattn::io
