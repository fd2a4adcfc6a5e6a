// A device array filled with one 32-bit value on a stream (cudaMemsetAsync sets bytes only). Plain C++ header:
// the kernel lives in fill.cu.
#pragma once

#include <cstdint>

namespace sampleattn::cuda {

// dst[0 .. n) = value, enqueued on `stream` (a cudaStream_t); graph-capturable. Throws sampleattn::Error if the
// launch fails.
void fill_i32(std::int32_t* dst, std::int64_t n, std::int32_t value, void* stream);

}  // namespace sampleattn::cuda
