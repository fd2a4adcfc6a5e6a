// Window size, sampled-row schedule and closed-form entry counts (schedule.h).
#include "core/schedule.h"

#include <algorithm>
#include <cmath>

namespace sampleattn::core {

std::int64_t ceil_ratio(double ratio, std::int64_t n) {
  // The relative slack absorbs the rounding of ratio * n (0.05 * 20 = 1.0000000000000002 in binary).
  const double x = ratio * static_cast<double>(n);
  return static_cast<std::int64_t>(std::ceil(x - 1e-9 * std::max(1.0, x)));
}

std::int64_t window_size(const SampleConfig& config, std::int64_t seq_k) {
  const std::int64_t w = std::max(config.min_window, ceil_ratio(config.window_ratio, seq_k));
  return std::clamp<std::int64_t>(w, 1, seq_k);
}

std::vector<std::int64_t> sampled_rows(double sample_ratio, std::int64_t seq_q) {
  const std::int64_t n = std::clamp<std::int64_t>(ceil_ratio(sample_ratio, seq_q), 1, seq_q);
  std::vector<std::int64_t> rows(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) rows[static_cast<std::size_t>(i)] = (i + 1) * seq_q / n - 1;
  return rows;
}

Span band(const Problem& p, std::int64_t window, std::int64_t r) {
  window = std::min(window, p.seq_k);  // a wider band covers the same keys; clamping keeps pos + w in range
  const std::int64_t pos = p.key_pos(r);
  const std::int64_t lo = std::max<std::int64_t>(0, pos - window + 1);
  const std::int64_t hi = p.causal ? pos + 1 : std::min(p.seq_k, pos + window);
  return {lo, hi};
}

EntryCount count_entries(const Problem& p, std::int64_t window, std::int64_t dense_tail,
                         const std::int32_t* columns, std::int64_t num_columns) {
  EntryCount c;
  window = std::min(window, p.seq_k);
  const std::int64_t tail = std::min(dense_tail, p.seq_q);
  const std::int64_t body = p.seq_q - tail;  // rows [0, body) use band + columns
  for (std::int64_t r = 0; r < p.seq_q; ++r) {
    const std::int64_t visible = p.visible_end(r);
    c.visible += visible;
    if (r >= body) {
      c.kept += visible;
    } else {
      const Span s = band(p, window, r);
      c.kept += s.hi - s.lo;
    }
  }
  if (body == 0) return c;
  // Body rows have key positions P = [Sk - Sq, Sk - Sq + body). A column j adds one entry for every such
  // position it is visible to and outside the band of.
  const std::int64_t p_lo = p.seq_k - p.seq_q;
  const std::int64_t p_hi = p_lo + body;  // exclusive
  auto count_in = [](std::int64_t lo, std::int64_t hi, std::int64_t a, std::int64_t b) {
    return std::max<std::int64_t>(0, std::min(hi, b) - std::max(lo, a));
  };
  for (std::int64_t i = 0; i < num_columns; ++i) {
    const std::int64_t j = columns[i];
    if (p.causal) {
      // Visible and outside the band: pos >= j + window.
      c.kept += count_in(p_lo, p_hi, j + window, p_hi);
    } else {
      // Outside the band: |j - pos| >= window.
      c.kept += body - count_in(p_lo, p_hi, j - window + 1, j + window);
    }
  }
  return c;
}

}  // namespace sampleattn::core
