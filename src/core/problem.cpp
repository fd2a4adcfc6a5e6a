// Validation of the tensors and configuration of one call (problem.h). All messages name the argument and
// the values involved.
#include "core/problem.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

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
  for (int a = 0; a < 4; ++a) SA_CHECK(t.shape[a] > 0, name, ".", kAxis[a], " (", t.shape[a], ") must be > 0");
  SA_CHECK(t.data != nullptr, name, ".data is null");
  SA_CHECK(t.dtype == DType::f32 || t.dtype == DType::f16 || t.dtype == DType::bf16, name,
           ".dtype is not one of float32, float16, bfloat16");
  const std::size_t align = dtype_size(t.dtype);
  SA_CHECK(reinterpret_cast<std::uintptr_t>(t.data) % align == 0, name, ".data (", t.data, ") must be aligned to ",
           align, " bytes (", to_string(t.dtype), " elements)");
  std::int64_t elements = 1;
  for (int a = 0; a < 4; ++a) {
    SA_CHECK(t.stride[a] >= 0, name, ".stride[", a, "] (", t.stride[a], ") must be >= 0");
    // Broadcast (zero-stride) axes would let a small buffer describe an astronomically large problem.
    SA_CHECK(t.stride[a] > 0 || t.shape[a] == 1, name, ".stride[", a, "] (0) must be > 0 for an axis of size ",
             t.shape[a], ": broadcast views are not supported (GQA needs no expanded k/v)");
    SA_CHECK(!__builtin_mul_overflow(elements, t.shape[a], &elements), name, ": the element count (shape ",
             t.shape[0], " x ", t.shape[1], " x ", t.shape[2], " x ", t.shape[3], ") overflows int64");
  }
  checked_extent(t, name);
}

std::int64_t gcd64(std::int64_t a, std::int64_t b) {
  while (b != 0) {
    const std::int64_t r = a % b;
    a = b;
    b = r;
  }
  return a;
}

// Whether two checked views provably share no byte: their spans are apart, or, for views interleaved in one
// buffer (q, k, v and out as slices of a fused [B, S, heads, d] buffer), every element of each lies in its
// own part of a period that divides all their outer strides (the tokens', or the heads' too).
bool disjoint(const TensorView& a, const TensorView& b) {
  const ByteSpan sa = byte_span(a), sb = byte_span(b);
  if (sa.hi <= sb.lo || sb.hi <= sa.lo) return true;
  const std::int64_t ea = static_cast<std::int64_t>(dtype_size(a.dtype));
  const std::int64_t eb = static_cast<std::int64_t>(dtype_size(b.dtype));
  for (int inner = 2; inner <= 3; ++inner) {
    std::int64_t period = 0, wa = ea, wb = eb;
    for (int x = 0; x < 4; ++x) {
      if (x < inner) {
        if (a.shape[x] > 1) period = gcd64(period, a.stride[x] * ea);
        if (b.shape[x] > 1) period = gcd64(period, b.stride[x] * eb);
      } else {
        wa += (a.shape[x] - 1) * a.stride[x] * ea;
        wb += (b.shape[x] - 1) * b.stride[x] * eb;
      }
    }
    if (period == 0) continue;
    const std::uintptr_t p = static_cast<std::uintptr_t>(period);
    const std::uintptr_t r = (sb.lo % p + p - sa.lo % p) % p;  // b's start within a's period
    if (static_cast<std::uintptr_t>(wa) <= r && r + static_cast<std::uintptr_t>(wb) <= p) return true;
  }
  return false;
}

