// Every bad input through the public C++ API (issue 2, item 6): each case breaks one thing in otherwise
// valid inputs and expects sampleattn::Error with the message naming the argument and values, from every
// API function the input reaches, with the output left untouched (still poisoned).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "sampleattn/api.h"
#include "sampleattn/error.h"
#include "support/host_tensor.h"
#ifdef SAMPLEATTN_WITH_CUDA
#include "cuda/backend.h"
#endif

namespace sampleattn {
namespace {

using test::HostTensor;

enum Call : unsigned { kSelect = 1, kAttend = 2, kSample = 4, kDense = 8, kMetrics = 16, kAll = 31 };

// Valid inputs: q [1, 8, 4, 64], k and v [1, 16, 2, 64], float32; each case edits a copy.
struct Inputs {
  HostTensor q{DType::f32, 1, 8, 4, 64}, k{DType::f32, 1, 16, 2, 64}, v{DType::f32, 1, 16, 2, 64};
  TensorView qv, kv, vv, ov;
  HostTensor out{DType::f32, 1, 8, 4, 64};
  AttnParams params;
  SampleConfig config;
  ExecOptions options{Backend::cpu};
  Selection selection;
  std::vector<std::int64_t> rows{0, 7};

  explicit Inputs(std::mt19937_64& rng) {
    q.fill_random(rng);
    k.fill_random(rng);
    v.fill_random(rng);
    qv = q.view();
    kv = k.view();
    vv = v.view();
    ov = out.view();
    selection = test::random_selection(rng, 1, 4, 8, 16, true, 3, 4);
  }
  // A tensor of another shape or dtype, filled, kept alive by this object.
  TensorView make(DType dtype, std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d, std::mt19937_64& rng) {
    extra.emplace_back(dtype, b, s, h, d);
    extra.back().fill_random(rng);
    return extra.back().view();
  }
  std::vector<HostTensor> extra;
};

struct Case {
  const char* name;
  std::function<void(Inputs&, std::mt19937_64&)> edit;
  std::string expected;
  unsigned calls;
};

std::vector<Case> cases() {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  return {
      // Mismatched shapes and dtypes.
      {"k batch", [](Inputs& in, auto& rng) { in.kv = in.make(DType::f32, 2, 16, 2, 64, rng); },
       "k.batch (2) must equal q.batch (1)", kAll},
      {"k head_dim", [](Inputs& in, auto& rng) { in.kv = in.make(DType::f32, 1, 16, 2, 32, rng); },
       "k.head_dim (32) must equal q.head_dim (64)", kAll},
      {"v shape", [](Inputs& in, auto& rng) { in.vv = in.make(DType::f32, 1, 15, 2, 64, rng); },
       "v.shape (1, 15, 2, 64) must equal k.shape (1, 16, 2, 64)", kAttend | kSample | kDense | kMetrics},
      {"k dtype", [](Inputs& in, auto& rng) { in.kv = in.make(DType::f16, 1, 16, 2, 64, rng); },
       "k.dtype (float16) must equal q.dtype (float32)", kAll},
      {"v dtype", [](Inputs& in, auto& rng) { in.vv = in.make(DType::bf16, 1, 16, 2, 64, rng); },
       "v.dtype (bfloat16) must equal q.dtype (float32)", kAttend | kSample | kDense | kMetrics},
      {"out shape", [](Inputs& in, auto& rng) { in.ov = in.make(DType::f32, 1, 8, 4, 32, rng); },
       "out.shape (1, 8, 4, 32) must equal (1, 8, 4, 64)", kAttend | kSample | kDense},
      {"out zero stride", [](Inputs& in, auto&) { in.ov.stride[1] = 0; },
       "out.stride[1] (0) must be > 0: a zero stride would make rows overwrite each other", kAttend | kSample | kDense},
      // GQA, head_dim, Sq > Sk, empty sequences.
      {"Hq % Hkv", [](Inputs& in, auto& rng) {
         in.kv = in.make(DType::f32, 1, 16, 3, 64, rng);
         in.vv = in.make(DType::f32, 1, 16, 3, 64, rng);
       }, "q.heads (4) must be a multiple of k.heads (3)", kAll},
      {"head_dim 300", [](Inputs& in, auto& rng) {
         in.qv = in.make(DType::f32, 1, 8, 4, 300, rng);
         in.kv = in.make(DType::f32, 1, 16, 2, 300, rng);
         in.vv = in.make(DType::f32, 1, 16, 2, 300, rng);
         in.ov = in.make(DType::f32, 1, 8, 4, 300, rng);
       }, "q.head_dim (300) must be <= 256 on the CPU backends", kSelect | kAttend | kSample | kDense},
      {"Sq > Sk", [](Inputs& in, auto& rng) {
         in.qv = in.make(DType::f32, 1, 20, 4, 64, rng);
         in.ov = in.make(DType::f32, 1, 20, 4, 64, rng);
       }, "q.seq (20) must be <= k.seq (16): queries are the last q.seq key positions", kAll},
      {"empty q", [](Inputs& in, auto&) { in.qv.shape[1] = 0; }, "q.seq (0) must be > 0", kAll},
      {"empty k", [](Inputs& in, auto&) { in.kv.shape[1] = 0; in.vv.shape[1] = 0; }, "k.seq (0) must be > 0", kAll},
      {"zero batch", [](Inputs& in, auto&) { in.qv.shape[0] = 0; }, "q.batch (0) must be > 0", kAll},
      {"zero heads", [](Inputs& in, auto&) { in.vv.shape[2] = 0; }, "v.heads (0) must be > 0",
       kAttend | kSample | kDense | kMetrics},
      // Config ranges.
      {"alpha 0", [](Inputs& in, auto&) { in.config.alpha = 0.0; }, "config.alpha (0) must be in (0, 1]", kSelect | kSample},
      {"alpha 1.5", [](Inputs& in, auto&) { in.config.alpha = 1.5; }, "config.alpha (1.5) must be in (0, 1]", kSelect | kSample},
      {"alpha nan", [](Inputs& in, auto&) { in.config.alpha = NAN; }, "config.alpha (nan) must be in (0, 1]", kSelect | kSample},
      {"sample_ratio 0", [](Inputs& in, auto&) { in.config.sample_ratio = 0.0; },
       "config.sample_ratio (0) must be in (0, 1]", kSelect | kSample},
      {"sample_ratio 2", [](Inputs& in, auto&) { in.config.sample_ratio = 2.0; },
       "config.sample_ratio (2) must be in (0, 1]", kSelect | kSample},
      {"window_ratio -0.1", [](Inputs& in, auto&) { in.config.window_ratio = -0.1; },
       "config.window_ratio (-0.1) must be in [0, 1]", kSelect | kSample},
      {"window_ratio 1.5", [](Inputs& in, auto&) { in.config.window_ratio = 1.5; },
       "config.window_ratio (1.5) must be in [0, 1]", kSelect | kSample},
      {"min_window", [](Inputs& in, auto&) { in.config.min_window = -1; }, "config.min_window (-1) must be >= 0", kSelect | kSample},
      {"sink_tokens", [](Inputs& in, auto&) { in.config.sink_tokens = -3; }, "config.sink_tokens (-3) must be >= 0", kSelect | kSample},
      {"dense_tail", [](Inputs& in, auto&) { in.config.dense_tail = -1; }, "config.dense_tail (-1) must be >= 0", kSelect | kSample},
      {"dense_head_density 0", [](Inputs& in, auto&) { in.config.dense_head_density = 0.0; },
       "config.dense_head_density (0) must be in (0, 1]", kSelect | kSample},
      {"dense_head_density 1.5", [](Inputs& in, auto&) { in.config.dense_head_density = 1.5; },
       "config.dense_head_density (1.5) must be in (0, 1]", kSelect | kSample},
      {"dense_head_density nan", [](Inputs& in, auto&) { in.config.dense_head_density = NAN; },
       "config.dense_head_density (nan) must be in (0, 1]", kSelect | kSample},
      {"scale", [](Inputs& in, auto&) { in.params.scale = 0.0f; }, "params.scale (0) must be finite and > 0", kAll},
      // NaN / Inf: rejected (the documented policy), naming the element.
      {"nan in q", [nan](Inputs& in, auto&) { in.q.set(0, 3, 1, 2, nan); },
       "q[0, 3, 1, 2] is nan: inputs must be finite (NaN/Inf are rejected)", kAll},
      {"inf in k", [inf](Inputs& in, auto&) { in.k.set(0, 15, 1, 63, inf); },
       "k[0, 15, 1, 63] is inf: inputs must be finite (NaN/Inf are rejected)", kAll},
      {"-inf in v", [inf](Inputs& in, auto&) { in.v.set(0, 0, 0, 0, -inf); },
       "v[0, 0, 0, 0] is -inf: inputs must be finite (NaN/Inf are rejected)", kAttend | kSample | kDense | kMetrics},
      // Finite but so large that a float32 score would overflow: rejected, not turned into a silent NaN.
      {"score overflow", [](Inputs& in, auto&) {
         in.q.set(0, 0, 0, 0, 1e30f);
         in.k.set(0, 0, 0, 0, -1e30f);
       }, "q and k are too large: scores scale * q.k can reach", kAll},
      {"q x scale overflow", [](Inputs& in, auto& rng) {
         in.qv = in.make(DType::f32, 1, 8, 4, 1, rng);
         in.kv = in.make(DType::f32, 1, 16, 2, 1, rng);
         in.vv = in.make(DType::f32, 1, 16, 2, 1, rng);
         in.ov = in.make(DType::f32, 1, 8, 4, 1, rng);
         static_cast<float*>(in.qv.data)[5] = 3e38f;
         for (int i = 0; i < 32; ++i) static_cast<float*>(in.kv.data)[i] = 1e-37f;
       }, "q is too large for float32 arithmetic: max|q| (3e+38) x scale (1) must be <= 1e28", kAll},
      {"k x scale overflow", [](Inputs& in, auto&) { in.k.set(0, 3, 1, 0, 1e30f); }, "k is too large for float32 arithmetic: max|k| (1e+30) x max(scale (0.125), 1) must be <= 1e28", kAll},
      {"v sum overflow", [](Inputs& in, auto&) { in.v.set(0, 2, 0, 5, -1e38f); },
       "v is too large for float32 arithmetic: max|v| (1e+38) x k.seq (16) must be <= 1e37",
       kAttend | kSample | kDense | kMetrics},
      // Outputs that overlap themselves or the inputs (the results would depend on the order of the writes).
      {"out is v", [](Inputs& in, auto&) { in.ov.data = in.vv.data; }, ") shares memory with v (",
       kAttend | kSample | kDense},
      {"out is q", [](Inputs& in, auto&) { in.ov.data = in.qv.data; }, ") shares memory with q (",
       kAttend | kSample | kDense},
      {"out is k", [](Inputs& in, auto&) { in.ov.data = in.kv.data; }, ") shares memory with k (",
       kAttend | kSample | kDense},
      {"out overlaps itself", [](Inputs& in, auto&) { in.ov.stride = {2048, 256, 16, 1}; },
       "out.stride (2048, 256, 16, 1) with shape (1, 8, 4, 64) lets elements of out share memory",
       kAttend | kSample | kDense},
      {"misaligned q", [](Inputs& in, auto&) { in.qv.data = static_cast<char*>(in.qv.data) + 2; },
       "must be aligned to 4 bytes (float32 elements)", kAll},
      {"contiguous view of zero heads", [](Inputs& in, auto&) {
         in.kv = TensorView::contiguous(in.kv.data, DType::f32, 1, 16, 0, 64);
       }, "k.heads (0) must be > 0", kAll},
      // Sizes whose products overflow, and other malformed views.
      {"shape x stride overflow", [](Inputs& in, auto&) {
         in.qv.shape = {1, std::int64_t{1} << 40, 1, 1};
         in.qv.stride = {1, std::int64_t{1} << 30, 1, 1};
       }, "q: shape x stride overflows int64 (axis 1: size 1099511627776, stride 1073741824)", kAll},
      {"byte size overflow", [](Inputs& in, auto&) {
         in.kv.shape = {1, std::int64_t{1} << 61, 1, 1};
         in.kv.stride = {1, 1, 1, 1};
       }, "k: byte size overflows int64", kAll},
      {"element count overflow", [](Inputs& in, auto&) {
         in.qv.shape = {std::int64_t{1} << 40, std::int64_t{1} << 30, 4, 64};
         in.qv.stride = {1, 1, 1, 1};
       }, "q: the element count (shape 1099511627776 x 1073741824 x 4 x 64) overflows int64", kAll},
      {"broadcast view", [](Inputs& in, auto&) { in.kv.stride[1] = 0; },
       "k.stride[1] (0) must be > 0 for an axis of size 16: broadcast views are not supported", kAll},
      {"null data", [](Inputs& in, auto&) { in.vv.data = nullptr; }, "v.data is null", kAttend | kSample | kDense | kMetrics},
      {"negative stride", [](Inputs& in, auto&) { in.qv.stride[1] = -256; }, "q.stride[1] (-256) must be >= 0", kAll},
      // Selections that do not fit the inputs.
      {"selection shape", [](Inputs& in, auto& rng) { in.selection = test::random_selection(rng, 1, 4, 8, 17, true, 3, 4); },
       "selection shape (batch 1, heads 4, seq_q 8, seq_k 17) does not match the inputs (batch 1, heads 4, seq_q 8, seq_k 16)",
       kAttend | kMetrics},
      {"selection unsorted", [](Inputs& in, auto&) { std::swap(in.selection.indices[0], in.selection.indices[1]); },
       "selection.indices of head 0 must be sorted, unique and in [0, 16)", kAttend | kMetrics},
      {"selection offsets", [](Inputs& in, auto&) {
         in.selection.offsets[1] = static_cast<std::int64_t>(in.selection.indices.size()) + 5;
       }, "selection.offsets must be non-decreasing (head 1: ", kAttend | kMetrics},
      {"selection causal", [](Inputs& in, auto&) { in.selection.causal = false; },
       "selection.causal (0) must equal params.causal (1)", kAttend | kMetrics},
      // Options and rows.
      {"threads", [](Inputs& in, auto&) { in.options.num_threads = -1; },
       "options.num_threads (-1) must be in [0, 4096] (0 = all hardware threads)", kSelect | kAttend | kSample | kDense},
      {"threads huge", [](Inputs& in, auto&) { in.options.num_threads = 1 << 30; },
       "options.num_threads (1073741824) must be in [0, 4096]", kSelect | kAttend | kSample | kDense},
      {"device", [](Inputs& in, auto&) { in.qv.device = Device::cuda; }, "k.device (cpu:0) must equal q.device (cuda:0)", kAll},
      {"metric row", [](Inputs& in, auto&) { in.rows = {0, 8}; }, "exact_metrics: row (8) must be in [0, 8)", kMetrics},
      {"no metric rows", [](Inputs& in, auto&) { in.rows.clear(); }, "exact_metrics: rows is empty", kMetrics},
  };
}

bool all_nan(const HostTensor& t) {
  for (std::int64_t s = 0; s < t.shape()[1]; ++s)
    for (std::int64_t h = 0; h < t.shape()[2]; ++h)
      for (std::int64_t d = 0; d < t.shape()[3]; ++d)
        if (!std::isnan(t.at(0, s, h, d))) return false;
  return true;
}

TEST(ApiErrors, EveryBadInputThrowsNamingTheArgumentAndValues) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const Case& c : cases()) {
    const std::vector<std::pair<Call, std::function<void(Inputs&)>>> calls = {
        {kSelect, [](Inputs& in) { select(in.qv, in.kv, in.params, in.config, in.options); }},
        {kAttend, [](Inputs& in) { attend(in.qv, in.kv, in.vv, in.selection, in.ov, nullptr, in.params, in.options); }},
        {kSample, [](Inputs& in) { sample_attention(in.qv, in.kv, in.vv, in.ov, nullptr, in.params, in.config, in.options); }},
        {kDense, [](Inputs& in) { dense_attention(in.qv, in.kv, in.vv, in.ov, nullptr, in.params, in.options); }},
        // window_attention takes dense_attention's arguments (and a window, valid here): the same checks.
        {kDense, [](Inputs& in) { window_attention(in.qv, in.kv, in.vv, 3, in.ov, nullptr, in.params, in.options); }},
        {kMetrics, [](Inputs& in) { exact_metrics(in.qv, in.kv, in.vv, in.selection, in.rows, in.params); }},
    };
    for (const auto& [call, fn] : calls) {
      if ((c.calls & call) == 0) continue;
      Inputs in(rng);
      c.edit(in, rng);
      SCOPED_TRACE(std::string(c.name) + ", call " + std::to_string(call));
      try {
        fn(in);
        ADD_FAILURE() << "no error; expected: " << c.expected;
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(c.expected), std::string::npos)
            << "got:      " << e.what() << "\nexpected: " << c.expected;
      }
      EXPECT_TRUE(all_nan(in.out)) << "the output was written before the error";
    }
  }
}

