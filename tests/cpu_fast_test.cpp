// The fast CPU backend (src/cpu/fast.h) against the CPU reference, through the public API, on fresh random
// inputs over awkward shapes (Sk = 1, 17, 97, 1025, 4097; Sq < Sk; GQA 1/4/8; d 8..256; batch 2), all three
// dtypes, strided views and causal / non-causal masks. Outputs start poisoned (NaN), so an element the
// backend forgot fails the comparison. Every kernel set the CPU has is checked (AMX, AVX-512 with BF16 dot
// products, AVX-512, AVX2, portable): CpuFast.* run the default set, CpuFastKernelSet.* each of them; the
// AVX-512 set's attention must equal the AVX2 set's bit for bit, and the two bf16 paths are checked on shapes
// that reach their pair padding and tile edges.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/half.h"
#include "core/schedule.h"
#include "cpu/fast_kernels.h"
#include "sampleattn/api.h"
#include "sampleattn/error.h"
#include "support/host_tensor.h"
#include "support/row_check.h"
#include "core/tolerance.h"
#include "cpu/reference.h"

namespace sampleattn {
namespace {

using test::HostTensor;
using test::Layout;

const ExecOptions kRef{Backend::cpu_reference};

ExecOptions fast_options(int threads = 0) {
  ExecOptions o;
  o.backend = Backend::cpu;
  o.num_threads = threads;
  return o;
}

struct Case {
  std::int64_t batch, sq, sk, hq, hkv, d;
  bool causal;
  DType dtype;
  Layout layout;
};

std::string describe(const Case& c) {
  std::ostringstream os;
  os << "B" << c.batch << " Sq" << c.sq << " Sk" << c.sk << " Hq" << c.hq << " Hkv" << c.hkv << " d" << c.d
     << (c.causal ? " causal " : " non-causal ") << to_string(c.dtype) << " layout " << static_cast<int>(c.layout);
  return os.str();
}

struct Inputs {
  HostTensor q, k, v;
};

// q in the case's layout, k and v in the two others (every layout is exercised as K/V too).
Inputs make_inputs(const Case& c, std::mt19937_64& rng) {
  const Layout others[3][2] = {{Layout::bhsd, Layout::padded}, {Layout::padded, Layout::bshd}, {Layout::bshd, Layout::bhsd}};
  const int li = static_cast<int>(c.layout);
  Inputs in{HostTensor(c.dtype, c.batch, c.sq, c.hq, c.d, c.layout),
            HostTensor(c.dtype, c.batch, c.sk, c.hkv, c.d, others[li][0]),
            HostTensor(c.dtype, c.batch, c.sk, c.hkv, c.d, others[li][1])};
  in.q.fill_random(rng);
  in.k.fill_random(rng);
  in.v.fill_random(rng);
  return in;
}

// Small and awkward shapes that the reference runs in well under a second, over every dtype and layout.
std::vector<Case> small_cases() {
  const std::vector<std::array<std::int64_t, 6>> shapes = {
      {1, 1, 1, 1, 1, 64},    {1, 17, 17, 4, 1, 64},   {2, 97, 97, 8, 1, 128}, {1, 13, 97, 4, 2, 128},
      {1, 33, 50, 2, 2, 72},  {1, 20, 40, 1, 1, 256},  {1, 5, 9, 3, 1, 8},     {2, 70, 130, 2, 2, 64},
      {1, 150, 150, 2, 2, 40}};
  std::vector<Case> cases;
  int i = 0;
  for (const auto& s : shapes)
    for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
      const Layout layout = static_cast<Layout>(i % 3);
      const bool causal = (i % 4) != 3;
      cases.push_back({s[0], s[1], s[2], s[3], s[4], s[5], causal, dt, layout});
      ++i;
    }
  return cases;
}

// Longer sequences, one dtype each (the fp64 reference takes a few seconds here).
std::vector<Case> long_cases() {
  return {{1, 1025, 1025, 2, 1, 64, true, DType::bf16, Layout::bhsd},
          {1, 40, 1025, 4, 4, 128, true, DType::f16, Layout::padded},
          {1, 64, 4097, 8, 2, 128, true, DType::bf16, Layout::bshd},
          {1, 300, 1025, 2, 2, 64, false, DType::f32, Layout::bshd}};
}

std::vector<float> poisoned_lse(const Case& c) {
  return std::vector<float>(static_cast<std::size_t>(c.batch * c.hq * c.sq), std::nanf(""));
}

AttnParams params_of(const Case& c) {
  AttnParams p;
  p.causal = c.causal;
  return p;
}

// The reference's lse at twice the softmax scale over the same mask (dense when sel is null): with the lse at
// the scale it gives each row's spread for the per-row rounding check (support/row_check.h). Empty for f32
// outputs, which that check does not cover (fp32 accumulation is not a rounding of the output).
std::vector<float> reference_lse_twice(const Case& c, const Inputs& in, const Selection* sel) {
  if (c.dtype == DType::f32) return {};
  AttnParams p = params_of(c);
  p.scale = 2.0f / std::sqrt(static_cast<float>(c.d));
  HostTensor scratch(DType::f32, c.batch, c.sq, c.hq, c.d);
  std::vector<float> lse = poisoned_lse(c);
  if (sel != nullptr)
    attend(in.q.view(), in.k.view(), in.v.view(), *sel, scratch.view(), lse.data(), p, kRef);
  else
    dense_attention(in.q.view(), in.k.view(), in.v.view(), scratch.view(), lse.data(), p, kRef);
  return lse;
}

// The output of a fast run against the reference's: max |diff| within the dtype's tolerance times max |v|
// (the outputs are convex combinations of v rows), lse within its tolerance, nothing left unwritten; for
// 16-bit outputs also each row within the rounding of its own size (ref_lse2 from reference_lse_twice).
void expect_close(const Case& c, const HostTensor& v, const HostTensor& out, const HostTensor& ref_out,
                  const std::vector<float>& lse, const std::vector<float>& ref_lse,
                  const std::vector<float>& ref_lse2) {
  const core::Tolerance tol = core::tolerance(c.dtype);
  const double scale = std::max(1.0, test::max_abs(v));
  EXPECT_LE(test::max_abs_diff(out, ref_out), tol.out * scale) << describe(c);
  if (!ref_lse2.empty())
    EXPECT_LE(test::rounding_error_ratio(out, ref_out, ref_lse, ref_lse2, tol.rounding, test::max_abs(v)), 1.0)
        << describe(c);
  EXPECT_LE(test::max_abs_diff(lse, ref_lse), tol.lse) << describe(c);
  EXPECT_TRUE(test::padding_untouched(out)) << describe(c) << ": written outside the output view";
}

TEST(CpuFast, DenseMatchesReference) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::vector<Case> cases = small_cases();
  for (const Case& c : long_cases()) cases.push_back(c);
  for (const Case& c : cases) {
    Inputs in = make_inputs(c, rng);
    HostTensor out(c.dtype, c.batch, c.sq, c.hq, c.d, Layout::padded), ref(DType::f32, c.batch, c.sq, c.hq, c.d);
    std::vector<float> lse = poisoned_lse(c), ref_lse = poisoned_lse(c);
    dense_attention(in.q.view(), in.k.view(), in.v.view(), out.view(), lse.data(), params_of(c), fast_options());
    dense_attention(in.q.view(), in.k.view(), in.v.view(), ref.view(), ref_lse.data(), params_of(c), kRef);
    expect_close(c, in.v, out, ref, lse, ref_lse, reference_lse_twice(c, in, nullptr));
  }
}

