// Core arithmetic: window size, sampled-row schedule, stage-2 threshold and closed-form entry counts,
// checked against worked examples and brute-force counting.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <random>
#include <vector>

#include "core/schedule.h"
#include "core/threshold.h"
#include "support/host_tensor.h"

namespace sampleattn {
namespace {

core::Problem problem(std::int64_t sq, std::int64_t sk, bool causal) {
  core::Problem p;
  p.batch = 1;
  p.seq_q = sq;
  p.seq_k = sk;
  p.q_heads = p.kv_heads = 1;
  p.head_dim = 8;
  p.causal = causal;
  return p;
}

TEST(Schedule, CeilRatioDoesNotRoundExactProductsUp) {
  EXPECT_EQ(core::ceil_ratio(0.05, 20), 1);
  EXPECT_EQ(core::ceil_ratio(0.05, 21), 2);
  EXPECT_EQ(core::ceil_ratio(0.08, 16384), 1311);
  EXPECT_EQ(core::ceil_ratio(0.1, 30), 3);
}

TEST(Schedule, WindowSize) {
  SampleConfig c;
  EXPECT_EQ(core::window_size(c, 16384), 1311);
  EXPECT_EQ(core::window_size(c, 100), 64);  // min_window
  EXPECT_EQ(core::window_size(c, 17), 17);   // clipped to Sk
  c.window_ratio = 0.0;
  c.min_window = 0;
  EXPECT_EQ(core::window_size(c, 100), 1);  // the diagonal is always kept
}

TEST(Schedule, SampledRowsAreEquidistantAndIncludeTheLast) {
  EXPECT_EQ(core::sampled_rows(0.05, 100), (std::vector<std::int64_t>{19, 39, 59, 79, 99}));
  EXPECT_EQ(core::sampled_rows(0.05, 1), (std::vector<std::int64_t>{0}));
  EXPECT_EQ(core::sampled_rows(1.0, 3), (std::vector<std::int64_t>{0, 1, 2}));
  EXPECT_EQ(core::sampled_rows(0.5, 5), (std::vector<std::int64_t>{0, 2, 4}));
  for (std::int64_t sq : {1, 17, 97, 1025, 4097}) {
    const auto rows = core::sampled_rows(0.05, sq);
    EXPECT_EQ(rows.back(), sq - 1);
    EXPECT_EQ(static_cast<std::int64_t>(rows.size()), std::max<std::int64_t>(1, (sq * 5 + 99) / 100));
    for (std::size_t i = 1; i < rows.size(); ++i) EXPECT_LT(rows[i - 1], rows[i]);
  }
}

TEST(Threshold, SmallestPrefixReachingAlpha) {
  const double s[] = {0.1, 0.5, 0.05, 0.3, 0.05};
  EXPECT_EQ(core::choose_columns<double>(s, 5, 0.5, 0), (std::vector<std::int32_t>{1}));
  EXPECT_EQ(core::choose_columns<double>(s, 5, 0.8, 0), (std::vector<std::int32_t>{1, 3}));
  EXPECT_EQ(core::choose_columns<double>(s, 5, 0.85, 0), (std::vector<std::int32_t>{0, 1, 3}));
  EXPECT_EQ(core::choose_columns<double>(s, 5, 1.0, 0), (std::vector<std::int32_t>{0, 1, 2, 3, 4}));
}

TEST(Threshold, TiesGoToTheLowerIndex) {
  const float s[] = {1, 1, 1, 1, 2, 1};
  // total 7: 0.4 needs 2.8 = the 2 plus one of the 1s; 0.6 needs 4.2 = the 2 plus three 1s.
  EXPECT_EQ(core::choose_columns<float>(s, 6, 0.4, 0), (std::vector<std::int32_t>{0, 4}));
  EXPECT_EQ(core::choose_columns<float>(s, 6, 0.6, 0), (std::vector<std::int32_t>{0, 1, 2, 4}));
}

TEST(Threshold, AlphaOneKeepsExactlyTheColumnsWithMass) {
  const double s[] = {0.0, 0.25, 0.0, 0.5, 0.25, 0.0};
  EXPECT_EQ(core::choose_columns<double>(s, 6, 1.0, 0), (std::vector<std::int32_t>{1, 3, 4}));
  // Scores below the rounding step of the running sum (1 + 1e-17 == 1 in double) still carry mass.
  const double tiny[] = {1e-30, 1.0, 1e-17, 0.0, 1e-300};
  EXPECT_EQ(core::choose_columns<double>(tiny, 5, 1.0, 0), (std::vector<std::int32_t>{0, 1, 2, 4}));
  const float tiny_f[] = {1e-30f, 1.0f, 1e-9f, 0.0f, 1e-38f};
  EXPECT_EQ(core::choose_columns<float>(tiny_f, 5, 1.0, 0), (std::vector<std::int32_t>{0, 1, 2, 4}));
}

// The column choice written out plainly (SPEC step 3: descending score, the lower index first among ties,
// the running sum in that order; alpha = 1 keeps every column with mass), against choose_columns on random
// scores with many exact ties, zeros and a negative zero, in float and double.
template <typename Score>
std::vector<std::int32_t> choose_plainly(const std::vector<Score>& s, double alpha, std::int64_t sinks) {
  std::vector<std::int32_t> order(s.size());
  for (std::size_t j = 0; j < s.size(); ++j) order[j] = static_cast<std::int32_t>(j);
  std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) { return s[a] > s[b]; });
  double total = 0.0;
  for (std::int32_t j : order) total += s[j];
  std::vector<std::int32_t> kept;
  double running = 0.0;
  for (std::int32_t j : order) {
    if ((alpha < 1.0 && running >= alpha * total) || !(s[j] > 0)) break;
    running += s[j];
    kept.push_back(j);
  }
  for (std::int64_t j = 0; j < std::min<std::int64_t>(sinks, static_cast<std::int64_t>(s.size())); ++j)
    kept.push_back(static_cast<std::int32_t>(j));
  std::sort(kept.begin(), kept.end());
  kept.erase(std::unique(kept.begin(), kept.end()), kept.end());
  return kept;
}

