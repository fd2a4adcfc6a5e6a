// CUDA selection (stages 1 and 2, src/cuda/select_*.cu) against the CPU reference through the public API
// (sampleattn::select with Backend::cuda vs Backend::cpu_reference) on fresh random inputs and on the
// structured generator (include/sampleattn/workload.h): Sk = 1, 17, 97, 1025, 2049, 4097, Sq < Sk, GQA 1/4/8,
// head_dim 64/128, bf16/fp16, [b, s, h, d], [b, h, s, d] and padded (unaligned) layouts, causal and not,
// sinks, dense tail, alpha < 1 and = 1, every row sampled; plus the NaN/Inf policy. Stage 1 runs its sm_90a
// kernels on Hopper and its sm_80 kernels elsewhere (SAMPLEATTN_CUDA_KERNELS=sm80 forces them, as
// scripts/device_test.sh does in its second run). Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>

#include "core/problem.h"
#include "core/schedule.h"
#include "cuda/device_util.h"
#include "cuda/select_args.h"
#include "cuda/selection_check.h"
#include "cuda/workspace.h"
#include "sampleattn/api.h"
#include "sampleattn/workload.h"
#include "support/host_tensor.h"

namespace sampleattn {
namespace {

using test::DeviceTensor;
using test::HostTensor;
using test::Layout;

struct SelCase {
  std::int64_t batch, seq_q, seq_k, q_heads, kv_heads, head_dim;
  DType dtype;
  Layout layout = Layout::bshd;
  bool causal = true;
  double alpha = 0.95;
  double sample_ratio = 0.05;
  std::int64_t sink = 0, tail = 0;
  float q_scale = 1.0f;  // stddev of q: larger makes attention sharper (fewer columns)
};

std::string describe(const SelCase& c) {
  return "B" + std::to_string(c.batch) + " Sq" + std::to_string(c.seq_q) + " Sk" + std::to_string(c.seq_k) + " Hq" +
         std::to_string(c.q_heads) + " Hkv" + std::to_string(c.kv_heads) + " d" + std::to_string(c.head_dim) + " " +
         to_string(c.dtype) + " layout" + std::to_string(static_cast<int>(c.layout)) +
         (c.causal ? " causal" : " non-causal") + " alpha" + std::to_string(c.alpha) + " ratio" +
         std::to_string(c.sample_ratio) + " sink" + std::to_string(c.sink) + " tail" + std::to_string(c.tail);
}

SampleConfig config_of(const SelCase& c) {
  SampleConfig cfg;
  cfg.alpha = c.alpha;
  cfg.sample_ratio = c.sample_ratio;
  cfg.sink_tokens = c.sink;
  cfg.dense_tail = c.tail;
  cfg.min_window = 4;  // small shapes: keep the band narrow so that columns matter
  return cfg;
}

void compare_on(const TensorView& qh, const TensorView& kh, const TensorView& qd, const TensorView& kd, bool causal,
                const SampleConfig& cfg) {
  AttnParams params;
  params.causal = causal;
  ExecOptions cpu, gpu;
  cpu.backend = Backend::cpu_reference;
  gpu.backend = Backend::cuda;
  const Selection ref = select(qh, kh, params, cfg, cpu);
  const Selection got = select(qd, kd, params, cfg, gpu);
  const core::Problem p = core::make_problem(qh, kh, nullptr, params);
  test::expect_selection_matches(got, ref, p, qh, kh, cfg);
}

void run_random(const SelCase& c, std::uint64_t seed) {
  SCOPED_TRACE(describe(c) + " seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  HostTensor q(c.dtype, c.batch, c.seq_q, c.q_heads, c.head_dim, c.layout);
  HostTensor k(c.dtype, c.batch, c.seq_k, c.kv_heads, c.head_dim, c.layout);
  q.fill_random(rng, c.q_scale);
  k.fill_random(rng);
  DeviceTensor dq(q), dk(k);
  compare_on(q.view(), k.view(), dq.view(), dk.view(), c.causal, config_of(c));
}

class SelectCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::has_gpu()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(SelectCuda, RandomInputsMatchReference) {
  const std::uint64_t seed = test::test_seed();
  const SelCase cases[] = {
      {1, 1, 1, 1, 1, 64, DType::bf16},
      {1, 17, 17, 4, 1, 128, DType::f16, Layout::bshd, true, 0.95, 0.05, 0, 0, 2.0f},
      {2, 97, 97, 4, 4, 64, DType::bf16, Layout::bhsd, true, 0.9, 0.2, 0, 0, 2.0f},
      {1, 50, 97, 8, 1, 128, DType::bf16, Layout::padded, true, 0.95, 0.1, 2, 3, 2.0f},
      {1, 1025, 1025, 8, 2, 128, DType::bf16, Layout::bshd, true, 0.95, 0.05, 4, 16, 3.0f},
      {1, 300, 1025, 4, 1, 64, DType::f16, Layout::bshd, false, 0.9, 0.05, 0, 0, 3.0f},
      {2, 130, 1025, 8, 8, 64, DType::f16, Layout::padded, false, 0.8, 0.1, 1, 5, 2.0f},
      {1, 4097, 4097, 8, 1, 128, DType::bf16, Layout::bshd, true, 0.95, 0.05, 0, 0, 3.0f},
      {1, 2000, 4097, 4, 4, 64, DType::f16, Layout::bhsd, true, 0.8, 0.05, 0, 0, 3.0f},
  };
  for (const SelCase& c : cases) run_random(c, seed);
}

TEST_F(SelectCuda, AlphaOneAndEveryRowSampled) {
  const std::uint64_t seed = test::test_seed();
  const SelCase cases[] = {
      {1, 97, 97, 4, 2, 128, DType::bf16, Layout::bshd, true, 1.0, 0.05, 0, 0, 2.0f},
      {1, 200, 1025, 2, 1, 64, DType::f16, Layout::bshd, true, 0.95, 1.0, 0, 0, 3.0f},
      {1, 64, 200, 2, 2, 128, DType::bf16, Layout::bshd, false, 1.0, 1.0, 0, 0, 1.0f},
      // Dense sampling over a band wider than a 64-query tile: stage 1's per-tile paths (outside the band,
      // inside it, mixed) all occur, with and without a dense tail.
      {1, 2049, 2049, 4, 1, 128, DType::bf16, Layout::bshd, true, 0.95, 0.5, 0, 0, 2.0f},
      {1, 1500, 2049, 4, 2, 64, DType::f16, Layout::bshd, true, 0.9, 1.0, 0, 40, 2.0f},
  };
  for (const SelCase& c : cases) run_random(c, seed);
}

TEST_F(SelectCuda, StructuredInputsMatchReference) {
  const std::uint64_t seed = test::test_seed();
  struct W {
    std::int64_t seq_k, seq_q, q_heads, kv_heads, head_dim;
    DType dtype;
  };
  const W shapes[] = {
      {4097, 0, 8, 2, 128, DType::bf16}, {2048, 700, 8, 1, 64, DType::f16}, {1025, 0, 4, 4, 128, DType::f16}};
  for (const W& s : shapes) {
    WorkloadConfig wc;
    wc.seq_k = s.seq_k;
    wc.seq_q = s.seq_q;
    wc.q_heads = s.q_heads;
    wc.kv_heads = s.kv_heads;
    wc.head_dim = s.head_dim;
    wc.dtype = s.dtype;
    wc.seed = seed;
    const Workload w(wc);
    SCOPED_TRACE("workload Sk " + std::to_string(s.seq_k) + " Sq " + std::to_string(w.seq_q()) + " seed " +
                 std::to_string(seed));
    DeviceTensor dq(w.q(), test::view_bytes(w.q())), dk(w.k(), test::view_bytes(w.k()));
    SampleConfig cfg;
    compare_on(w.q(), w.k(), dq.view(), dk.view(), true, cfg);
    cfg.alpha = 0.8;
    cfg.sink_tokens = 4;
    compare_on(w.q(), w.k(), dq.view(), dk.view(), true, cfg);
  }
}

// NaN/Inf policy: a head whose column scores are not finite keeps every column and reports coverage NaN;
// heads of other KV heads are unaffected.
TEST_F(SelectCuda, NonFiniteInputsKeepEveryColumn) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::int64_t sk = 300;
  HostTensor q(DType::bf16, 1, sk, 4, 64), k(DType::bf16, 1, sk, 2, 64);
  q.fill_random(rng, 2.0f);
  k.fill_random(rng);
  DeviceTensor dq(q), dk(k);
  AttnParams params;
  ExecOptions gpu;
  gpu.backend = Backend::cuda;
  SampleConfig cfg;
  cfg.min_window = 4;
  const Selection clean = select(dq.view(), dk.view(), params, cfg, gpu);
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    k.set(0, 123, 1, 7, bad);  // KV head 1: query heads 2 and 3
    dk.upload(k);
    const Selection s = select(dq.view(), dk.view(), params, cfg, gpu);
    ASSERT_NO_THROW(s.validate());
    for (std::int64_t h = 0; h < 4; ++h) {
      if (h >= 2) {
        EXPECT_EQ(s.stats[h].kept_columns, sk) << "head " << h;
        EXPECT_TRUE(std::isnan(s.stats[h].sampled_coverage)) << "head " << h;
        EXPECT_DOUBLE_EQ(s.stats[h].density, 1.0);
      } else {
        const auto a = s.columns(h), b = clean.columns(h);
        EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end())) << "head " << h;
        EXPECT_DOUBLE_EQ(s.stats[h].sampled_coverage, clean.stats[h].sampled_coverage);
      }
    }
  }
}