TEST(CpuFast, AttendMatchesReferenceOnRandomSelections) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::vector<Case> cases = small_cases();
  for (const Case& c : long_cases()) cases.push_back(c);
  int i = 0;
  for (const Case& c : cases) {
    Inputs in = make_inputs(c, rng);
    // Windows from 1 (diagonal only) past Sk, columns from none to all, some rows in a dense tail.
    const std::int64_t windows[] = {1, 3, 16, c.sk / 5 + 1, c.sk + 7};
    const std::int64_t window = windows[i % 5];
    const std::int64_t columns = (i % 7 == 0) ? 0 : (i % 7 == 1 ? c.sk : std::max<std::int64_t>(1, c.sk / 8));
    const std::int64_t tail = (i % 3 == 0) ? c.sq / 4 : 0;
    ++i;
    const Selection sel = test::random_selection(rng, c.batch, c.hq, c.sq, c.sk, c.causal, window, columns, tail);
    HostTensor out(c.dtype, c.batch, c.sq, c.hq, c.d, c.layout), ref(DType::f32, c.batch, c.sq, c.hq, c.d);
    std::vector<float> lse = poisoned_lse(c), ref_lse = poisoned_lse(c);
    attend(in.q.view(), in.k.view(), in.v.view(), sel, out.view(), lse.data(), params_of(c), fast_options());
    attend(in.q.view(), in.k.view(), in.v.view(), sel, ref.view(), ref_lse.data(), params_of(c), kRef);
    SCOPED_TRACE("window " + std::to_string(window) + " columns " + std::to_string(columns) + " tail " +
                 std::to_string(tail));
    expect_close(c, in.v, out, ref, lse, ref_lse, reference_lse_twice(c, in, &sel));
  }
}