// Proves that no two elements of `t` share memory: sorted by stride, every axis longer than 1 steps over the
// whole extent of the axes with smaller strides.
void check_no_self_overlap(const TensorView& t, const char* name) {
  std::array<int, 4> axes{0, 1, 2, 3};
  std::sort(axes.begin(), axes.end(), [&](int x, int y) { return t.stride[x] < t.stride[y]; });
  std::int64_t covered = 1;  // elements spanned by the axes so far
  for (const int x : axes) {
    if (t.shape[x] == 1) continue;
    SA_CHECK(t.stride[x] >= covered, name, ".stride (", t.stride[0], ", ", t.stride[1], ", ", t.stride[2], ", ",
             t.stride[3], ") with shape (", t.shape[0], ", ", t.shape[1], ", ", t.shape[2], ", ", t.shape[3],
             ") lets elements of ", name, " share memory (sorted by stride, each axis must step over the ones "
             "before it)");
    covered = t.stride[x] * t.shape[x];
  }
}

}  // namespace

ByteSpan byte_span(const TensorView& t) {
  const auto lo = reinterpret_cast<std::uintptr_t>(t.data);
  const std::int64_t bytes = (checked_extent(t, "view") + 1) * static_cast<std::int64_t>(dtype_size(t.dtype));
  return {lo, lo + static_cast<std::uintptr_t>(bytes)};
}

TensorView lse_view(const Problem& p, const float* lse, Device device) {
  std::int64_t n = 0;
  SA_CHECK(!__builtin_mul_overflow(p.batch * p.q_heads, p.seq_q, &n) && n <= INT64_MAX / 4,
           "lse: batch x q_heads x seq_q overflows");
  return TensorView::contiguous(const_cast<float*>(lse), DType::f32, 1, n, 1, 1, device);
}

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

void check_output(const Problem& p, const TensorView& q, const TensorView& k, const TensorView* v,
                  const TensorView& out, const float* lse) {
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
  check_no_self_overlap(out, "out");
  const std::pair<const char*, const TensorView*> inputs[3] = {{"q", &q}, {"k", &k}, {"v", v}};
  for (const auto& [name, in] : inputs) {
    SA_CHECK(in == nullptr || disjoint(out, *in), "out (", out.data, ") shares memory with ", name, " (",
             in->data, "): the output must not overlap the inputs");
  }
  if (lse != nullptr) {
    SA_CHECK(reinterpret_cast<std::uintptr_t>(lse) % alignof(float) == 0, "lse (", static_cast<const void*>(lse),
             ") must be aligned to 4 bytes (float32)");
    const TensorView l = lse_view(p, lse, q.device);
    const std::pair<const char*, const TensorView*> all[4] = {{"out", &out}, {"q", &q}, {"k", &k}, {"v", v}};
    for (const auto& [name, t] : all) {
      SA_CHECK(t == nullptr || disjoint(l, *t), "lse (", static_cast<const void*>(lse), ", ", l.seq(),
               " floats) shares memory with ", name, " (", t->data, "): the outputs must not overlap each other or "
               "the inputs");
    }
  }
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

void serial_loop(std::int64_t n, const std::function<void(std::int64_t i)>& body) {
  for (std::int64_t i = 0; i < n; ++i) body(i);
}

namespace {

// Max of the bit patterns of |x| over n elements at stride sd (abs_mask clears the sign). The unit-stride
// loop is a plain reduction the compiler vectorises.
template <typename Bits>
Bits max_abs_bits(const Bits* x, std::int64_t n, std::int64_t sd, Bits abs_mask) {
  Bits m = 0;
  if (sd == 1) {
    for (std::int64_t d = 0; d < n; ++d) m = std::max<Bits>(m, static_cast<Bits>(x[d] & abs_mask));
  } else {
    for (std::int64_t d = 0; d < n; ++d) m = std::max<Bits>(m, static_cast<Bits>(x[d * sd] & abs_mask));
  }
  return m;
}

}  // namespace

double finite_max_abs(const TensorView& t, const char* name, const ParallelLoop& loop) {
  // Over the bit patterns: for non-negative IEEE values the integer order of |x|'s bits is the order of |x|,
  // and |x| is finite iff its exponent field is not all ones.
  const bool wide = t.dtype == DType::f32;
  const std::uint32_t inf_bits = wide ? 0x7f800000u : t.dtype == DType::f16 ? 0x7c00u : 0x7f80u;
  const std::int64_t n = t.head_dim(), sd = t.stride[3], rows = t.batch() * t.seq(), heads = t.heads();
  // Blocks of (batch, seq) rows; each keeps its max and its first row holding a non-finite element.
  constexpr std::int64_t kRowsPerBlock = 256;
  const std::int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  std::vector<std::uint32_t> block_max(static_cast<std::size_t>(blocks), 0);
  std::vector<std::int64_t> block_bad(static_cast<std::size_t>(blocks), -1);  // (row * heads + h), or -1
  loop(blocks, [&](std::int64_t blk) {
    std::uint32_t mx = 0;
    const std::int64_t end = std::min(rows, (blk + 1) * kRowsPerBlock);
    for (std::int64_t r = blk * kRowsPerBlock; r < end; ++r)
      for (std::int64_t h = 0; h < heads; ++h) {
        const std::int64_t base = t.offset(r / t.seq(), r % t.seq(), h, 0);
        const std::uint32_t m =
            wide ? max_abs_bits(static_cast<const std::uint32_t*>(t.data) + base, n, sd, 0x7fffffffu)
                 : max_abs_bits(static_cast<const std::uint16_t*>(t.data) + base, n, sd, std::uint16_t{0x7fff});
        if (m >= inf_bits && block_bad[blk] < 0) block_bad[blk] = r * heads + h;
        mx = std::max(mx, m);
      }
    block_max[blk] = mx;
  });
  std::uint32_t max_bits = 0;
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    if (const std::int64_t bad = block_bad[blk]; bad >= 0) {
      const std::int64_t r = bad / heads, b = r / t.seq(), s = r % t.seq(), h = bad % heads;
      for (std::int64_t d = 0; d < n; ++d) {
        const float x = load_element(t.data, t.dtype, t.offset(b, s, h, 0) + d * sd);
        if (!std::isfinite(x)) {
          detail::fail(name, "[", b, ", ", s, ", ", h, ", ", d, "] is ", x,
                       ": inputs must be finite (NaN/Inf are rejected)");
        }
      }
    }
    max_bits = std::max(max_bits, block_max[blk]);
  }
  if (wide) {
    float f;
    std::memcpy(&f, &max_bits, 4);
    return f;
  }
  return t.dtype == DType::f16 ? f16_to_float(static_cast<std::uint16_t>(max_bits))
                               : bf16_to_float(static_cast<std::uint16_t>(max_bits));
}

