// Packed variable-length batches (api.h's *_varlen functions, cuda.h's sample_attention_varlen): the
// sequences of packed [1, total, heads, d] views, each a problem of its own.
#pragma once

#include <cstdint>
#include <vector>

#include "sampleattn/tensor.h"

namespace sampleattn::core {

struct PackedSequence {
  std::int64_t q_begin = 0, q_len = 0;  // query rows [q_begin, q_begin + q_len) of the packed q / out
  std::int64_t k_begin = 0, k_len = 0;  // key rows of the packed k / v
};

// Checks that q and k are packed (batch 1) and that cu_seqlens_q / cu_seqlens_k are n + 1 non-decreasing
// offsets from 0 to q.seq / k.seq with q_len <= k_len per sequence (its queries are its last positions);
// returns the n sequences in order.
std::vector<PackedSequence> packed_sequences(const TensorView& q, const TensorView& k,
                                             const std::vector<std::int64_t>& cu_seqlens_q,
                                             const std::vector<std::int64_t>& cu_seqlens_k);

// Rows [begin, begin + count) of a view (a range its shape holds), as a view of its own.
TensorView row_range(const TensorView& t, std::int64_t begin, std::int64_t count);

}  // namespace sampleattn::core
