// Both CPU backends and exact_metrics against SPEC step 4 written out here, independently of the library's
// mask code (core::band, count_entries, the reference's row masks): the band, the kept columns, causality
// and the dense tail of every row, in fp64, on hand-built selections over awkward shapes. Also the alpha = 1
// rule on inputs built so that a column with a negligible sampled score carries a non-sampled row's mass.
// And window_attention (the band alone) against the same formula.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/tolerance.h"
#include "sampleattn/api.h"
#include "sampleattn/error.h"
#include "support/host_tensor.h"

namespace sampleattn {
namespace {

using test::HostTensor;

// SPEC step 4 for row r of head bh: keys in the band, or kept columns, or everything in the dense tail;
// always only the visible ones.
bool spec_keeps(const Selection& s, std::int64_t bh, std::int64_t r, std::int64_t j) {
  const std::int64_t pos = s.seq_k - s.seq_q + r;
  if (s.causal && j > pos) return false;
  if (r >= s.seq_q - s.dense_tail) return true;
  const std::int64_t w = s.window[bh];
  const bool band = s.causal ? (j > pos - w) : (j > pos - w && j < pos + w);
  if (band) return true;
  const auto cols = s.columns(bh);
  return std::binary_search(cols.begin(), cols.end(), static_cast<std::int32_t>(j));
}

struct SpecRow {
  std::vector<double> sparse, dense;  // [d]
  double lse = 0.0, kept_mass = 0.0;  // sparse log-sum-exp, dense mass inside the mask
};

SpecRow spec_row(const HostTensor& q, const HostTensor& k, const HostTensor& v, const Selection& s,
                 std::int64_t b, std::int64_t h, std::int64_t r) {
  const std::int64_t sk = s.seq_k, d = q.shape()[3], kvh = h / (q.shape()[2] / k.shape()[2]);
  const std::int64_t bh = b * s.heads + h, pos = sk - s.seq_q + r;
  const double scale = 1.0f / std::sqrt(static_cast<float>(d));  // AttnParams' default, a float
  std::vector<double> score(static_cast<std::size_t>(sk), -INFINITY);
  double m = -INFINITY;
  for (std::int64_t j = 0; j < sk; ++j) {
    if (s.causal && j > pos) continue;
    double x = 0.0;
    for (std::int64_t c = 0; c < d; ++c) x += static_cast<double>(q.at(b, r, h, c)) * k.at(b, j, kvh, c);
    score[j] = x * scale;
    m = std::max(m, score[j]);
  }
  SpecRow row;
  row.sparse.assign(static_cast<std::size_t>(d), 0.0);
  row.dense.assign(static_cast<std::size_t>(d), 0.0);
  double l_dense = 0.0, l_sparse = 0.0;
  for (std::int64_t j = 0; j < sk; ++j) {
    if (score[j] == -INFINITY) continue;
    const double p = std::exp(score[j] - m);
    const bool kept = spec_keeps(s, bh, r, j);
    l_dense += p;
    if (kept) {
      l_sparse += p;
      row.kept_mass += p;
    }
    for (std::int64_t c = 0; c < d; ++c) {
      row.dense[c] += p * v.at(b, j, kvh, c);
      if (kept) row.sparse[c] += p * v.at(b, j, kvh, c);
    }
  }
  for (std::int64_t c = 0; c < d; ++c) {
    row.dense[c] /= l_dense;
    row.sparse[c] /= l_sparse;
  }
  row.kept_mass /= l_dense;
  row.lse = m + std::log(l_sparse);
  return row;
}

TEST(SpecMask, HandBuiltSelectionsMatchTheSpecFormula) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  struct Shape {
    std::int64_t batch, sq, sk, hq, hkv, d;
  };
  const Shape shapes[] = {{1, 1, 1, 1, 1, 8},    {1, 17, 17, 4, 1, 16}, {2, 17, 97, 4, 4, 8},
                          {1, 97, 97, 8, 2, 16}, {1, 1, 130, 4, 1, 32}, {1, 60, 130, 8, 1, 8}};
  int n = 0;
  for (const Shape& sh : shapes) {
    for (const bool causal : {true, false}) {
      ++n;
      SCOPED_TRACE("shape " + std::to_string(sh.sq) + "x" + std::to_string(sh.sk) + " heads " +
                   std::to_string(sh.hq) + "/" + std::to_string(sh.hkv) + (causal ? " causal" : " non-causal"));
      HostTensor q(DType::f32, sh.batch, sh.sq, sh.hq, sh.d), k(DType::f32, sh.batch, sh.sk, sh.hkv, sh.d),
          v(DType::f32, sh.batch, sh.sk, sh.hkv, sh.d);
      q.fill_random(rng, 1.5f);
      k.fill_random(rng);
      v.fill_random(rng);
      const std::int64_t window = 1 + static_cast<std::int64_t>(rng() % 6);
      const std::int64_t columns = static_cast<std::int64_t>(rng() % (sh.sk / 4 + 1));
      const std::int64_t tail = n % 3 == 0 ? static_cast<std::int64_t>(rng() % (sh.sq / 2 + 1)) : 0;
      const Selection sel = test::random_selection(rng, sh.batch, sh.hq, sh.sq, sh.sk, causal, window, columns, tail);
      std::vector<std::int64_t> rows(static_cast<std::size_t>(sh.sq));
      for (std::int64_t r = 0; r < sh.sq; ++r) rows[r] = r;
      const std::vector<HeadMetrics> metrics = exact_metrics(q.view(), k.view(), v.view(), sel, rows, {causal});
      const core::Tolerance tol = core::tolerance(DType::f32);
      const double out_tol = tol.out * test::max_abs(v);
      for (const Backend backend : {Backend::cpu_reference, Backend::cpu}) {
        HostTensor out(DType::f32, sh.batch, sh.sq, sh.hq, sh.d);
        std::vector<float> lse(static_cast<std::size_t>(sh.batch * sh.hq * sh.sq), std::nanf(""));
        attend(q.view(), k.view(), v.view(), sel, out.view(), lse.data(), {causal}, {backend});
        for (std::int64_t b = 0; b < sh.batch; ++b) {
          for (std::int64_t h = 0; h < sh.hq; ++h) {
            const std::int64_t bh = b * sh.hq + h;
            double min_mass = 1.0, mass_sum = 0.0, err2 = 0.0, ref2 = 0.0;
            for (std::int64_t r = 0; r < sh.sq; ++r) {
              const SpecRow row = spec_row(q, k, v, sel, b, h, r);
              for (std::int64_t c = 0; c < sh.d; ++c) {
                ASSERT_NEAR(out.at(b, r, h, c), row.sparse[c], out_tol) << to_string(backend) << " head " << bh
                                                                      << " row " << r << " dim " << c;
                err2 += (row.sparse[c] - row.dense[c]) * (row.sparse[c] - row.dense[c]);
                ref2 += row.dense[c] * row.dense[c];
              }
              ASSERT_NEAR(lse[bh * sh.sq + r], row.lse, tol.lse)
                  << to_string(backend) << " head " << bh << " row " << r;
              min_mass = std::min(min_mass, row.kept_mass);
              mass_sum += row.kept_mass;
            }
            if (backend != Backend::cpu_reference) continue;
            EXPECT_NEAR(metrics[bh].min_kept_mass, min_mass, 1e-9) << "head " << bh;
            EXPECT_NEAR(metrics[bh].mean_kept_mass, mass_sum / static_cast<double>(sh.sq), 1e-9) << "head " << bh;
            EXPECT_NEAR(metrics[bh].rel_error, ref2 > 0.0 ? std::sqrt(err2 / ref2) : std::sqrt(err2), 1e-9)
                << "head " << bh;
          }
        }
      }
    }
  }
}

// window_attention: the band alone (SPEC step 4 with no columns and no tail), checked row by row against the
// formula, for windows from 1 to past seq_k, causal and not, on both CPU backends; a window below 1 is refused.
TEST(SpecMask, WindowAttentionKeepsTheBandAlone) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  struct Shape {
    std::int64_t batch, sq, sk, hq, hkv, d;
  };
  const Shape shapes[] = {{1, 1, 1, 1, 1, 8}, {2, 17, 97, 4, 4, 8}, {1, 97, 97, 8, 2, 16}, {1, 60, 130, 8, 1, 8}};
  for (const Shape& sh : shapes) {
    HostTensor q(DType::f32, sh.batch, sh.sq, sh.hq, sh.d), k(DType::f32, sh.batch, sh.sk, sh.hkv, sh.d),
        v(DType::f32, sh.batch, sh.sk, sh.hkv, sh.d);
    q.fill_random(rng, 1.5f);
    k.fill_random(rng);
    v.fill_random(rng);
    for (const bool causal : {true, false}) {
      for (const std::int64_t window : {std::int64_t{1}, 1 + static_cast<std::int64_t>(rng() % 9), sh.sk + 3}) {
        SCOPED_TRACE("shape " + std::to_string(sh.sq) + "x" + std::to_string(sh.sk) + " heads " +
                     std::to_string(sh.hq) + "/" + std::to_string(sh.hkv) + (causal ? " causal" : " non-causal") +
                     " window " + std::to_string(window));
        Selection band;  // what the formula reads: the window of every head, no columns, no tail
        band.batch = sh.batch;
        band.heads = sh.hq;
        band.seq_q = sh.sq;
        band.seq_k = sh.sk;
        band.causal = causal;
        band.window.assign(static_cast<std::size_t>(sh.batch * sh.hq), window);
        band.offsets.assign(static_cast<std::size_t>(sh.batch * sh.hq + 1), 0);
        const core::Tolerance tol = core::tolerance(DType::f32);
        for (const Backend backend : {Backend::cpu_reference, Backend::cpu}) {
          HostTensor out(DType::f32, sh.batch, sh.sq, sh.hq, sh.d);
          std::vector<float> lse(static_cast<std::size_t>(sh.batch * sh.hq * sh.sq), std::nanf(""));
          window_attention(q.view(), k.view(), v.view(), window, out.view(), lse.data(), {causal}, {backend});
          for (std::int64_t b = 0; b < sh.batch; ++b)
            for (std::int64_t h = 0; h < sh.hq; ++h)
              for (std::int64_t r = 0; r < sh.sq; ++r) {
                const SpecRow row = spec_row(q, k, v, band, b, h, r);
                for (std::int64_t c = 0; c < sh.d; ++c)
                  ASSERT_NEAR(out.at(b, r, h, c), row.sparse[c], tol.out * test::max_abs(v))
                      << to_string(backend) << " head " << h << " row " << r << " dim " << c;
                ASSERT_NEAR(lse[(b * sh.hq + h) * sh.sq + r], row.lse, tol.lse) << to_string(backend) << " row " << r;
              }
        }
      }
    }
    HostTensor out(DType::f32, sh.batch, sh.sq, sh.hq, sh.d);
    for (const std::int64_t bad : {std::int64_t{0}, std::int64_t{-5}}) {
      try {
        window_attention(q.view(), k.view(), v.view(), bad, out.view());
        ADD_FAILURE() << "window_attention accepted window " << bad;
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("window (" + std::to_string(bad) + ")"), std::string::npos) << e.what();
      }
    }
  }
}