void check_host_inputs(const Problem& p, const TensorView& q, const TensorView& k, const TensorView* v,
                       const ParallelLoop& loop) {
  const double max_q = finite_max_abs(q, "q", loop);
  const double max_k = finite_max_abs(k, "k", loop);
  const double max_v = v != nullptr ? finite_max_abs(*v, "v", loop) : 0.0;
  const double scale = p.scale;
  // |scale * q . k| <= scale * d * max|q| * max|k|; the fp32 kernels must not overflow it (x log2 e).
  const double bound = scale * static_cast<double>(p.head_dim) * max_q * max_k;
  SA_CHECK(bound <= 1e37, "q and k are too large: scores scale * q.k can reach ", bound,
           " (max|q| = ", max_q, ", max|k| = ", max_k, "), beyond float32 range");
  // The fast backend scales q by scale * log2(e) before the products, and flushes subnormal operands to zero:
  // with these bounds neither overflows, and a flushed term moves a score by less than 1e-7.
  SA_CHECK(max_q * scale <= 1e28, "q is too large for float32 arithmetic: max|q| (", max_q, ") x scale (", scale,
           ") must be <= 1e28");
  SA_CHECK(max_k * std::max(scale, 1.0) <= 1e28, "k is too large for float32 arithmetic: max|k| (", max_k,
           ") x max(scale (", scale, "), 1) must be <= 1e28");
  // The output accumulates up to k.seq probability-weighted rows of v in float32 before normalising.
  SA_CHECK(max_v * static_cast<double>(p.seq_k) <= 1e37, "v is too large for float32 arithmetic: max|v| (", max_v,
           ") x k.seq (", p.seq_k, ") must be <= 1e37");
}

}  // namespace sampleattn::core
