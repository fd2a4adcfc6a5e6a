// Stage 2 column choice (threshold.h).
#include "core/threshold.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

namespace sampleattn::core {

template <typename Score>
std::vector<std::int32_t> choose_columns(const Score* scores, std::int64_t n, double alpha,
                                         std::int64_t sink_tokens) {
  // Descending score, the lower index first among ties: a stable LSD radix sort of the indices by the
  // complemented bits of the scores (for non-negative doubles the bit patterns order as the values; + 0.0
  // turns a -0 into +0), 11 bits a pass, passes where every key has the same digit skipped.
  const auto count = static_cast<std::size_t>(n);
  std::vector<std::uint64_t> keys(count), keys_tmp(count);
  std::vector<std::int32_t> order(count), order_tmp(count);
  for (std::size_t j = 0; j < count; ++j) {
    const double v = static_cast<double>(scores[j]) + 0.0;
    std::memcpy(&keys[j], &v, sizeof v);
    keys[j] = ~keys[j];
    order[j] = static_cast<std::int32_t>(j);
  }
  constexpr int kBits = 11;
  constexpr std::size_t kBuckets = std::size_t{1} << kBits;
  std::vector<std::size_t> start(kBuckets);
  for (int shift = 0; shift < 64; shift += kBits) {
    std::fill(start.begin(), start.end(), 0);
    for (std::uint64_t key : keys) ++start[(key >> shift) & (kBuckets - 1)];
    if (count > 0 && start[(keys[0] >> shift) & (kBuckets - 1)] == count) continue;
    std::size_t sum = 0;
    for (std::size_t& c : start) sum += std::exchange(c, sum);
    for (std::size_t i = 0; i < count; ++i) {
      const std::size_t at = start[(keys[i] >> shift) & (kBuckets - 1)]++;
      keys_tmp[at] = keys[i];
      order_tmp[at] = order[i];
    }
    keys.swap(keys_tmp);
    order.swap(order_tmp);
  }
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
