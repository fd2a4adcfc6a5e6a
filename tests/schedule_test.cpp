// Core arithmetic: window size, sampled-row schedule, stage-2 threshold and closed-form entry counts,
// checked against worked examples and brute-force counting.
#include <gtest/gtest.h>

#include <random>

#include "core/schedule.h"
#include "core/threshold.h"

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
        for (std::int64_t tail : {0, 2}) {
          const core::Problem p = problem(sq, sk, causal);
          std::vector<std::int32_t> cols;
          for (std::int32_t j = 0; j < sk; ++j)
            if (rng() % 3 == 0) cols.push_back(j);
          const std::int64_t wc = std::min<std::int64_t>(w, sk);
          const auto fast = core::count_entries(p, wc, tail, cols.data(), static_cast<std::int64_t>(cols.size()));
          const auto slow = brute_count(p, wc, tail, cols);
          EXPECT_EQ(fast.kept, slow.kept) << "sq " << sq << " sk " << sk << " w " << w << " causal " << causal;
          EXPECT_EQ(fast.visible, slow.visible);
        }
}

}  // namespace
}  // namespace sampleattn
