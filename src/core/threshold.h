// Stage 2 of SampleAttention: from per-column scores, the smallest set of columns reaching alpha of the
// total (SPEC.md step 3), with the tie rule "lower key index first" and optional forced sink columns.
#pragma once

#include <cstdint>
#include <vector>

namespace sampleattn::core {

// Sorts columns by score descending (ties: lower index first), sums the scores in that order, and keeps
// the shortest prefix whose running sum reaches alpha * total. Summing in the sorted order makes alpha = 1
// keep exactly the columns with non-zero score. The first min(sink_tokens, n) columns are added. Returns
// the kept columns sorted ascending. Scores must be finite and >= 0.
template <typename Score>
std::vector<std::int32_t> choose_columns(const Score* scores, std::int64_t n, double alpha,
                                         std::int64_t sink_tokens);

}  // namespace sampleattn::core
