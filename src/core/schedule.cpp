// Window size, sampled-row schedule and closed-form entry counts (schedule.h).
#include "core/schedule.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

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

namespace {

// sum of x over [a, b) (0 if b <= a). Of a + b - 1 and b - a one is even: halve that one first, so the product
// stays below 2^63 for the key positions here (< 2^31).
std::int64_t sum_range(std::int64_t a, std::int64_t b) {
  if (b <= a) return 0;
  const std::int64_t n = b - a, s = a + b - 1;
  return n % 2 == 0 ? n / 2 * s : s / 2 * n;
}

// sum of min(x, c) over [a, b): x below c, then c.
std::int64_t sum_min(std::int64_t a, std::int64_t b, std::int64_t c) {
  if (b <= a) return 0;
  const std::int64_t m = std::min(std::max(c, a), b);
  return sum_range(a, m) + (b - m) * c;
}

// sum of max(x, c) over [a, b) = sum x + n c - sum min(x, c).
std::int64_t sum_max(std::int64_t a, std::int64_t b, std::int64_t c) {
  if (b <= a) return 0;
  return sum_range(a, b) + (b - a) * c - sum_min(a, b, c);
}

}  // namespace

EntryCount count_entries(const Problem& p, std::int64_t window, std::int64_t dense_tail,
                         const std::int32_t* columns, std::int64_t num_columns) {
  // Closed forms over the rows (this runs on every call's host path; a loop over 128K rows costs ~0.3 ms).
  EntryCount c;
  window = std::min(window, p.seq_k);
  const std::int64_t tail = std::min(dense_tail, p.seq_q);
  const std::int64_t body = p.seq_q - tail;  // rows [0, body) use band + columns
  const std::int64_t off = p.seq_k - p.seq_q;  // key position of row 0
  // Row r sees visible_end(r) keys: pos + 1 causal, Sk otherwise (pos = off + r).
  auto visible_sum = [&](std::int64_t r0, std::int64_t r1) {
    return p.causal ? sum_range(off + r0 + 1, off + r1 + 1) : (r1 - r0) * p.seq_k;
  };
  c.visible = visible_sum(0, p.seq_q);
  c.kept = visible_sum(body, p.seq_q);
  // Band of row r (core::band): causal min(pos + 1, w); otherwise min(Sk, pos + w) - max(0, pos - w + 1).
  if (p.causal) {
    c.kept += sum_min(off + 1, off + body + 1, window);
  } else {
    c.kept += sum_min(off + window, off + body + window, p.seq_k) -
              sum_max(off - window + 1, off + body - window + 1, 0);
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

std::int64_t dense_head_entries(double dense_head_density, std::int64_t visible) {
  if (!(dense_head_density < 1.0)) return std::numeric_limits<std::int64_t>::max();
  const double e = std::ceil(dense_head_density * static_cast<double>(visible));
  return std::clamp<std::int64_t>(static_cast<std::int64_t>(e), 1, std::max<std::int64_t>(visible, 1));
}

std::vector<std::int32_t> keep_all_if_dense(const Problem& p, std::int64_t window, std::int64_t dense_tail,
                                            std::vector<std::int32_t> columns, double dense_head_density) {
  if (!(dense_head_density < 1.0) || static_cast<std::int64_t>(columns.size()) == p.seq_k) return columns;
  const EntryCount c =
      count_entries(p, window, dense_tail, columns.data(), static_cast<std::int64_t>(columns.size()));
  if (c.kept >= dense_head_entries(dense_head_density, c.visible)) {
    columns.resize(static_cast<std::size_t>(p.seq_k));
    std::iota(columns.begin(), columns.end(), 0);
  }
  return columns;
}

}  // namespace sampleattn::core
