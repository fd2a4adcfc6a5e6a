// The per-row rounding check used by the GPU tests (support/row_check.h): the spread it derives from lse at
// scale and 2 x scale, and that it passes a correctly rounded bf16 output and fails a wrong one that the
// max-abs tolerance over max|v| would accept.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/problem.h"
#include "core/tolerance.h"
#include "cpu/reference.h"
#include "support/host_tensor.h"
#include "support/row_check.h"

namespace sampleattn {
namespace {

using test::HostTensor;

// One head, dense non-causal attention over n keys in fp64, at scale and 2 x scale.
struct Ref {
  HostTensor out;
  std::vector<float> lse, lse2;
};

Ref reference(const HostTensor& q, const HostTensor& k, const HostTensor& v) {
  core::Problem p;
  p.batch = 1;
  p.seq_q = q.shape()[1];
  p.seq_k = k.shape()[1];
  p.q_heads = p.kv_heads = 1;
  p.head_dim = q.shape()[3];
  p.scale = 1.0f / std::sqrt(static_cast<float>(p.head_dim));
  p.causal = false;
  Ref r{HostTensor(DType::f32, 1, p.seq_q, 1, p.head_dim), std::vector<float>(p.seq_q), std::vector<float>(p.seq_q)};
  ref::dense(p, q.view(), k.view(), v.view(), r.out.view(), r.lse.data());
  HostTensor unused(DType::f32, 1, p.seq_q, 1, p.head_dim);
  p.scale *= 2.0f;
  ref::dense(p, q.view(), k.view(), v.view(), unused.view(), r.lse2.data());
  return r;
}

TEST(RowCheck, SpreadOfOneKeyAndOfEqualKeys) {
  // q = 0: every key weighs the same, spread 1 / sqrt(n); with n = 1 it is 1. An error of u max|v| spread is
  // then 1/6 of the allowance's spread term.
  for (std::int64_t n : {1, 16, 1024}) {
    HostTensor q(DType::bf16, 1, 1, 1, 64), k(DType::bf16, 1, n, 1, 64), v(DType::bf16, 1, n, 1, 64);
    std::mt19937_64 rng(1);
    k.fill_random(rng);
    v.fill_random(rng);
    for (std::int64_t d = 0; d < 64; ++d) q.set(0, 0, 0, d, 0.0f);
    const Ref r = reference(q, k, v);
    EXPECT_NEAR(std::exp(0.5 * r.lse2[0] - r.lse[0]), 1.0 / std::sqrt(static_cast<double>(n)), 1e-6);
    const double u = 0x1p-8, vmax = test::max_abs(v), spread = 1.0 / std::sqrt(static_cast<double>(n));
    HostTensor out = r.out;
    const double shift = u * vmax * spread;
    out.set(0, 0, 0, 5, static_cast<float>(r.out.at(0, 0, 0, 5) + shift));
    const double allowance = u * std::fabs(r.out.at(0, 0, 0, 5)) + 6 * u * vmax * spread + 1e-6 * vmax;
    EXPECT_NEAR(test::rounding_error_ratio(out, r.out, r.lse, r.lse2, u, vmax), shift / allowance, 1e-6);
  }
}

TEST(RowCheck, CatchesWhatTheMaxAbsToleranceMisses) {
  // 4097 keys, unit-variance inputs: the output is ~0.02, the bf16 max-abs tolerance ~0.07. The correctly
  // rounded output passes; one whose 128-key tile 2 reads tile 1's values (a wrong V tile) fails, and the
  // max-abs check does not see it.
  std::mt19937_64 rng(7);
  const std::int64_t n = 4097, d = 128;
  HostTensor q(DType::bf16, 1, 32, 1, d), k(DType::bf16, 1, n, 1, d), v(DType::bf16, 1, n, 1, d);
  q.fill_random(rng);
  k.fill_random(rng);
  v.fill_random(rng);
  const Ref r = reference(q, k, v);
  const double u = core::tolerance(DType::bf16).rounding, vmax = test::max_abs(v);
  HostTensor rounded = r.out.converted(DType::bf16, test::Layout::bshd);
  EXPECT_LE(test::rounding_error_ratio(rounded, r.out, r.lse, r.lse2, u, vmax), 1.0);

  HostTensor wrong_v = v;
  for (std::int64_t j = 256; j < 384; ++j)
    for (std::int64_t e = 0; e < d; ++e) wrong_v.set(0, j, 0, e, v.at(0, j - 128, 0, e));
  const HostTensor wrong = reference(q, k, wrong_v).out.converted(DType::bf16, test::Layout::bshd);
  EXPECT_LE(test::max_abs_diff(wrong, r.out), core::tolerance(DType::bf16).out * vmax) << "the old check passes it";
  EXPECT_GT(test::rounding_error_ratio(wrong, r.out, r.lse, r.lse2, u, vmax), 3.0);

  HostTensor nan = rounded;
  nan.set(0, 3, 0, 7, std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(test::rounding_error_ratio(nan, r.out, r.lse, r.lse2, u, vmax), std::numeric_limits<double>::infinity());
}

}  // namespace
}  // namespace sampleattn
