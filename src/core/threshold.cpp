// Stage 2 column choice (threshold.h).
#include "core/threshold.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace sampleattn::core {

template <typename Score>
std::vector<std::int32_t> choose_columns(const Score* scores, std::int64_t n, double alpha,
                                         std::int64_t sink_tokens) {
  // Descending score, the lower index first among ties: sorted as (score bits, index) pairs held together
  // (for non-negative doubles the bit patterns order as the values; + 0.0 turns a -0 into +0).
  struct Entry {
    std::uint64_t bits;
    std::int32_t index;
  };
  std::vector<Entry> entries(static_cast<std::size_t>(n));
  for (std::int64_t j = 0; j < n; ++j) {
    const double v = static_cast<double>(scores[j]) + 0.0;
    std::memcpy(&entries[static_cast<std::size_t>(j)].bits, &v, sizeof v);
    entries[static_cast<std::size_t>(j)].index = static_cast<std::int32_t>(j);
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.bits != b.bits ? a.bits > b.bits : a.index < b.index;
  });
  std::vector<std::int32_t> order(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < entries.size(); ++i) order[i] = entries[i].index;
  double total = 0.0;
  for (std::int32_t j : order) total += static_cast<double>(scores[j]);
  const double target = alpha * total;
  // alpha = 1 keeps every column with mass: the running sum stops growing once the remaining scores fall below
  // its rounding step, so it would reach the total before them (and drop columns that may carry most of the
  // mass of rows that were not sampled).
  const bool keep_all = alpha >= 1.0;
  std::vector<std::int32_t> kept;
  double running = 0.0;
  for (std::int32_t j : order) {
    if ((running >= target && !keep_all) || scores[j] <= Score(0)) break;
    running += static_cast<double>(scores[j]);
    kept.push_back(j);
  }
  for (std::int64_t j = 0; j < std::min(sink_tokens, n); ++j) kept.push_back(static_cast<std::int32_t>(j));
  std::sort(kept.begin(), kept.end());
  kept.erase(std::unique(kept.begin(), kept.end()), kept.end());
  return kept;
}

template std::vector<std::int32_t> choose_columns<float>(const float*, std::int64_t, double, std::int64_t);
template std::vector<std::int32_t> choose_columns<double>(const double*, std::int64_t, double, std::int64_t);

}  // namespace sampleattn::core
