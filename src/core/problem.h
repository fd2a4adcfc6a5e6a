// Problem: the sizes of one attention call, derived from and checked against the tensor views.
// Every backend receives a validated Problem; nothing below the API re-checks shapes.
#pragma once

#include <cstdint>
#include <functional>

#include "sampleattn/config.h"
#include "sampleattn/tensor.h"

namespace sampleattn::core {

struct Problem {
  std::int64_t batch = 0;
  std::int64_t seq_q = 0;
  std::int64_t seq_k = 0;
  std::int64_t q_heads = 0;
  std::int64_t kv_heads = 0;
  std::int64_t head_dim = 0;
  float scale = 1.0f;
  bool causal = true;

  std::int64_t group() const { return q_heads / kv_heads; }
  std::int64_t kv_head(std::int64_t h) const { return h / group(); }
  // Key position of query row r: the queries are the last seq_q of the seq_k positions.
  std::int64_t key_pos(std::int64_t r) const { return seq_k - seq_q + r; }
  // One past the last key row r may see.
  std::int64_t visible_end(std::int64_t r) const { return causal ? key_pos(r) + 1 : seq_k; }
};

// Checks q, k, v (v may be null for select()) against each other and `params`; throws sampleattn::Error
// naming the argument and values. `max_head_dim` is the backend's limit.
Problem make_problem(const TensorView& q, const TensorView& k, const TensorView* v, const AttnParams& params);

// Checks that `out` is a writable [batch, seq_q, q_heads, head_dim] view on q's device, in bounds, whose
// elements do not overlap each other or q, k, v (v may be null); and that `lse` (if not null) is aligned
// and its [batch, q_heads, seq_q] floats overlap none of them.
void check_output(const Problem& p, const TensorView& q, const TensorView& k, const TensorView* v,
                  const TensorView& out, const float* lse);

// The bytes [lo, hi) a view checked by make_problem / check_output can touch.
struct ByteSpan {
  std::uintptr_t lo = 0, hi = 0;
};
ByteSpan byte_span(const TensorView& t);
// lse's [batch, q_heads, seq_q] floats as a view (for byte_span and the overlap checks).
TensorView lse_view(const Problem& p, const float* lse, Device device);

void check_config(const SampleConfig& config);

// Runs body(i) once for every i in [0, n), possibly on several threads at once (the CPU backend passes its
// thread fan-out); the default runs them in order on the caller.
using ParallelLoop = std::function<void(std::int64_t n, const std::function<void(std::int64_t i)>& body)>;
void serial_loop(std::int64_t n, const std::function<void(std::int64_t i)>& body);

// Max |x| over the view, throwing unless every element is finite (host views only). Documented input
// policy of the CPU backends: NaN/Inf in q, k or v is rejected rather than producing a selection computed
// from garbage. The error names the first non-finite element in memory-walk order (batch, seq, head, dim),
// whatever the loop.
double finite_max_abs(const TensorView& t, const char* name, const ParallelLoop& loop = serial_loop);

// The CPU backends' input checks: finite q, k, v, small enough for float32 scores, scaled queries and sums
// of values (bounds in problem.cpp).
void check_host_inputs(const Problem& p, const TensorView& q, const TensorView& k, const TensorView* v,
                       const ParallelLoop& loop = serial_loop);

}  // namespace sampleattn::core