// Asking for CUDA where it cannot run: a build without the backend; host tensors; views labelled CUDA on a
// machine without a device.
void expect_dense_error(Inputs& in, const std::string& expected) {
  try {
    dense_attention(in.qv, in.kv, in.vv, in.ov, nullptr, in.params, in.options);
    ADD_FAILURE() << "expected: " << expected;
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), expected);
  }
  EXPECT_TRUE(all_nan(in.out));
}

TEST(ApiErrors, CudaBackendWhereItCannotRun) {
  std::mt19937_64 rng(test::test_seed());
  Inputs in(rng);
  in.options.backend = Backend::cuda;
#ifndef SAMPLEATTN_WITH_CUDA
  expect_dense_error(in, "backend cuda: this build of sampleattn has no CUDA backend");
#else
  expect_dense_error(in, "backend cuda needs CUDA tensors, but q.device is cpu");
  if (!cuda::available()) {
    for (TensorView* t : {&in.qv, &in.kv, &in.vv, &in.ov}) t->device = Device::cuda;
    expect_dense_error(in, "backend cuda: no CUDA device is available");
  }
#endif
}

TEST(ApiErrors, TheUnbrokenInputsWork) {
  std::mt19937_64 rng(test::test_seed());
  Inputs in(rng);
  EXPECT_NO_THROW(sample_attention(in.qv, in.kv, in.vv, in.ov, nullptr, in.params, in.config, in.options));
  EXPECT_NO_THROW(exact_metrics(in.qv, in.kv, in.vv, in.selection, in.rows, in.params));
  EXPECT_NO_THROW(window_attention(in.qv, in.kv, in.vv, 3, in.ov, nullptr, in.params, in.options));
}