template <typename Score>
void check_against_plain(std::mt19937_64& rng) {
  for (const int n : {1, 2, 17, 1000, 5000}) {
    std::vector<Score> s(static_cast<std::size_t>(n));
    std::uniform_int_distribution<int> level(0, 12);
    std::exponential_distribution<double> heavy(1.0);
    for (Score& x : s) {
      const int l = level(rng);
      x = l == 0 ? Score(0) : l < 6 ? static_cast<Score>(l) / Score(8) : static_cast<Score>(heavy(rng));
    }
    s[static_cast<std::size_t>(n / 2)] = -Score(0);
    for (const double alpha : {0.1, 0.5, 0.8, 0.95, 0.999, 1.0})
      for (const std::int64_t sinks : {0, 3})
        ASSERT_EQ(core::choose_columns<Score>(s.data(), n, alpha, sinks), choose_plainly(s, alpha, sinks))
            << "n " << n << " alpha " << alpha << " sinks " << sinks;
  }
}

TEST(Threshold, MatchesThePlainDefinitionOnTiesAndZeros) {
  std::mt19937_64 rng(test::test_seed());
  for (int rep = 0; rep < 5; ++rep) {
    check_against_plain<double>(rng);
    check_against_plain<float>(rng);
  }
}

TEST(Threshold, SinkColumnsAreForcedOnce) {
  const double s[] = {0.0, 0.0, 1.0, 0.0};
  EXPECT_EQ(core::choose_columns<double>(s, 4, 0.9, 2), (std::vector<std::int32_t>{0, 1, 2}));
  EXPECT_EQ(core::choose_columns<double>(s, 4, 0.9, 3), (std::vector<std::int32_t>{0, 1, 2}));
  EXPECT_EQ(core::choose_columns<double>(s, 4, 0.9, 100), (std::vector<std::int32_t>{0, 1, 2, 3}));
}

// Brute force: walk every (row, key) and test membership as SPEC step 4 states it.
core::EntryCount brute_count(const core::Problem& p, std::int64_t w, std::int64_t tail,
                             const std::vector<std::int32_t>& cols) {
  core::EntryCount c;
  std::vector<char> is_col(static_cast<std::size_t>(p.seq_k), 0);
  for (auto j : cols) is_col[j] = 1;
  for (std::int64_t r = 0; r < p.seq_q; ++r) {
    const std::int64_t pos = p.seq_k - p.seq_q + r;
    for (std::int64_t j = 0; j < p.seq_k; ++j) {
      const bool visible = !p.causal || j <= pos;
      if (!visible) continue;
      ++c.visible;
      const bool in_band = p.causal ? (j > pos - w) : (j > pos - w && j < pos + w);
      if (r >= p.seq_q - tail || in_band || is_col[j]) ++c.kept;
    }
  }
  return c;
}