std::vector<double> column_scores(const Case& c, const Inputs& in, const SampleConfig& config, std::int64_t b,
                                  std::int64_t h) {
  const core::Problem p = core::make_problem(in.q.view(), in.k.view(), nullptr, params_of(c));
  return ref::column_scores(p, in.q.view(), in.k.view(), config.sample_ratio, b, h);
}

// The fast path sums its scores in fp32: columns may differ from the reference's only at ties.
::testing::AssertionResult same_selection_up_to_ties(std::span<const std::int32_t> fast, std::span<const std::int32_t> ref,
                                                     const std::vector<double>& score, double alpha) {
  const std::string why = ref::columns_agree_up_to_ties(fast, ref, score, alpha, 1e-5);
  if (why.empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << why;
}

void check_select(const Case& c, const SampleConfig& config, std::mt19937_64& rng) {
  SCOPED_TRACE(describe(c) + " alpha " + std::to_string(config.alpha) + " tail " + std::to_string(config.dense_tail));
  const Inputs in = make_inputs(c, rng);
  const Selection fast = select(in.q.view(), in.k.view(), params_of(c), config, fast_options());
  const Selection ref = select(in.q.view(), in.k.view(), params_of(c), config, kRef);
  ASSERT_NO_THROW(fast.validate());
  ASSERT_EQ(fast.window, ref.window);
  ASSERT_EQ(fast.dense_tail, ref.dense_tail);
  for (std::int64_t bh = 0; bh < ref.num_heads_total(); ++bh) {
    const std::vector<double> score = column_scores(c, in, config, bh / c.hq, bh % c.hq);
    EXPECT_TRUE(same_selection_up_to_ties(fast.columns(bh), ref.columns(bh), score, config.alpha)) << "head " << bh;
    const bool same = std::ranges::equal(fast.columns(bh), ref.columns(bh));
    if (same) {
      EXPECT_EQ(fast.stats[bh].kept_entries, ref.stats[bh].kept_entries);
      EXPECT_NEAR(fast.stats[bh].sampled_coverage, ref.stats[bh].sampled_coverage, 1e-5) << "head " << bh;
    }
    EXPECT_EQ(fast.stats[bh].visible_entries, ref.stats[bh].visible_entries);
    EXPECT_GE(fast.stats[bh].sampled_coverage, config.alpha - 1e-5) << "head " << bh;
  }
}

TEST(CpuFast, SelectMatchesReference) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  int i = 0;
  for (const Case& c : small_cases()) {
    SampleConfig config;
    // Each setting cycles with its own period, none tied to the dtype (i % 3) or to another setting, so that
    // dense tails and sinks also meet alpha < 1 in every dtype.
    const double alphas[3] = {0.8, 0.95, 1.0};
    config.alpha = alphas[(i / 3) % 3];
    config.sample_ratio = (i / 2) % 2 == 0 ? 0.3 : 1.0;
    config.window_ratio = 0.1;
    config.min_window = (i % 4 == 0) ? 1 : 4;
    config.sink_tokens = (i % 4 == 1) ? 2 : 0;
    config.dense_tail = (i % 2 == 1) ? c.sq / 3 : 0;
    config.dense_head_density = (i % 7 == 3) ? 0.6 : 1.0;
    ++i;
    check_select(c, config, rng);
  }
  for (const Case& c : long_cases()) check_select(c, SampleConfig{}, rng);
}

TEST(CpuFast, SampleAttentionMatchesReferenceOnItsSelection) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const Case& c : {Case{1, 1025, 1025, 4, 1, 128, true, DType::bf16, Layout::padded},
                        Case{2, 200, 333, 4, 2, 64, true, DType::f16, Layout::bhsd},
                        Case{1, 100, 257, 2, 1, 96, false, DType::f32, Layout::bshd}}) {
    SCOPED_TRACE(describe(c));
    Inputs in = make_inputs(c, rng);
    SampleConfig config;
    config.alpha = 0.9;
    config.sample_ratio = 0.1;
    config.window_ratio = 0.05;
    config.min_window = 16;
    config.dense_tail = 7;
    HostTensor out(c.dtype, c.batch, c.sq, c.hq, c.d, c.layout), ref(DType::f32, c.batch, c.sq, c.hq, c.d);
    std::vector<float> lse = poisoned_lse(c), ref_lse = poisoned_lse(c);
    const Selection sel =
        sample_attention(in.q.view(), in.k.view(), in.v.view(), out.view(), lse.data(), params_of(c), config, fast_options());
    EXPECT_LT(sel.density(), 1.0);
    attend(in.q.view(), in.k.view(), in.v.view(), sel, ref.view(), ref_lse.data(), params_of(c), kRef);
    expect_close(c, in.v, out, ref, lse, ref_lse, reference_lse_twice(c, in, &sel));
  }
}

