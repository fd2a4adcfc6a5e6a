#include "support/spaced_view.h"

#include <sys/mman.h>

#include "core/half.h"
#include "sampleattn/error.h"

namespace sampleattn::test {

ReservedBuffer::ReservedBuffer(std::size_t bytes) : bytes_(bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw Error("ReservedBuffer: mmap of " + std::to_string(bytes) + " bytes failed");
  ptr_ = p;
}

ReservedBuffer::~ReservedBuffer() { munmap(ptr_, bytes_); }

std::int64_t spaced_elements(std::int64_t batch, std::int64_t seq, std::int64_t heads, std::int64_t head_dim,
                             std::int64_t batch_stride) {
  return (batch - 1) * batch_stride + seq * heads * head_dim;
}

TensorView spaced_view(void* data, DType dtype, std::int64_t batch, std::int64_t seq, std::int64_t heads,
                       std::int64_t head_dim, std::int64_t batch_stride, Device device) {
  TensorView t = TensorView::contiguous(data, dtype, batch, seq, heads, head_dim, device);
  t.stride[0] = batch_stride;
  return t;
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