// One key column c that every sampled row sees with a score ~40 below its other keys (sampled mass ~1e-18 of
// the total: below the rounding step of a double running sum) but that one non-sampled row attends to almost
// exclusively. alpha = 1 must keep it (SPEC: every column with mass), so sample_attention equals dense
// attention on every row; dropping it would move that row's output by ~max|v|.
TEST(SpecMask, AlphaOneKeepsAColumnBelowTheSumsRoundingStep) {
  const std::int64_t s = 64, d = 8, c = 5, target = 50;  // sampled rows at 5%: 15, 31, 47, 63
  HostTensor q(DType::f32, 1, s, 1, d), k(DType::f32, 1, s, 1, d), v(DType::f32, 1, s, 1, d);
  std::mt19937_64 rng(test::test_seed());
  v.fill_random(rng);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  for (std::int64_t r = 0; r < s; ++r) {
    for (std::int64_t e = 0; e < d; ++e) {
      q.set(0, r, 0, e, 0.0f);
      k.set(0, r, 0, e, 0.0f);
    }
    q.set(0, r, 0, r == target ? 1 : 0, 4.0f);
  }
  k.set(0, c, 0, 0, static_cast<float>(-40.0 / (4.0 * scale)));  // sampled rows: score -40 on column c
  k.set(0, c, 0, 1, static_cast<float>(20.0 / (4.0 * scale)));   // the target row: +20 on column c
  SampleConfig cfg;
  cfg.alpha = 1.0;
  cfg.window_ratio = 0.0;
  cfg.min_window = 1;
  for (const Backend backend : {Backend::cpu_reference, Backend::cpu}) {
    SCOPED_TRACE(to_string(backend));
    HostTensor sparse(DType::f32, 1, s, 1, d), dense(DType::f32, 1, s, 1, d);
    const Selection sel = sample_attention(q.view(), k.view(), v.view(), sparse.view(), nullptr, {}, cfg, {backend});
    dense_attention(q.view(), k.view(), v.view(), dense.view(), nullptr, {}, {backend});
    const auto cols = sel.columns(0);
    EXPECT_TRUE(std::binary_search(cols.begin(), cols.end(), static_cast<std::int32_t>(c)));
    EXPECT_LE(test::max_abs_diff(sparse, dense), core::tolerance(DType::f32).out * test::max_abs(v));
  }
}

}  // namespace
}  // namespace sampleattn