TEST(CpuFast, AlphaOneEqualsDense) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const Case& c : {Case{1, 300, 300, 4, 2, 64, true, DType::bf16, Layout::bshd},
                        Case{1, 60, 200, 2, 1, 128, true, DType::f32, Layout::padded},
                        Case{1, 90, 90, 2, 2, 64, false, DType::f16, Layout::bhsd}}) {
    SCOPED_TRACE(describe(c));
    Inputs in = make_inputs(c, rng);
    // The full window keeps everything by itself; the one-key window leaves every other key to alpha = 1
    // (each has mass in the last sampled row, which sees every key).
    for (const double window_ratio : {1.0, 0.0}) {
      SCOPED_TRACE("window_ratio " + std::to_string(window_ratio));
      SampleConfig config;
      config.alpha = 1.0;
      config.window_ratio = window_ratio;
      config.min_window = 1;
      HostTensor sparse(DType::f32, c.batch, c.sq, c.hq, c.d), dense(DType::f32, c.batch, c.sq, c.hq, c.d);
      std::vector<float> lse = poisoned_lse(c), dense_lse = poisoned_lse(c);
      const Selection sel = sample_attention(in.q.view(), in.k.view(), in.v.view(), sparse.view(), lse.data(),
                                             params_of(c), config, fast_options());
      EXPECT_DOUBLE_EQ(sel.density(), 1.0);
      dense_attention(in.q.view(), in.k.view(), in.v.view(), dense.view(), dense_lse.data(), params_of(c),
                      fast_options());
      // The same keys, visited in other tiles and order: fp32 rounding only.
      EXPECT_LE(test::max_abs_diff(sparse, dense), 2e-5 * std::max(1.0, test::max_abs(in.v)));
      EXPECT_LE(test::max_abs_diff(lse, dense_lse), 2e-5);
    }
  }
}

TEST(CpuFast, ThreadCountDoesNotChangeResults) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Case c{2, 300, 500, 4, 2, 64, true, DType::bf16, Layout::bshd};
  Inputs in = make_inputs(c, rng);
  SampleConfig config;
  config.window_ratio = 0.05;
  config.sample_ratio = 0.2;
  std::vector<HostTensor> outs;
  std::vector<std::vector<float>> lses;
  const Selection fixed = select(in.q.view(), in.k.view(), params_of(c), config, fast_options(1));
  for (int threads : {1, 2, 5}) {
    // Threads may sum a column's fp32 score in another order: the sets agree up to ties at the alpha cut.
    const Selection sel = select(in.q.view(), in.k.view(), params_of(c), config, fast_options(threads));
    ASSERT_EQ(sel.offsets.size(), fixed.offsets.size());
    for (std::int64_t bh = 0; bh < fixed.num_heads_total(); ++bh) {
      const std::vector<double> score = column_scores(c, in, config, bh / c.hq, bh % c.hq);
      EXPECT_TRUE(same_selection_up_to_ties(sel.columns(bh), fixed.columns(bh), score, config.alpha))
          << threads << " threads, head " << bh;
    }
    outs.emplace_back(DType::f32, c.batch, c.sq, c.hq, c.d);
    lses.push_back(poisoned_lse(c));
    attend(in.q.view(), in.k.view(), in.v.view(), fixed, outs.back().view(), lses.back().data(), params_of(c),
           fast_options(threads));
  }
  for (std::size_t i = 1; i < outs.size(); ++i) {
    EXPECT_EQ(test::max_abs_diff(outs[i], outs[0]), 0.0);
    EXPECT_EQ(test::max_abs_diff(lses[i], lses[0]), 0.0);
  }
}

TEST(CpuFast, MixedOutputDtypeAndNoLse) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Case c{1, 77, 120, 2, 1, 64, true, DType::bf16, Layout::bshd};
  Inputs in = make_inputs(c, rng);
  for (DType out_dtype : {DType::f32, DType::f16, DType::bf16}) {
    HostTensor out(out_dtype, c.batch, c.sq, c.hq, c.d, Layout::bhsd), ref(DType::f32, c.batch, c.sq, c.hq, c.d);
    dense_attention(in.q.view(), in.k.view(), in.v.view(), out.view(), nullptr, params_of(c), fast_options());
    dense_attention(in.q.view(), in.k.view(), in.v.view(), ref.view(), nullptr, params_of(c), kRef);
    // The output is rounded once to its own dtype.
    EXPECT_LE(test::max_abs_diff(out, ref), core::tolerance(out_dtype).out * std::max(1.0, test::max_abs(in.v)))
        << to_string(out_dtype);
  }
}

