// Validation of the tensors and configuration of one call (problem.h). All messages name the argument and
// the values involved.
#include "core/problem.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/half.h"
#include "sampleattn/error.h"

namespace sampleattn::core {
namespace {

// Largest element offset the view can address, with overflow checks on every product and sum.
std::int64_t checked_extent(const TensorView& t, const char* name) {
  std::int64_t extent = 0;
  for (int a = 0; a < 4; ++a) {
    std::int64_t term = 0;
    if (__builtin_mul_overflow(t.shape[a] - 1, t.stride[a], &term) ||
        __builtin_add_overflow(extent, term, &extent)) {
      detail::fail(name, ": shape x stride overflows int64 (axis ", a, ": size ", t.shape[a], ", stride ",
                   t.stride[a], ")");
    }
  }
  std::int64_t bytes = 0;
  if (__builtin_mul_overflow(extent + 1, static_cast<std::int64_t>(dtype_size(t.dtype)), &bytes)) {
    detail::fail(name, ": byte size overflows int64");
  }
  return extent;
}

void check_view(const TensorView& t, const char* name) {
  static const char* kAxis[4] = {"batch", "seq", "heads", "head_dim"};
  SA_CHECK(t.data != nullptr, name, ".data is null");
  SA_CHECK(t.dtype == DType::f32 || t.dtype == DType::f16 || t.dtype == DType::bf16, name,
           ".dtype is not one of float32, float16, bfloat16");
  std::int64_t elements = 1;
  for (int a = 0; a < 4; ++a) {
    SA_CHECK(t.shape[a] > 0, name, ".", kAxis[a], " (", t.shape[a], ") must be > 0");
    SA_CHECK(t.stride[a] >= 0, name, ".stride[", a, "] (", t.stride[a], ") must be >= 0");
    // Broadcast (zero-stride) axes would let a small buffer describe an astronomically large problem.
    SA_CHECK(t.stride[a] > 0 || t.shape[a] == 1, name, ".stride[", a, "] (0) must be > 0 for an axis of size ",
             t.shape[a], ": broadcast views are not supported (GQA needs no expanded k/v)");
    SA_CHECK(!__builtin_mul_overflow(elements, t.shape[a], &elements), name, ": the element count (shape ",
             t.shape[0], " x ", t.shape[1], " x ", t.shape[2], " x ", t.shape[3], ") overflows int64");
  }
  checked_extent(t, name);
}

}  // namespace

Problem make_problem(const TensorView& q, const TensorView& k, const TensorView* v, const AttnParams& params) {
  check_view(q, "q");
  check_view(k, "k");
  if (v != nullptr) check_view(*v, "v");
  SA_CHECK(k.dtype == q.dtype, "k.dtype (", to_string(k.dtype), ") must equal q.dtype (", to_string(q.dtype), ")");
  SA_CHECK(k.device == q.device && k.device_index == q.device_index, "k.device (", to_string(k.device), ":",
           k.device_index, ") must equal q.device (", to_string(q.device), ":", q.device_index, ")");
  SA_CHECK(k.batch() == q.batch(), "k.batch (", k.batch(), ") must equal q.batch (", q.batch(), ")");
  SA_CHECK(k.head_dim() == q.head_dim(), "k.head_dim (", k.head_dim(), ") must equal q.head_dim (", q.head_dim(),
           ")");
  SA_CHECK(q.heads() % k.heads() == 0, "q.heads (", q.heads(), ") must be a multiple of k.heads (", k.heads(), ")");
  SA_CHECK(q.seq() <= k.seq(), "q.seq (", q.seq(), ") must be <= k.seq (", k.seq(),
           "): queries are the last q.seq key positions");
  SA_CHECK(k.seq() <= INT32_MAX, "k.seq (", k.seq(), ") must be <= 2^31 - 1: key columns are int32");
  if (v != nullptr) {
    SA_CHECK(v->dtype == q.dtype, "v.dtype (", to_string(v->dtype), ") must equal q.dtype (", to_string(q.dtype),
             ")");
    SA_CHECK(v->device == q.device && v->device_index == q.device_index, "v.device (", to_string(v->device),
             ") must equal q.device (", to_string(q.device), ")");
    for (int a = 0; a < 4; ++a) {
      SA_CHECK(v->shape[a] == k.shape[a], "v.shape (", v->shape[0], ", ", v->shape[1], ", ", v->shape[2], ", ",
               v->shape[3], ") must equal k.shape (", k.shape[0], ", ", k.shape[1], ", ", k.shape[2], ", ",
               k.shape[3], ")");
    }
  }
  Problem p;
  p.batch = q.batch();
  p.seq_q = q.seq();
  p.seq_k = k.seq();
  p.q_heads = q.heads();
  p.kv_heads = k.heads();
  p.head_dim = q.head_dim();
  p.causal = params.causal;
  p.scale = params.scale ? *params.scale : 1.0f / std::sqrt(static_cast<float>(p.head_dim));
  SA_CHECK(std::isfinite(p.scale) && p.scale > 0.0f, "params.scale (", p.scale, ") must be finite and > 0");
  return p;
}

void check_output(const Problem& p, const TensorView& q, const TensorView& out) {
  for (int a = 0; a < 4; ++a) {
    SA_CHECK(out.stride[a] != 0 || out.shape[a] == 1, "out.stride[", a, "] (", out.stride[a],
             ") must be > 0: a zero stride would make rows overwrite each other");
  }
  check_view(out, "out");
  SA_CHECK(out.device == q.device && out.device_index == q.device_index, "out.device (", to_string(out.device),
           ") must equal q.device (", to_string(q.device), ")");
  SA_CHECK(out.batch() == p.batch && out.seq() == p.seq_q && out.heads() == p.q_heads &&
               out.head_dim() == p.head_dim,
           "out.shape (", out.shape[0], ", ", out.shape[1], ", ", out.shape[2], ", ", out.shape[3],
           ") must equal (", p.batch, ", ", p.seq_q, ", ", p.q_heads, ", ", p.head_dim, ")");
}

void check_config(const SampleConfig& c) {
  SA_CHECK(c.alpha > 0.0 && c.alpha <= 1.0, "config.alpha (", c.alpha, ") must be in (0, 1]");
  SA_CHECK(c.sample_ratio > 0.0 && c.sample_ratio <= 1.0, "config.sample_ratio (", c.sample_ratio,
           ") must be in (0, 1]");
  SA_CHECK(c.window_ratio >= 0.0 && c.window_ratio <= 1.0, "config.window_ratio (", c.window_ratio,
           ") must be in [0, 1]");
  SA_CHECK(c.min_window >= 0, "config.min_window (", c.min_window, ") must be >= 0");
  SA_CHECK(c.sink_tokens >= 0, "config.sink_tokens (", c.sink_tokens, ") must be >= 0");
  SA_CHECK(c.dense_tail >= 0, "config.dense_tail (", c.dense_tail, ") must be >= 0");
  SA_CHECK(c.dense_head_density > 0.0 && c.dense_head_density <= 1.0, "config.dense_head_density (",
           c.dense_head_density, ") must be in (0, 1]");
}

double finite_max_abs(const TensorView& t, const char* name) {
  // One pass over the bit patterns: for non-negative IEEE values the integer order of |x|'s bits is the
  // order of |x|, and |x| is finite iff its exponent field is not all ones.
  const bool wide = t.dtype == DType::f32;
  const std::uint32_t abs_mask = wide ? 0x7fffffffu : 0x7fffu;
  const std::uint32_t inf_bits = wide ? 0x7f800000u : t.dtype == DType::f16 ? 0x7c00u : 0x7f80u;
  const std::int64_t n = t.head_dim(), sd = t.stride[3];
  std::uint32_t max_bits = 0;
  for (std::int64_t b = 0; b < t.batch(); ++b)
    for (std::int64_t s = 0; s < t.seq(); ++s)
      for (std::int64_t h = 0; h < t.heads(); ++h) {
        const std::int64_t base = t.offset(b, s, h, 0);
        std::uint32_t m = 0;
        if (wide) {
          const auto* x = static_cast<const std::uint32_t*>(t.data) + base;
          for (std::int64_t d = 0; d < n; ++d) m = std::max(m, x[d * sd] & abs_mask);
        } else {
          const auto* x = static_cast<const std::uint16_t*>(t.data) + base;
          for (std::int64_t d = 0; d < n; ++d) m = std::max<std::uint32_t>(m, x[d * sd] & abs_mask);
        }
        if (m >= inf_bits) {
          for (std::int64_t d = 0; d < n; ++d) {
            const float x = load_element(t.data, t.dtype, base + d * sd);
            if (!std::isfinite(x)) {
              detail::fail(name, "[", b, ", ", s, ", ", h, ", ", d, "] is ", x,
                           ": inputs must be finite (NaN/Inf are rejected)");
            }
          }
        }
        max_bits = std::max(max_bits, m);
      }
  if (wide) {
    float f;
    std::memcpy(&f, &max_bits, 4);
    return f;
  }
  return t.dtype == DType::f16 ? f16_to_float(static_cast<std::uint16_t>(max_bits))
                               : bf16_to_float(static_cast<std::uint16_t>(max_bits));
}

void check_host_inputs(const Problem& p, const TensorView& q, const TensorView& k, const TensorView* v) {
  const double max_q = finite_max_abs(q, "q");
  const double max_k = finite_max_abs(k, "k");
  if (v != nullptr) finite_max_abs(*v, "v");
  // |scale * q . k| <= scale * d * max|q| * max|k|; the fp32 kernels must not overflow it (x log2 e).
  const double bound = static_cast<double>(p.scale) * static_cast<double>(p.head_dim) * max_q * max_k;
  SA_CHECK(bound <= 1e37, "q and k are too large: scores scale * q.k can reach ", bound,
           " (max|q| = ", max_q, ", max|k| = ", max_k, "), beyond float32 range");
}

}  // namespace sampleattn::core
