// The synthetic workload generator (include/sampleattn/workload.h): deterministic from the seed, the shapes
// and dtypes asked for, each component doing what the header says (checked on brute-force logits with one
// component switched on at a time), per-head variety measured with the reference backend's selection
// (a > 95% sparse head and a nearly dense head at alpha 0.95), and config errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/half.h"
#include "sampleattn/api.h"
#include "sampleattn/error.h"
#include "sampleattn/workload.h"
#include "support/host_tensor.h"

namespace sampleattn {
namespace {

std::int64_t bytes_of(const TensorView& t) {
  return t.shape[0] * t.shape[1] * t.shape[2] * t.shape[3] * static_cast<std::int64_t>(dtype_size(t.dtype));
}

bool same_bytes(const TensorView& a, const TensorView& b) {
  return bytes_of(a) == bytes_of(b) && std::memcmp(a.data, b.data, static_cast<std::size_t>(bytes_of(a))) == 0;
}

// Scaled logit q_r . k_j / sqrt(d) in fp64 (batch 0).
double logit(const Workload& w, std::int64_t h, std::int64_t r, std::int64_t j) {
  const TensorView q = w.q(), k = w.k();
  const std::int64_t kvh = h / (q.heads() / k.heads());
  double dot = 0.0;
  for (std::int64_t x = 0; x < q.head_dim(); ++x) {
    dot += static_cast<double>(core::load_element(q.data, q.dtype, q.offset(0, r, h, x))) *
           core::load_element(k.data, k.dtype, k.offset(0, j, kvh, x));
  }
  return dot / std::sqrt(static_cast<double>(q.head_dim()));
}

TEST(Workload, DeterministicFromTheSeed) {
  WorkloadConfig c;
  c.seq_k = 300;
  c.seq_q = 100;
  c.head_dim = 64;
  c.dtype = DType::bf16;
  c.seed = 42;
  const Workload a(c), b(c);
  EXPECT_TRUE(same_bytes(a.q(), b.q()));
  EXPECT_TRUE(same_bytes(a.k(), b.k()));
  EXPECT_TRUE(same_bytes(a.v(), b.v()));
  c.seed = 43;
  const Workload other(c);
  EXPECT_FALSE(same_bytes(a.q(), other.q()));
  EXPECT_FALSE(same_bytes(a.k(), other.k()));
  EXPECT_FALSE(same_bytes(a.v(), other.v()));
}

TEST(Workload, ShapesDtypesAndFiniteValues) {
  for (DType dtype : {DType::f32, DType::f16, DType::bf16}) {
    WorkloadConfig c;
    c.batch = 2;
    c.seq_k = 97;
    c.seq_q = 17;
    c.q_heads = 8;
    c.kv_heads = 1;
    c.head_dim = 128;
    c.dtype = dtype;
    const Workload w(c);
    EXPECT_EQ(w.q().shape, (std::array<std::int64_t, 4>{2, 17, 8, 128}));
    EXPECT_EQ(w.k().shape, (std::array<std::int64_t, 4>{2, 97, 1, 128}));
    EXPECT_EQ(w.v().shape, w.k().shape);
    EXPECT_EQ(w.q().dtype, dtype);
    for (const TensorView& t : {w.q(), w.k(), w.v()}) {
      const std::int64_t n = t.shape[0] * t.shape[1] * t.shape[2] * t.shape[3];
      for (std::int64_t i = 0; i < n; ++i) ASSERT_TRUE(std::isfinite(core::load_element(t.data, t.dtype, i)));
    }
    // The generated inputs are valid API inputs (Sq < Sk: chunked prefill).
    EXPECT_NO_THROW(select(w.q(), w.k(), {}, {}, {Backend::cpu}));
  }
  WorkloadConfig c;
  c.seq_k = 50;
  EXPECT_EQ(Workload(c).seq_q(), 50) << "seq_q 0 means seq_k";
}

TEST(Workload, LocalDecayPeaksAtTheQueryPosition) {
  WorkloadConfig c;
  c.seq_k = 2000;
  c.seq_q = 500;
  c.q_heads = 2;
  c.kv_heads = 1;
  c.head_dim = 64;
  c.profiles = {{"local only", 0.0, 0.0, 1.0, 0.0}};
  const Workload w(c);
  const double peak_base = std::log(2000.0) + c.local_strength;
  for (std::int64_t h = 0; h < 2; ++h) {
    for (std::int64_t r : {0, 1, 250, 499}) {
      const std::int64_t p = c.seq_k - 500 + r;
      std::int64_t best = -1;
      double best_logit = -1e300;
      for (std::int64_t j = 0; j <= p; ++j) {
        const double l = logit(w, h, r, j);
        if (l > best_logit) best_logit = l, best = j;
      }
      EXPECT_EQ(best, p) << "head " << h << " row " << r;
      // Peak = base + ln(gain), gain within the +-20% jitter.
      EXPECT_GT(best_logit, peak_base + std::log(0.8) - 1e-3);
      EXPECT_LT(best_logit, peak_base + std::log(1.2) + 1e-3);
      // Decay: ~exp(-x^2 / (2 scale^2)) near the peak.
      EXPECT_NEAR(logit(w, h, r, p - 8) / best_logit, std::exp(-0.5), 0.2);
    }
  }
}

TEST(Workload, SinksAndHeavyColumnsAreWhereTheConfigSays) {
  WorkloadConfig c;
  c.seq_k = 1000;
  c.q_heads = 2;
  c.kv_heads = 2;
  c.head_dim = 64;
  c.sink_tokens = 3;
  c.heavy_columns = 20;
  c.profiles = {{"sink only", 1.0, 0.0, 0.0, 0.0}, {"heavy only", 0.0, 1.0, 0.0, 0.0}};
  const Workload w(c);
  const std::int64_t r = 999;
  const double sink_base = std::log(1000.0) + c.sink_strength;
  for (std::int64_t j = 0; j < 1000; ++j) {
    const double l = logit(w, 0, r, j);
    if (j < 3) {
      EXPECT_GT(l, sink_base + std::log(0.8) - 1e-3) << j;
      EXPECT_LT(l, sink_base + std::log(1.2) + 1e-3) << j;
    } else {
      EXPECT_NEAR(l, 0.0, 1e-4) << j;
    }
  }
  const std::vector<std::int64_t>& heavy = w.heavy_positions(0, 1);
  ASSERT_EQ(heavy.size(), 20u);
  EXPECT_TRUE(std::is_sorted(heavy.begin(), heavy.end()));
  EXPECT_EQ(std::adjacent_find(heavy.begin(), heavy.end()), heavy.end());
  EXPECT_GE(heavy.front(), 3) << "heavy columns avoid the sinks";
  std::vector<std::int64_t> strong;
  for (std::int64_t j = 0; j < 1000; ++j) {
    if (logit(w, 1, r, j) > 1.0) strong.push_back(j);
  }
  EXPECT_EQ(strong, heavy) << "head 1 must light exactly its KV head's heavy columns";
  EXPECT_NE(w.heavy_positions(0, 0), heavy) << "each KV head has its own heavy columns";
}

TEST(Workload, DefaultProfilesGiveSparseAndNearlyDenseHeads) {
  WorkloadConfig c;
  c.seq_k = 2048;
  c.q_heads = 4;
  c.kv_heads = 1;
  c.head_dim = 64;
  c.seed = test::test_seed();
  SCOPED_TRACE("workload seed " + std::to_string(c.seed));
  const Workload w(c);
  ASSERT_EQ(w.profile(0).name, "stripes");
  ASSERT_EQ(w.profile(3).name, "dense");
  SampleConfig sc;  // alpha 0.95, a small window so that density measures the columns
  sc.window_ratio = 0.0;
  sc.min_window = 16;
  const Selection s = select(w.q(), w.k(), {}, sc, {Backend::cpu_reference});
  EXPECT_LT(s.stats[0].density, 0.05) << "the stripes head must be > 95% sparse";
  EXPECT_GT(s.stats[3].density, 0.8) << "the dense head must be nearly dense";
  EXPECT_GT(s.stats[1].density, s.stats[0].density);
  // The stripes head keeps every sink and heavy columns among its few kept columns.
  const auto cols = s.columns(0);
  for (std::int32_t j = 0; j < c.sink_tokens; ++j) EXPECT_TRUE(std::binary_search(cols.begin(), cols.end(), j)) << j;
  const std::vector<std::int64_t>& heavy = w.heavy_positions(0, 0);
  std::int64_t heavy_kept = 0;
  for (std::int32_t j : cols) heavy_kept += std::binary_search(heavy.begin(), heavy.end(), std::int64_t{j});
  EXPECT_GE(heavy_kept, 4);
  EXPECT_GE(heavy_kept + c.sink_tokens, static_cast<std::int64_t>(cols.size()) * 8 / 10)
      << "the stripes head's columns are mostly sinks and heavy keys";
}

TEST(Workload, BadConfigsThrowNamingTheField) {
  struct Bad {
    void (*edit)(WorkloadConfig&);
    const char* expected;
  };
  const Bad cases[] = {
      {[](WorkloadConfig& c) { c.batch = 0; }, "workload.batch (0) must be >= 1"},
      {[](WorkloadConfig& c) { c.seq_k = 0; }, "workload.seq_k (0) must be >= 1"},
      {[](WorkloadConfig& c) { c.seq_q = 5000; }, "workload.seq_q (5000) must be in [0, seq_k = 4096]"},
      {[](WorkloadConfig& c) { c.kv_heads = 3; }, "workload.q_heads (8) must be a multiple of kv_heads (3)"},
      {[](WorkloadConfig& c) { c.head_dim = 8; }, "workload.head_dim (8) must be in [16, 1024]"},
      {[](WorkloadConfig& c) { c.sink_tokens = -1; }, "workload.sink_tokens (-1) must be in [0, seq_k = 4096]"},
      {[](WorkloadConfig& c) { c.heavy_columns = -2; }, "workload.heavy_columns (-2) must be >= 0"},
      {[](WorkloadConfig& c) { c.local_scale = 0.0; }, "workload.local_scale (0) must be finite and > 0"},
      {[](WorkloadConfig& c) { c.noise = NAN; }, "workload.noise (nan) must be finite and >= 0"},
      {[](WorkloadConfig& c) { c.sink_strength = INFINITY; }, "workload strengths (sink inf"},
      {[](WorkloadConfig& c) { c.profiles = {{"bad", NAN, 0, 0, 0}}; }, "workload profile 'bad' gains must be finite"},
      {[](WorkloadConfig& c) { c.seq_k = std::int64_t{1} << 40; c.q_heads = 1 << 20; c.kv_heads = 1; },
       "workload size (batch 1 x seq_k 1099511627776 x heads 1048576 x head_dim 128) overflows int64"},
  };
  for (const Bad& b : cases) {
    WorkloadConfig c;
    b.edit(c);
    try {
      Workload w(c);
      ADD_FAILURE() << "expected: " << b.expected;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(b.expected), std::string::npos) << e.what();
    }
  }
  const Workload w(WorkloadConfig{});
  EXPECT_THROW(w.profile(8), Error);
  EXPECT_THROW(w.heavy_positions(0, 2), Error);
}

}  // namespace
}  // namespace sampleattn