// Views whose head_dim elements are not adjacent (every other element of a wider buffer) take the
// element-by-element conversion path.
// The input checks scan q, k and v in blocks of rows on the backend's threads: over many blocks and threads
// the error still names the first non-finite element in memory order, and a large value in the last block
// still counts for the magnitude bounds.
TEST(CpuFast, InputChecksOverThreadsFindTheFirstBadElement) {
  std::mt19937_64 rng(test::test_seed());
  for (const Layout layout : {Layout::bshd, Layout::bhsd, Layout::padded}) {
    SCOPED_TRACE(static_cast<int>(layout));
    HostTensor q(DType::bf16, 2, 700, 2, 16, layout), k(DType::bf16, 2, 700, 1, 16), v = k;
    q.fill_random(rng);
    k.fill_random(rng);
    v.fill_random(rng);
    HostTensor out(DType::bf16, 2, 700, 2, 16);
    q.set(1, 650, 1, 3, std::nanf(""));
    q.set(1, 300, 0, 5, INFINITY);
    q.set(1, 300, 1, 2, std::nanf(""));
    try {
      dense_attention(q.view(), k.view(), v.view(), out.view(), nullptr, {}, fast_options(4));
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("q[1, 300, 0, 5] is inf"), std::string::npos) << e.what();
    }
    q.set(1, 650, 1, 3, 0.0f);
    q.set(1, 300, 0, 5, 0.0f);
    q.set(1, 300, 1, 2, 0.0f);
    v.set(1, 699, 0, 15, 1e38f);
    try {
      dense_attention(q.view(), k.view(), v.view(), out.view(), nullptr, {}, fast_options(3));
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("max|v| (9.9"), std::string::npos) << e.what();
    }
  }
}

TEST(CpuFast, NonUnitElementStride) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  // f16, and bf16 with an odd head_dim (where the CPU has them, the bf16 panels and Q pairs read the strides).
  for (const Case& c : {Case{1, 50, 90, 4, 2, 32, true, DType::f16, Layout::bshd},
                        Case{1, 50, 90, 4, 2, 33, true, DType::bf16, Layout::bshd}}) {
    SCOPED_TRACE(describe(c));
    HostTensor q(c.dtype, c.batch, c.sq, c.hq, 2 * c.d), k(c.dtype, c.batch, c.sk, c.hkv, 2 * c.d),
        v(c.dtype, c.batch, c.sk, c.hkv, 2 * c.d), out(c.dtype, c.batch, c.sq, c.hq, 2 * c.d);
    q.fill_random(rng, 2.0f);
    k.fill_random(rng);
    v.fill_random(rng);
    auto every_other = [&](const HostTensor& t) {
      TensorView view = t.view();
      view.shape[3] = c.d;
      view.stride[3] = 2;
      return view;
    };
    HostTensor ref(DType::f32, c.batch, c.sq, c.hq, c.d);
    std::vector<float> lse = poisoned_lse(c), ref_lse = poisoned_lse(c);
    dense_attention(every_other(q), every_other(k), every_other(v), every_other(out), lse.data(), {}, fast_options());
    dense_attention(every_other(q), every_other(k), every_other(v), ref.view(), ref_lse.data(), {}, kRef);
    double diff = 0.0;
    for (std::int64_t r = 0; r < c.sq; ++r)
      for (std::int64_t h = 0; h < c.hq; ++h)
        for (std::int64_t x = 0; x < c.d; ++x) {
          EXPECT_TRUE(std::isnan(out.at(0, r, h, 2 * x + 1))) << "wrote between the elements";
          diff = std::max(diff, std::abs(double(out.at(0, r, h, 2 * x)) - ref.at(0, r, h, x)));
        }
    EXPECT_LE(diff, core::tolerance(c.dtype).out * std::max(1.0, test::max_abs(v)));
    EXPECT_LE(test::max_abs_diff(lse, ref_lse), core::tolerance(c.dtype).lse);
    // The same values in compact views: the same selection and the same output bits.
    auto compact = [&](const HostTensor& t, std::int64_t seq, std::int64_t heads) {
      HostTensor x(c.dtype, c.batch, seq, heads, c.d);
      for (std::int64_t r = 0; r < seq; ++r)
        for (std::int64_t h = 0; h < heads; ++h)
          for (std::int64_t e = 0; e < c.d; ++e) x.set(0, r, h, e, t.at(0, r, h, 2 * e));
      return x;
    };
    const HostTensor qc = compact(q, c.sq, c.hq), kc = compact(k, c.sk, c.hkv), vc = compact(v, c.sk, c.hkv);
    SampleConfig config;
    config.sample_ratio = 0.5;
    const Selection strided_sel = select(every_other(q), every_other(k), {}, config, fast_options());
    const Selection compact_sel = select(qc.view(), kc.view(), {}, config, fast_options());
    EXPECT_EQ(strided_sel.indices, compact_sel.indices);
    EXPECT_EQ(strided_sel.offsets, compact_sel.offsets);
    HostTensor out_c(c.dtype, c.batch, c.sq, c.hq, c.d);
    dense_attention(qc.view(), kc.view(), vc.view(), out_c.view(), nullptr, {}, fast_options());
    double bits = 0.0;
    for (std::int64_t r = 0; r < c.sq; ++r)
      for (std::int64_t h = 0; h < c.hq; ++h)
        for (std::int64_t x = 0; x < c.d; ++x)
          bits = std::max(bits, std::abs(double(out.at(0, r, h, 2 * x)) - out_c.at(0, r, h, x)));
    EXPECT_EQ(bits, 0.0) << "strided and compact inputs gave different outputs";
  }
}

