// A packed variable-length batch for the *_varlen tests: random per-sequence tensors (compact, batch 1) and
// the same values packed into [1, total, heads, d] tensors, with the cu_seqlens offsets.
#pragma once

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "support/host_tensor.h"

namespace sampleattn::test {

struct PackedBatch {
  std::vector<std::int64_t> cu_q, cu_k;
  std::vector<HostTensor> q, k, v;  // per sequence
  HostTensor pq, pk, pv;            // packed
};

// lens: (q_len, k_len) per sequence; q entries have standard deviation q_scale, k and v 1.
PackedBatch make_packed_batch(DType dtype, std::int64_t q_heads, std::int64_t kv_heads, std::int64_t head_dim,
                              const std::vector<std::pair<std::int64_t, std::int64_t>>& lens, std::mt19937_64& rng,
                              float q_scale = 2.0f);

// Rows [begin, begin + count) of a host tensor, as a compact tensor.
HostTensor row_slice(const HostTensor& t, std::int64_t begin, std::int64_t count);

}  // namespace sampleattn::test