// lse: aligned, and apart from out and the inputs.
TEST(ApiErrors, LseMustBeAlignedAndApartFromTheOtherTensors) {
  std::mt19937_64 rng(test::test_seed());
  std::vector<float> lse(4 * 8 + 1);
  const std::vector<std::pair<float*, std::string>> cases = {
      {reinterpret_cast<float*>(reinterpret_cast<char*>(lse.data()) + 1), "must be aligned to 4 bytes (float32)"},
      {nullptr, " floats) shares memory with out ("},
      {nullptr, " floats) shares memory with k ("},
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    Inputs in(rng);
    float* l = i == 0 ? cases[i].first : i == 1 ? static_cast<float*>(in.ov.data) + 100 : static_cast<float*>(in.kv.data);
    try {
      dense_attention(in.qv, in.kv, in.vv, in.ov, l, in.params, in.options);
      ADD_FAILURE() << "no error; expected: " << cases[i].second;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(cases[i].second), std::string::npos) << e.what();
    }
    EXPECT_TRUE(all_nan(in.out));
  }
}

// q, k, v and out as slices of one fused buffer [B, S, Hq + 2 Hkv + Hq, d] interleave without sharing an
// element: accepted, and the result equals that of separate buffers.
TEST(ApiErrors, FusedBufferSlicesAreNotOverlaps) {
  std::mt19937_64 rng(test::test_seed());
  const std::int64_t s = 16, hq = 4, hkv = 2, d = 64, w = hq + 2 * hkv + hq;
  HostTensor fused(DType::f32, 1, s, w, d);
  fused.fill_random(rng);
  auto slice = [&](std::int64_t head0, std::int64_t heads) {
    TensorView t = fused.view();
    t.data = static_cast<float*>(t.data) + head0 * d;
    t.shape[2] = heads;
    return t;
  };
  const TensorView q = slice(0, hq), k = slice(hq, hkv), v = slice(hq + hkv, hkv), out = slice(hq + 2 * hkv, hq);
  HostTensor qc(DType::f32, 1, s, hq, d), kc(DType::f32, 1, s, hkv, d), vc(DType::f32, 1, s, hkv, d),
      oc(DType::f32, 1, s, hq, d);
  for (std::int64_t i = 0; i < s; ++i)
    for (std::int64_t e = 0; e < d; ++e) {
      for (std::int64_t h = 0; h < hq; ++h) qc.set(0, i, h, e, fused.at(0, i, h, e));
      for (std::int64_t h = 0; h < hkv; ++h) {
        kc.set(0, i, h, e, fused.at(0, i, hq + h, e));
        vc.set(0, i, h, e, fused.at(0, i, hq + hkv + h, e));
      }
    }
  ASSERT_NO_THROW(dense_attention(q, k, v, out, nullptr, {}, {Backend::cpu}));
  dense_attention(qc.view(), kc.view(), vc.view(), oc.view(), nullptr, {}, {Backend::cpu});
  for (std::int64_t i = 0; i < s; ++i)
    for (std::int64_t h = 0; h < hq; ++h)
      for (std::int64_t e = 0; e < d; ++e) EXPECT_NEAR(fused.at(0, i, hq + 2 * hkv + h, e), oc.at(0, i, h, e), 1e-6);
}