// Sparse attention of the current kernel set over a random selection against the reference's.
void expect_sparse_matches_reference(const Case& c, const Inputs& in, std::mt19937_64& rng) {
  const Selection sel = test::random_selection(rng, c.batch, c.hq, c.sq, c.sk, c.causal, 5, c.sk / 4 + 1, c.sq / 5);
  HostTensor out(c.dtype, c.batch, c.sq, c.hq, c.d, c.layout), ref(DType::f32, c.batch, c.sq, c.hq, c.d);
  out.poison();
  ref.poison();
  std::vector<float> lse = poisoned_lse(c), ref_lse = poisoned_lse(c);
  attend(in.q.view(), in.k.view(), in.v.view(), sel, out.view(), lse.data(), params_of(c), fast_options());
  attend(in.q.view(), in.k.view(), in.v.view(), sel, ref.view(), ref_lse.data(), params_of(c), kRef);
  expect_close(c, in.v, out, ref, lse, ref_lse, reference_lse_twice(c, in, &sel));
}

// Puts the automatic kernel choice back when a test that forced a set ends.
struct KernelSetRestore {
  ~KernelSetRestore() { cpu::fast::force_kernels(nullptr); }
};

// Each kernel set on the same checks (skipped where the CPU lacks it; one of them is also the default).
class CpuFastKernelSet : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (!cpu::fast::force_kernels(GetParam())) GTEST_SKIP() << "no " << GetParam() << " kernels on this CPU";
  }
  void TearDown() override { cpu::fast::force_kernels(nullptr); }
};

TEST_P(CpuFastKernelSet, DenseAttendAndSelectMatchReference) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  int i = 0;
  for (const Case& c : small_cases()) {
    if (i++ % 2 != 0) continue;
    Inputs in = make_inputs(c, rng);
    HostTensor out(c.dtype, c.batch, c.sq, c.hq, c.d, c.layout), ref(DType::f32, c.batch, c.sq, c.hq, c.d);
    std::vector<float> lse = poisoned_lse(c), ref_lse = poisoned_lse(c);
    dense_attention(in.q.view(), in.k.view(), in.v.view(), out.view(), lse.data(), params_of(c), fast_options());
    dense_attention(in.q.view(), in.k.view(), in.v.view(), ref.view(), ref_lse.data(), params_of(c), kRef);
    expect_close(c, in.v, out, ref, lse, ref_lse, reference_lse_twice(c, in, nullptr));
    expect_sparse_matches_reference(c, in, rng);
  }
  for (const Case& c : {small_cases()[4], small_cases()[22]}) {
    SampleConfig config;
    config.sample_ratio = 0.5;
    config.dense_tail = 3;
    check_select(c, config, rng);
  }
}

INSTANTIATE_TEST_SUITE_P(Sets, CpuFastKernelSet,
                         ::testing::Values("amx", "avx512bf16", "avx512", "avx2", "portable"),
                         [](const ::testing::TestParamInfo<const char*>& info) { return std::string(info.param); });