TEST_F(SelectCuda, RejectsUnsupportedInputs) {
  HostTensor q(DType::f32, 1, 8, 2, 64), k(DType::f32, 1, 8, 2, 64);
  DeviceTensor dq(q), dk(k);
  ExecOptions gpu;
  gpu.backend = Backend::cuda;
  EXPECT_THROW(select(dq.view(), dk.view(), {}, {}, gpu), Error);
  HostTensor q96(DType::bf16, 1, 8, 2, 96), k96(DType::bf16, 1, 8, 2, 96);
  DeviceTensor dq96(q96), dk96(k96);
  EXPECT_THROW(select(dq96.view(), dk96.view(), {}, {}, gpu), Error);
}

// Host-side planning (no GPU needed): the numbers the kernels are launched with.
TEST(SelectPlanHost, KeyChunkAndPlanFollowTheCoreSchedule) {
  EXPECT_EQ(cuda::stage1_key_chunk(1), 4096);
  EXPECT_EQ(cuda::stage1_key_chunk(32768), 4096);
  EXPECT_EQ(cuda::stage1_key_chunk(131072), 8192);
  EXPECT_EQ(cuda::stage1_key_chunk(1 << 20), 65536);
  EXPECT_EQ(cuda::stage1_key_chunk(100000), 6272);  // ceil(100000 / 16) = 6250 -> next multiple of 64
  for (std::int64_t sk : {1, 17, 4097, 131072, 1000003})
    EXPECT_LE((sk + cuda::stage1_key_chunk(sk) - 1) / cuda::stage1_key_chunk(sk), 16);

  core::Problem p;
  p.batch = 2;
  p.seq_q = 1000;
  p.seq_k = 4097;
  p.q_heads = 8;
  p.kv_heads = 2;
  p.head_dim = 128;
  SampleConfig cfg;
  cfg.dense_tail = 5000;
  cfg.sink_tokens = 3;
  const cuda::SelectPlan plan = cuda::make_plan(p, cfg);
  EXPECT_EQ(plan.heads_total, 16);
  EXPECT_EQ(plan.num_sampled, static_cast<std::int64_t>(core::sampled_rows(cfg.sample_ratio, p.seq_q).size()));
  EXPECT_EQ(plan.window, core::window_size(cfg, p.seq_k));
  EXPECT_EQ(plan.dense_tail, 1000);
  EXPECT_EQ(plan.dense_tail_config, 5000);
  EXPECT_EQ(plan.bitmap_words, 129);
  const core::EntryCount base = core::count_entries(p, plan.window, plan.dense_tail, nullptr, 0);
  EXPECT_EQ(plan.base_entries, base.kept);
  EXPECT_EQ(plan.visible_entries, base.visible);

  const cuda::WorkspaceLayout l = cuda::workspace_layout(plan);
  const std::size_t offsets[] = {l.part_m,  l.part_l, l.lse2,   l.colscore, l.inside, l.indices,
                                 l.offsets, l.counts, l.window, l.bitmap,   l.stats};
  for (std::size_t i = 0; i < std::size(offsets); ++i) {
    EXPECT_EQ(offsets[i] % 256, 0u);
    if (i > 0) EXPECT_GT(offsets[i], offsets[i - 1]);
  }
  EXPECT_GE(l.bytes, l.stats + 16 * sizeof(cuda::DeviceHeadStats));
  EXPECT_GE(l.indices - l.inside, 16u * 4097 * sizeof(float));
  alignas(256) static unsigned char small[512];
  EXPECT_THROW(cuda::carve_workspace(small, sizeof(small), l), Error);
  EXPECT_THROW(cuda::carve_workspace(small + 8, l.bytes, l), Error);
}

}  // namespace
}  // namespace sampleattn