TEST(ApiErrors, MetricRowsChecksItsArguments) {
  EXPECT_THROW(metric_rows(0, 5), Error);
  EXPECT_THROW(metric_rows(5, 0), Error);
  EXPECT_EQ(metric_rows(100, 4), (std::vector<std::int64_t>{24, 49, 74, 99}));
  EXPECT_EQ(metric_rows(3, 10), (std::vector<std::int64_t>{0, 1, 2}));
  for (const std::int64_t seq : {std::int64_t{1}, std::int64_t{97}, std::int64_t{4097}, INT64_MAX}) {
    for (const std::int64_t n : {std::int64_t{1}, std::int64_t{2}, std::int64_t{7}, std::int64_t{64}}) {
      const std::vector<std::int64_t> rows = metric_rows(seq, n);
      ASSERT_EQ(static_cast<std::int64_t>(rows.size()), std::min(seq, n));
      EXPECT_EQ(rows.back(), seq - 1);
      for (std::size_t i = 0; i < rows.size(); ++i) {
        EXPECT_GE(rows[i], i == 0 ? 0 : rows[i - 1] + 1) << "seq " << seq << ", n " << n;  // ascending, distinct
        if (seq < (std::int64_t{1} << 40)) {  // the plain formula, where it cannot overflow
          EXPECT_EQ(rows[i], static_cast<std::int64_t>(i + 1) * seq / static_cast<std::int64_t>(rows.size()) - 1);
        }
      }
    }
  }
}

}  // namespace
}  // namespace sampleattn