// The AVX-512 set computes every attention output element with the AVX2 set's operations in the same order
// (fast_kernels_avx512.cpp): dense and sparse outputs and lse must be identical bit for bit, over shapes that
// reach every row and column tail of both sets' blocks (rows 1..64 per tile, d 8..256). Its selection must
// pass the reference check (stage 1 adds rows in another order).
TEST(CpuFastAvx512, AttentionBitIdenticalToAvx2) {
  if (cpu::fast::avx512_kernels() == nullptr || cpu::fast::avx2_kernels() == nullptr)
    GTEST_SKIP() << "needs both the AVX-512 and the AVX2 kernels";
  const KernelSetRestore restore;
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  int checked = 0;
  std::vector<Case> cases = small_cases();  // plus head dims whose last P V block has 16 or 24 dims
  for (const std::int64_t d : {16, 24, 48, 88}) cases.push_back({1, 37, 70, 4, 2, d, true, DType::f16, Layout::bshd});
  for (const Case& c : cases) {
    SCOPED_TRACE(describe(c));
    Inputs in = make_inputs(c, rng);
    const Selection sel = test::random_selection(rng, c.batch, c.hq, c.sq, c.sk, c.causal, 5, c.sk / 4 + 1, c.sq / 5);
    HostTensor out[2] = {HostTensor(c.dtype, c.batch, c.sq, c.hq, c.d, c.layout),
                         HostTensor(c.dtype, c.batch, c.sq, c.hq, c.d, c.layout)};
    HostTensor sparse[2] = {out[0], out[1]};
    std::vector<float> lse[2] = {poisoned_lse(c), poisoned_lse(c)}, sparse_lse[2] = {lse[0], lse[1]};
    const char* sets[2] = {"avx512", "avx2"};
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(cpu::fast::force_kernels(sets[i]));
      dense_attention(in.q.view(), in.k.view(), in.v.view(), out[i].view(), lse[i].data(), params_of(c),
                      fast_options());
      attend(in.q.view(), in.k.view(), in.v.view(), sel, sparse[i].view(), sparse_lse[i].data(), params_of(c),
             fast_options());
    }
    EXPECT_EQ(std::memcmp(out[0].data(), out[1].data(), out[0].bytes()), 0) << "dense out";
    EXPECT_EQ(std::memcmp(lse[0].data(), lse[1].data(), lse[0].size() * sizeof(float)), 0) << "dense lse";
    EXPECT_EQ(std::memcmp(sparse[0].data(), sparse[1].data(), sparse[0].bytes()), 0) << "sparse out";
    EXPECT_EQ(std::memcmp(sparse_lse[0].data(), sparse_lse[1].data(), sparse_lse[0].size() * sizeof(float)), 0)
        << "sparse lse";
    ++checked;
  }
  EXPECT_GT(checked, 0);
  ASSERT_TRUE(cpu::fast::force_kernels("avx512"));
  for (const Case& c : {small_cases()[4], small_cases()[22]}) {
    SampleConfig config;
    config.sample_ratio = 0.5;
    config.dense_tail = 3;
    check_select(c, config, rng);
  }
}

// The bf16 paths (bf16 q, k, v and out): the AVX512_BF16 dot products and the AMX tile products, each against
// the reference with the per-row rounding check, dense, sparse and stage 1, over odd head dims (a zero-padded
// last pair), odd chunk lengths (a zero key pads the last pair of P and V), every tail of the row and dim
// blocks, and for AMX head dims on and off its tiles (d 63, 64, 128, 256 on them; others run the bf16 set's
// code), odd numbers of 16-row and 16-key tiles, whole chunks read in place and gathered or partial ones
// copied. Neither is bit-identical to the AVX-512 set on the same inputs, and AMX is not bit-identical to the
// bf16 set on a tile shape, so each path did run (P is rounded to bf16; the sums go in another order).
class CpuFastBf16Set : public CpuFastKernelSet {};

