// The CPU reference against closed-form answers: uniform attention (q = 0), a hand-computed two-key case,
// GQA head mapping, hand-made selections whose right answer is known, and the SPEC's error bound.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "sampleattn/api.h"
#include "sampleattn/error.h"
#include "support/host_tensor.h"

namespace sampleattn {
namespace {

using test::HostTensor;

const ExecOptions kRef{Backend::cpu_reference};

void fill(HostTensor& t, float value) {
  const auto& s = t.shape();
  for (std::int64_t b = 0; b < s[0]; ++b)
    for (std::int64_t i = 0; i < s[1]; ++i)
      for (std::int64_t h = 0; h < s[2]; ++h)
        for (std::int64_t d = 0; d < s[3]; ++d) t.set(b, i, h, d, value);
}

TEST(Reference, ZeroQueriesAverageTheVisibleValues) {
  std::mt19937_64 rng(test::test_seed());
  for (bool causal : {true, false}) {
    const std::int64_t sq = 5, sk = 9, d = 4;
    HostTensor q(DType::f32, 1, sq, 2, d), k(DType::f32, 1, sk, 2, d), v(DType::f32, 1, sk, 2, d);
    fill(q, 0.0f);
    k.fill_random(rng);
    v.fill_random(rng);
    HostTensor out(DType::f32, 1, sq, 2, d);
    std::vector<float> lse(2 * sq, NAN);
    dense_attention(q.view(), k.view(), v.view(), out.view(), lse.data(), {causal}, kRef);
    for (std::int64_t h = 0; h < 2; ++h)
      for (std::int64_t r = 0; r < sq; ++r) {
        const std::int64_t end = causal ? sk - sq + r + 1 : sk;
        EXPECT_NEAR(lse[h * sq + r], std::log(double(end)), 1e-6);
        for (std::int64_t c = 0; c < d; ++c) {
          double mean = 0;
          for (std::int64_t j = 0; j < end; ++j) mean += v.at(0, j, h, c);
          EXPECT_NEAR(out.at(0, r, h, c), mean / end, 1e-6);
        }
      }
  }
}

TEST(Reference, TwoKeysByHand) {
  // d = 1, scale 0.5: row 0 sees key 0 only; row 1 sees scores 0.5 * 2 * (1, -1) = (1, -1).
  HostTensor q(DType::f32, 1, 2, 1, 1), k(DType::f32, 1, 2, 1, 1), v(DType::f32, 1, 2, 1, 1), out(DType::f32, 1, 2, 1, 1);
  q.set(0, 0, 0, 0, 3.0f);
  q.set(0, 1, 0, 0, 2.0f);
  k.set(0, 0, 0, 0, 1.0f);
  k.set(0, 1, 0, 0, -1.0f);
  v.set(0, 0, 0, 0, 10.0f);
  v.set(0, 1, 0, 0, -4.0f);
  std::vector<float> lse(2);
  AttnParams params;
  params.scale = 0.5f;
  dense_attention(q.view(), k.view(), v.view(), out.view(), lse.data(), params, kRef);
  EXPECT_NEAR(out.at(0, 0, 0, 0), 10.0, 1e-6);
  EXPECT_NEAR(lse[0], 1.5, 1e-6);
  const double p0 = std::exp(1.0) / (std::exp(1.0) + std::exp(-1.0));
  EXPECT_NEAR(out.at(0, 1, 0, 0), p0 * 10.0 + (1 - p0) * -4.0, 1e-5);
  EXPECT_NEAR(lse[1], std::log(std::exp(1.0) + std::exp(-1.0)), 1e-6);
}

TEST(Reference, GqaQueryHeadReadsItsGroupsKvHead) {
  std::mt19937_64 rng(test::test_seed());
  const std::int64_t hq = 8, hkv = 2, s = 6, d = 4;
  HostTensor q(DType::f32, 1, s, hq, d), k(DType::f32, 1, s, hkv, d), v(DType::f32, 1, s, hkv, d), out(DType::f32, 1, s, hq, d);
  q.fill_random(rng);
  k.fill_random(rng);
  for (std::int64_t j = 0; j < s; ++j)
    for (std::int64_t c = 0; c < d; ++c) {
      v.set(0, j, 0, c, 1.0f);
      v.set(0, j, 1, c, -2.0f);
    }
  dense_attention(q.view(), k.view(), v.view(), out.view(), nullptr, {}, kRef);
  for (std::int64_t h = 0; h < hq; ++h) EXPECT_NEAR(out.at(0, s - 1, h, 0), h < 4 ? 1.0 : -2.0, 1e-6);
}

TEST(ReferenceSelect, PlantedHeavyColumnIsChosen) {
  std::mt19937_64 rng(test::test_seed());
  const std::int64_t s = 200, d = 16, heavy = 37;
  HostTensor q(DType::f32, 1, s, 1, d), k(DType::f32, 1, s, 1, d);
  k.fill_random(rng, 0.1f);
  for (std::int64_t i = 0; i < s; ++i)
    for (std::int64_t c = 0; c < d; ++c) q.set(0, i, 0, c, 1.0f);
  for (std::int64_t c = 0; c < d; ++c) k.set(0, heavy, 0, c, 4.0f);  // score 16 above the rest
  SampleConfig cfg;
  cfg.alpha = 0.8;
  cfg.window_ratio = 0.0;
  cfg.min_window = 1;
  const Selection sel = select(q.view(), k.view(), {}, cfg, kRef);
  ASSERT_EQ(sel.columns(0).size(), 1u);
  EXPECT_EQ(sel.columns(0)[0], heavy);
  EXPECT_GE(sel.stats[0].sampled_coverage, cfg.alpha);
}

TEST(ReferenceSelect, AlphaOneKeepsEveryColumnWithMass) {
  std::mt19937_64 rng(test::test_seed());
  HostTensor q(DType::f32, 1, 50, 2, 8), k(DType::f32, 1, 80, 2, 8);
  q.fill_random(rng);
  k.fill_random(rng);
  SampleConfig cfg;
  cfg.alpha = 1.0;
  const Selection sel = select(q.view(), k.view(), {}, cfg, kRef);
  for (std::int64_t bh = 0; bh < 2; ++bh) {
    EXPECT_EQ(sel.columns(bh).size(), 80u);  // the last sampled row sees all 80 keys, all with mass
    EXPECT_NEAR(sel.stats[bh].sampled_coverage, 1.0, 1e-12);
  }
}

TEST(ReferenceSelect, TiesGoToTheLowerIndex) {
  // q = 0 and one sampled row (the last): uniform 1/10 over 10 keys; alpha 0.5 keeps keys 0..4.
  HostTensor q(DType::f32, 1, 10, 1, 4), k(DType::f32, 1, 10, 1, 4);
  fill(q, 0.0f);
  std::mt19937_64 rng(1);
  k.fill_random(rng);
  SampleConfig cfg;
  cfg.alpha = 0.5;
  cfg.sample_ratio = 0.1;
  cfg.window_ratio = 0.0;
  cfg.min_window = 1;
  const Selection sel = select(q.view(), k.view(), {}, cfg, kRef);
  EXPECT_EQ(std::vector<std::int32_t>(sel.columns(0).begin(), sel.columns(0).end()),
            (std::vector<std::int32_t>{0, 1, 2, 3, 4}));
}

TEST(ReferenceSelect, SinkTokensAreForced) {
  std::mt19937_64 rng(test::test_seed());
  HostTensor q(DType::f32, 1, 64, 1, 8), k(DType::f32, 1, 64, 1, 8);
  q.fill_random(rng);
  k.fill_random(rng);
  SampleConfig cfg;
  cfg.alpha = 0.1;
  cfg.sink_tokens = 3;
  const Selection sel = select(q.view(), k.view(), {}, cfg, kRef);
  ASSERT_GE(sel.columns(0).size(), 3u);
  EXPECT_EQ(sel.columns(0)[0], 0);
  EXPECT_EQ(sel.columns(0)[1], 1);
  EXPECT_EQ(sel.columns(0)[2], 2);
}

TEST(ReferenceSelect, DenseHeadDensityPromotesExactlyTheHeadsThatReachIt) {
  // Against the paper's selection (density rule off) of the same inputs: a head whose mask keeps at least
  // ceil(density * visible) entries keeps every column with coverage 1, every other head is unchanged.
  std::mt19937_64 rng(test::test_seed());
  const std::int64_t sq = 40, sk = 97;
  HostTensor q(DType::f32, 1, sq, 6, 8), k(DType::f32, 1, sk, 2, 8);
  q.fill_random(rng, 3.0f);
  k.fill_random(rng);
  for (std::int64_t s = 0; s < sq; ++s)  // heads 0 and 3: q = 0, uniform attention (nearly every entry)
    for (std::int64_t h : {0, 3})
      for (std::int64_t e = 0; e < 8; ++e) q.set(0, s, h, e, 0.0f);
  SampleConfig paper;
  paper.alpha = 0.9;
  paper.sample_ratio = 0.2;
  paper.min_window = 4;
  const Selection base = select(q.view(), k.view(), {}, paper, kRef);
  for (double density : {0.05, 0.5, 0.8, 1.0}) {
    SampleConfig cfg = paper;
    cfg.dense_head_density = density;
    const Selection sel = select(q.view(), k.view(), {}, cfg, kRef);
    int promoted = 0;
    for (std::int64_t h = 0; h < 6; ++h) {
      const auto before = base.columns(h);
      const auto after = sel.columns(h);
      const HeadStats& b = base.stats[h];
      if (density < 1.0 && static_cast<double>(b.kept_entries) >= std::ceil(density * b.visible_entries)) {
        ASSERT_EQ(static_cast<std::int64_t>(after.size()), sk) << "density " << density << " head " << h;
        for (std::int64_t j = 0; j < sk; ++j) EXPECT_EQ(after[j], j);
        EXPECT_NEAR(sel.stats[h].sampled_coverage, 1.0, 1e-12);
        EXPECT_EQ(sel.stats[h].kept_entries, sel.stats[h].visible_entries);
        promoted += static_cast<std::int64_t>(before.size()) < sk;
      } else {
        EXPECT_EQ(std::vector<std::int32_t>(after.begin(), after.end()),
                  std::vector<std::int32_t>(before.begin(), before.end()))
            << "density " << density << " head " << h;
        EXPECT_EQ(sel.stats[h].sampled_coverage, b.sampled_coverage);
      }
    }
    if (density == 0.05) EXPECT_EQ(promoted, 6);  // every head reaches 5%: the test changes something
    if (density == 0.8) EXPECT_GE(promoted, 2);   // the uniform heads
  }
}

TEST(ReferenceSelect, KeyInWindowAndStripesCountsOnce) {
  Selection sel;
  sel.batch = sel.heads = 1;
  sel.seq_q = sel.seq_k = 4;
  sel.window = {2};
  sel.offsets = {0, 1};
  sel.indices = {3};  // inside the band of the only row that sees it
  sel.recompute_counts();
  EXPECT_EQ(sel.stats[0].kept_entries, 7);  // band: 1 + 2 + 2 + 2
  EXPECT_EQ(sel.stats[0].visible_entries, 10);
  sel.indices = {0};  // outside the band of rows 2 and 3
  sel.recompute_counts();
  EXPECT_EQ(sel.stats[0].kept_entries, 9);
}

TEST(ReferenceSelect, CoverageReachesAlphaAndSparseObeysTheErrorBound) {
  std::mt19937_64 rng(test::test_seed());
  const std::int64_t sq = 48, sk = 96, d = 8;
  HostTensor q(DType::f32, 1, sq, 4, d), k(DType::f32, 1, sk, 2, d), v(DType::f32, 1, sk, 2, d);
  q.fill_random(rng, 1.5f);
  k.fill_random(rng);
  v.fill_random(rng);
  SampleConfig cfg;
  cfg.alpha = 0.7;
  cfg.sample_ratio = 0.25;
  cfg.min_window = 4;
  HostTensor sparse(DType::f32, 1, sq, 4, d), dense(DType::f32, 1, sq, 4, d);
  const Selection sel = sample_attention(q.view(), k.view(), v.view(), sparse.view(), nullptr, {}, cfg, kRef);
  dense_attention(q.view(), k.view(), v.view(), dense.view(), nullptr, {}, kRef);
  std::vector<std::int64_t> rows(sq);
  for (std::int64_t r = 0; r < sq; ++r) rows[r] = r;
  const double vmax = test::max_abs(v);
  for (std::int64_t h = 0; h < 4; ++h) {
    EXPECT_GE(sel.stats[h].sampled_coverage, cfg.alpha - 1e-12);
    for (std::int64_t r = 0; r < sq; ++r) {
      const auto m = exact_metrics(q.view(), k.view(), v.view(), sel, {r});
      const double bound = 2.0 * (1.0 - m[h].min_kept_mass) * vmax + 1e-6;
      for (std::int64_t c = 0; c < d; ++c) EXPECT_LE(std::abs(sparse.at(0, r, h, c) - dense.at(0, r, h, c)), bound);
    }
  }
}

TEST(ReferenceSelect, AlphaOneEqualsDense) {
  std::mt19937_64 rng(test::test_seed());
  for (bool causal : {true, false}) {
    HostTensor q(DType::f32, 2, 20, 4, 8), k(DType::f32, 2, 33, 1, 8), v(DType::f32, 2, 33, 1, 8);
    q.fill_random(rng);
    k.fill_random(rng);
    v.fill_random(rng);
    for (const double window_ratio : {1.0, 0.0}) {  // 0: a one-key window, every other key kept by alpha = 1
      SampleConfig cfg;
      cfg.alpha = 1.0;
      cfg.window_ratio = window_ratio;
      cfg.min_window = 1;
      HostTensor sparse(DType::f32, 2, 20, 4, 8), dense(DType::f32, 2, 20, 4, 8);
      std::vector<float> lse_s(2 * 4 * 20), lse_d(2 * 4 * 20);
      const Selection sel =
          sample_attention(q.view(), k.view(), v.view(), sparse.view(), lse_s.data(), {causal}, cfg, kRef);
      dense_attention(q.view(), k.view(), v.view(), dense.view(), lse_d.data(), {causal}, kRef);
      EXPECT_DOUBLE_EQ(sel.density(), 1.0) << "window_ratio " << window_ratio;
      EXPECT_LE(test::max_abs_diff(sparse, dense), 1e-6);
      EXPECT_LE(test::max_abs_diff(lse_s, lse_d), 1e-6);
    }
  }
}

TEST(Selection, ImpossibleSizesAreErrorsNotOverflow) {
  Selection sel;
  sel.batch = sel.heads = std::int64_t{1} << 40;
  sel.seq_q = sel.seq_k = 4;
  EXPECT_THROW(sel.validate(), Error);
  float x = 0.0f;
  EXPECT_THROW(TensorView::contiguous(&x, DType::f32, 1, 0, std::int64_t{1} << 40, std::int64_t{1} << 40), Error);
}

TEST(ReferenceSelect, HugeUserWindowCoversEverythingWithoutOverflow) {
  std::mt19937_64 rng(test::test_seed());
  for (bool causal : {true, false}) {
    HostTensor q(DType::f32, 1, 9, 2, 8), k(DType::f32, 1, 13, 2, 8), v(DType::f32, 1, 13, 2, 8);
    q.fill_random(rng);
    k.fill_random(rng);
    v.fill_random(rng);
    Selection sel = test::random_selection(rng, 1, 2, 9, 13, causal, 1, 0);
    for (auto& w : sel.window) w = INT64_MAX;
    sel.recompute_counts();
    EXPECT_DOUBLE_EQ(sel.density(), 1.0);
    for (Backend b : {Backend::cpu_reference, Backend::cpu}) {
      HostTensor sparse(DType::f32, 1, 9, 2, 8), dense(DType::f32, 1, 9, 2, 8);
      attend(q.view(), k.view(), v.view(), sel, sparse.view(), nullptr, {causal}, {b});
      dense_attention(q.view(), k.view(), v.view(), dense.view(), nullptr, {causal}, {b});
      EXPECT_LE(test::max_abs_diff(sparse, dense), 1e-5) << to_string(b) << " causal " << causal;
    }
  }
}

}  // namespace
}  // namespace sampleattn
