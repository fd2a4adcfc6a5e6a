#include "support/spaced_view.h"

#include <sys/mman.h>

#include <string>

#include "core/half.h"
#include "sampleattn/error.h"

namespace sampleattn::test {

ReservedBuffer::ReservedBuffer(std::size_t bytes) : bytes_(bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw Error("ReservedBuffer: mmap of " + std::to_string(bytes) + " bytes failed");
  ptr_ = p;
}

ReservedBuffer::~ReservedBuffer() { munmap(ptr_, bytes_); }

TensorView spaced_view(void* data, DType dtype, const std::array<std::int64_t, 4>& shape, std::int64_t batch_stride,
                       std::int64_t seq_stride, Device device) {
  TensorView t = TensorView::contiguous(data, dtype, shape[0], shape[1], shape[2], shape[3], device);
  t.stride[0] = batch_stride;
  t.stride[1] = seq_stride;
  return t;
}

std::int64_t spanned_elements(const TensorView& t) {
  std::int64_t last = 0;
  for (int a = 0; a < 4; ++a) last += (t.shape[a] - 1) * t.stride[a];
  return last + 1;
}

void copy_view(const TensorView& from, const TensorView& to) {
  if (from.shape != to.shape || from.dtype != to.dtype) throw Error("copy_view: shapes or dtypes differ");
  for (std::int64_t b = 0; b < from.batch(); ++b)
    for (std::int64_t s = 0; s < from.seq(); ++s)
      for (std::int64_t h = 0; h < from.heads(); ++h)
        for (std::int64_t d = 0; d < from.head_dim(); ++d)
          core::store_element(to.data, to.dtype, to.offset(b, s, h, d),
                              core::load_element(from.data, from.dtype, from.offset(b, s, h, d)));
}

}  // namespace sampleattn::test