TEST_P(CpuFastBf16Set, MatchesReference) {
  const std::string set = GetParam();
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::vector<Case> cases = {{1, 33, 71, 2, 1, 7, true, DType::bf16, Layout::bshd},
                             {2, 97, 97, 4, 2, 130, true, DType::bf16, Layout::bhsd},
                             {1, 64, 1025, 2, 2, 24, false, DType::bf16, Layout::padded},
                             {1, 300, 300, 8, 1, 256, true, DType::bf16, Layout::bshd},
                             {1, 33, 1025, 8, 1, 128, true, DType::bf16, Layout::padded},
                             {2, 97, 161, 4, 1, 63, false, DType::bf16, Layout::bhsd},
                             {1, 17, 17, 4, 4, 64, true, DType::bf16, Layout::bshd}};
  for (const Case& c : small_cases())
    if (c.dtype == DType::bf16) cases.push_back(c);
  bool differs_wide = false, differs_bf16 = false;
  for (const Case& c : cases) {
    SCOPED_TRACE(describe(c));
    Inputs in = make_inputs(c, rng);
    HostTensor out(c.dtype, c.batch, c.sq, c.hq, c.d, c.layout), ref(DType::f32, c.batch, c.sq, c.hq, c.d);
    HostTensor other = out;
    std::vector<float> lse = poisoned_lse(c), ref_lse = poisoned_lse(c), other_lse = poisoned_lse(c);
    dense_attention(in.q.view(), in.k.view(), in.v.view(), out.view(), lse.data(), params_of(c), fast_options());
    dense_attention(in.q.view(), in.k.view(), in.v.view(), ref.view(), ref_lse.data(), params_of(c), kRef);
    expect_close(c, in.v, out, ref, lse, ref_lse, reference_lse_twice(c, in, nullptr));
    ASSERT_TRUE(cpu::fast::force_kernels("avx512"));
    dense_attention(in.q.view(), in.k.view(), in.v.view(), other.view(), other_lse.data(), params_of(c),
                    fast_options());
    differs_wide = differs_wide || std::memcmp(out.data(), other.data(), out.bytes()) != 0;
    if (set == "amx" && (c.d + 1) / 2 % 16 == 0) {
      ASSERT_TRUE(cpu::fast::force_kernels("avx512bf16"));
      dense_attention(in.q.view(), in.k.view(), in.v.view(), other.view(), other_lse.data(), params_of(c),
                      fast_options());
      differs_bf16 = differs_bf16 || std::memcmp(out.data(), other.data(), out.bytes()) != 0;
    }
    ASSERT_TRUE(cpu::fast::force_kernels(set.c_str()));
    expect_sparse_matches_reference(c, in, rng);
  }
  EXPECT_TRUE(differs_wide) << "the " << set << " path gave the AVX-512 set's bits everywhere: did it run?";
  if (set == "amx") EXPECT_TRUE(differs_bf16) << "AMX gave the bf16 set's bits on every tile shape: did it run?";
  // Stage 1 (sample_rows_bf16) against the reference selection: head dims off and on the tiles, with key
  // counts that end in a partial 16-key tile.
  for (const Case& c : {cases[0], cases[1], cases[3], cases[4], cases[5], cases[6]}) {
    SampleConfig config;
    config.sample_ratio = 0.5;
    config.dense_tail = 3;
    check_select(c, config, rng);
  }
}

INSTANTIATE_TEST_SUITE_P(Sets, CpuFastBf16Set, ::testing::Values("amx", "avx512bf16"),
                         [](const ::testing::TestParamInfo<const char*>& info) { return std::string(info.param); });

// Changing the kernel set while calls run (tests do; a host program might): each call keeps the set it
// started with, so every result is one of the two sets' outputs and nothing faults.
TEST(CpuFastAvx512, SetChangedDuringCallsIsSafe) {
  if (cpu::fast::avx512_bf16_kernels() == nullptr) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  const KernelSetRestore restore;
  std::mt19937_64 rng(test::test_seed());
  const Case c{1, 512, 512, 2, 1, 64, true, DType::bf16, Layout::bshd};  // 16 tiles per call
  Inputs in = make_inputs(c, rng);
  HostTensor want[2] = {HostTensor(c.dtype, c.batch, c.sq, c.hq, c.d), HostTensor(c.dtype, c.batch, c.sq, c.hq, c.d)};
  const char* sets[2] = {"avx512bf16", "avx512"};
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(cpu::fast::force_kernels(sets[i]));
    dense_attention(in.q.view(), in.k.view(), in.v.view(), want[i].view(), nullptr, params_of(c), fast_options(1));
  }
  std::atomic<bool> stop{false};
  std::thread toggler([&] {
    for (int i = 0; !stop.load(); ++i) cpu::fast::force_kernels(sets[i % 2]);
  });
  int mismatches = 0;
  for (int round = 0; round < 100; ++round) {
    HostTensor out(c.dtype, c.batch, c.sq, c.hq, c.d);
    dense_attention(in.q.view(), in.k.view(), in.v.view(), out.view(), nullptr, params_of(c), fast_options(1));
    mismatches += std::memcmp(out.data(), want[0].data(), out.bytes()) != 0 &&
                  std::memcmp(out.data(), want[1].data(), out.bytes()) != 0;
  }
  stop = true;
  toggler.join();
  EXPECT_EQ(mismatches, 0) << "a call mixed the two sets";
}

}  // namespace
}  // namespace sampleattn
