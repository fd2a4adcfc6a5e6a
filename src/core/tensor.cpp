// Names and sizes of the enums in tensor.h / config.h, and the contiguous-view constructor.
#include "sampleattn/config.h"
#include "sampleattn/error.h"
#include "sampleattn/tensor.h"

namespace sampleattn {

const char* to_string(DType dtype) {
  switch (dtype) {
    case DType::f32: return "float32";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
  }
  return "unknown";
}

const char* to_string(Device device) { return device == Device::cuda ? "cuda" : "cpu"; }

const char* to_string(Backend backend) {
  switch (backend) {
    case Backend::automatic: return "auto";
    case Backend::cpu: return "cpu";
    case Backend::cpu_reference: return "cpu-ref";
    case Backend::cuda: return "cuda";
  }
  return "unknown";
}

std::size_t dtype_size(DType dtype) { return dtype == DType::f32 ? 4 : 2; }

TensorView TensorView::contiguous(void* data, DType dtype, std::int64_t batch, std::int64_t seq,
                                  std::int64_t heads, std::int64_t head_dim, Device device) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.shape = {batch, seq, heads, head_dim};
  std::int64_t row = 0, item = 0;
  SA_CHECK(!__builtin_mul_overflow(heads, head_dim, &row) && !__builtin_mul_overflow(seq, row, &item),
           "TensorView::contiguous: strides of shape (", batch, ", ", seq, ", ", heads, ", ", head_dim,
           ") overflow int64");
  t.stride = {item, row, head_dim, 1};
  return t;
}

}  // namespace sampleattn