TEST(Schedule, CountEntriesMatchesBruteForce) {
  std::mt19937_64 rng(7);
  for (bool causal : {true, false})
    for (auto [sq, sk] : {std::pair{1, 1}, {17, 17}, {5, 97}, {97, 97}, {40, 130}})
      for (std::int64_t w : {1, 3, 16, 200})
        for (std::int64_t tail : {0, 2, 1000}) {
          const core::Problem p = problem(sq, sk, causal);
          std::vector<std::int32_t> cols;
          for (std::int32_t j = 0; j < sk; ++j)
            if (rng() % 3 == 0) cols.push_back(j);
          const std::int64_t wc = std::min<std::int64_t>(w, sk);
          const auto fast = core::count_entries(p, w, tail, cols.data(), static_cast<std::int64_t>(cols.size()));
          const auto slow = brute_count(p, wc, tail, cols);
          EXPECT_EQ(fast.kept, slow.kept) << "sq " << sq << " sk " << sk << " w " << w << " causal " << causal;
          EXPECT_EQ(fast.visible, slow.visible);
          const auto band_only = core::count_entries(p, w, tail, nullptr, 0);
          EXPECT_EQ(band_only.kept, brute_count(p, wc, tail, {}).kept) << "sq " << sq << " sk " << sk << " w " << w;
        }
}

TEST(Schedule, DenseHeadEntriesRoundUpAndOneTurnsTheRuleOff) {
  EXPECT_EQ(core::dense_head_entries(0.75, 1000), 750);
  EXPECT_EQ(core::dense_head_entries(0.75, 1001), 751);  // 750.75 rounds up
  EXPECT_EQ(core::dense_head_entries(1e-9, 17), 1);
  EXPECT_EQ(core::dense_head_entries(1.0, 4097), std::numeric_limits<std::int64_t>::max());
}

TEST(Schedule, HeadsWhoseMaskReachesTheDensityKeepEveryColumn) {
  // Sq = Sk = 10, causal: 55 visible entries. Window 2: the band keeps 19 (1 + 2 * 9).
  const core::Problem p = problem(10, 10, true);
  const std::vector<std::int32_t> none, some{0, 1};  // columns 0, 1: +8 and +7 entries outside the band -> 34
  EXPECT_EQ(core::count_entries(p, 2, 0, some.data(), 2).kept, 34);
  EXPECT_EQ(core::keep_all_if_dense(p, 2, 0, some, 1.0), some);
  EXPECT_EQ(core::keep_all_if_dense(p, 2, 0, some, 0.63), some);  // 0.63 * 55 = 34.65: 35 needed
  const std::vector<std::int32_t> all{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  EXPECT_EQ(core::keep_all_if_dense(p, 2, 0, some, 0.6), all);   // 33 needed
  EXPECT_EQ(core::keep_all_if_dense(p, 2, 0, none, 0.34), all);  // 18.7: the band alone reaches it
  EXPECT_EQ(core::keep_all_if_dense(p, 2, 0, none, 0.5), none);
  EXPECT_EQ(core::keep_all_if_dense(p, 2, 8, none, 0.5), all);  // a dense tail of 8 rows: every entry
  EXPECT_EQ(core::keep_all_if_dense(p, 2, 0, all, 0.01), all);
}

TEST(Schedule, CountEntriesNearTheInt32Limit) {
  // Closed forms at Sq = Sk = 2^31 - 300 (no brute force possible): a full band keeps every visible entry,
  // and the sums do not overflow on the way.
  const std::int64_t n = (std::int64_t{1} << 31) - 300;
  const core::Problem causal = problem(n, n, true), full = problem(n, n, false);
  const auto c = core::count_entries(causal, n, 0, nullptr, 0);
  EXPECT_EQ(c.visible, n / 2 * (n + 1));
  EXPECT_EQ(c.kept, c.visible);
  const auto w1 = core::count_entries(causal, 1, 0, nullptr, 0);
  EXPECT_EQ(w1.kept, n);  // the diagonal
  const auto f = core::count_entries(full, n, 0, nullptr, 0);
  EXPECT_EQ(f.visible, n * n);
  EXPECT_EQ(f.kept, n * n);
  const auto tail = core::count_entries(full, 1, n, nullptr, 0);
  EXPECT_EQ(tail.kept, n * n);
}

}  // namespace
}  // namespace sampleattn
