// The backend-free arithmetic of SampleAttention (SPEC.md variant A): window size, sampled-row schedule,
// and closed-form counts of the entries a mask keeps. Every backend uses these functions, so CPU and CUDA
// agree on which rows are sampled and how large the window is.
#pragma once

#include <cstdint>
#include <vector>
#include <vector>

#include "core/problem.h"
#include "sampleattn/config.h"

namespace sampleattn::core {

// ceil(ratio * n) computed so that exact products (0.05 * 20 = 1) do not round up to the next integer.
std::int64_t ceil_ratio(double ratio, std::int64_t n);

// w = max(min_window, ceil(window_ratio * Sk)), at least 1 (the diagonal is always kept), at most Sk.
// Example: Sk = 16384, ratio 0.08, min 64 -> ceil(1310.72) = 1311.
std::int64_t window_size(const SampleConfig& config, std::int64_t seq_k);

// n = max(1, ceil(sample_ratio * Sq)) rows t_i = floor((i + 1) * Sq / n) - 1, i = 0..n-1 (ascending,
// distinct, the last row included). Example: Sq = 100, ratio 0.05 -> n = 5, rows 19 39 59 79 99.
std::vector<std::int64_t> sampled_rows(double sample_ratio, std::int64_t seq_q);

// Band of row r for window w: keys [lo, hi) (causal: p - w < j <= p; non-causal: p - w < j < p + w),
// clipped to [0, Sk).
struct Span {
  std::int64_t lo = 0;
  std::int64_t hi = 0;
};
Span band(const Problem& p, std::int64_t window, std::int64_t r);

// Whether row r is one of the last dense_tail rows, which keep every visible key.
inline bool in_dense_tail(const Problem& p, std::int64_t dense_tail, std::int64_t r) {
  return r >= p.seq_q - dense_tail;
}

// Entries of the mask band(w) union columns (sorted, unique) union dense tail, each counted once, and the
// number of visible entries, for one head. O(|columns|): closed forms over the rows.
struct EntryCount {
  std::int64_t kept = 0;
  std::int64_t visible = 0;
};
EntryCount count_entries(const Problem& p, std::int64_t window, std::int64_t dense_tail,
                         const std::int32_t* columns, std::int64_t num_columns);

// SampleConfig::dense_head_density (ours) as an entry count: a head whose mask keeps at least this many of its
// `visible` entries keeps every column (runs dense). Every backend takes the count from here. Density 1 turns
// the rule off (INT64_MAX). Example: density 0.8, visible 1000 -> 800.
std::int64_t dense_head_entries(double dense_head_density, std::int64_t visible);

// The head's chosen columns (ascending) after SampleConfig::dense_head_density: unchanged, or every column
// of [0, Sk) when band + columns + dense tail keep at least dense_head_entries of the visible entries.
std::vector<std::int32_t> keep_all_if_dense(const Problem& p, std::int64_t window, std::int64_t dense_tail,
                                            std::vector<std::int32_t> columns, double dense_head_density);

}  // namespace sampleattn::core
