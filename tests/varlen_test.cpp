// Packed variable-length batches (api.h's sample_attention_varlen / dense_attention_varlen) on both CPU
// backends: each sequence's selection, output rows and lse block equal those of a call on that sequence's
// own compact tensors (sequences of awkward lengths, one without queries, one Sq < Sk, GQA 4); bad offsets
// are rejected by name before anything is written.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "sampleattn/api.h"
#include "sampleattn/error.h"
#include "support/host_tensor.h"
#include "support/packed_batch.h"

namespace sampleattn {
namespace {

using test::HostTensor;

constexpr std::int64_t kHq = 8, kHkv = 2, kD = 64;

test::PackedBatch make_packed(const std::vector<std::pair<std::int64_t, std::int64_t>>& lens, std::mt19937_64& rng) {
  return test::make_packed_batch(DType::bf16, kHq, kHkv, kD, lens, rng);
}

TEST(Varlen, EachSequenceMatchesItsOwnCall) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const test::PackedBatch p = make_packed({{97, 97}, {0, 5}, {17, 300}, {1, 1}, {130, 130}}, rng);
  SampleConfig cfg;
  cfg.min_window = 8;
  cfg.dense_tail = 2;
  for (Backend backend : {Backend::cpu, Backend::cpu_reference}) {
    SCOPED_TRACE(to_string(backend));
    ExecOptions opt;
    opt.backend = backend;
    for (bool sparse : {true, false}) {
      SCOPED_TRACE(sparse ? "sample_attention_varlen" : "dense_attention_varlen");
      HostTensor out(DType::bf16, 1, p.cu_q.back(), kHq, kD);  // poisoned
      std::vector<float> lse(static_cast<std::size_t>(kHq * p.cu_q.back()), std::nanf(""));
      std::vector<Selection> sels;
      if (sparse)
        sels = sample_attention_varlen(p.pq.view(), p.pk.view(), p.pv.view(), p.cu_q, p.cu_k, out.view(), lse.data(),
                                       {}, cfg, opt);
      else
        dense_attention_varlen(p.pq.view(), p.pk.view(), p.pv.view(), p.cu_q, p.cu_k, out.view(), lse.data(), {},
                               opt);
      ASSERT_EQ(sels.size(), sparse ? p.q.size() : 0u);
      for (std::size_t i = 0; i < p.q.size(); ++i) {
        SCOPED_TRACE("sequence " + std::to_string(i));
        const std::int64_t sq = p.q[i].shape()[1];
        HostTensor want(DType::bf16, 1, sq, kHq, kD);
        std::vector<float> want_lse(static_cast<std::size_t>(kHq * sq));
        if (sq == 0) {
          if (sparse) EXPECT_EQ(sels[i].batch, 0) << "a sequence without queries has no selection";
          continue;
        }
        if (sparse) {
          const Selection sel = sample_attention(p.q[i].view(), p.k[i].view(), p.v[i].view(), want.view(),
                                                 want_lse.data(), {}, cfg, opt);
          EXPECT_EQ(sels[i].seq_q, sel.seq_q);
          EXPECT_EQ(sels[i].seq_k, sel.seq_k);
          EXPECT_EQ(sels[i].window, sel.window);
          EXPECT_EQ(sels[i].offsets, sel.offsets);
          EXPECT_EQ(sels[i].indices, sel.indices);
        } else {
          dense_attention(p.q[i].view(), p.k[i].view(), p.v[i].view(), want.view(), want_lse.data(), {}, opt);
        }
        double out_diff = 0.0, lse_diff = 0.0;
        for (std::int64_t s = 0; s < sq; ++s)
          for (std::int64_t h = 0; h < kHq; ++h) {
            const double l = lse[kHq * p.cu_q[i] + h * sq + s] - want_lse[h * sq + s];
            lse_diff = std::isfinite(l) ? std::max(lse_diff, std::fabs(l)) : INFINITY;
            for (std::int64_t d = 0; d < kD; ++d) {
              const double o = out.at(0, p.cu_q[i] + s, h, d) - want.at(0, s, h, d);
              out_diff = std::isfinite(o) ? std::max(out_diff, std::fabs(o)) : INFINITY;
            }
          }
        EXPECT_EQ(out_diff, 0.0);
        EXPECT_EQ(lse_diff, 0.0);
      }
    }
  }
}

TEST(Varlen, RejectsBadOffsetsBeforeWriting) {
  std::mt19937_64 rng(test::test_seed());
  const test::PackedBatch p = make_packed({{10, 20}, {5, 5}}, rng);
  const HostTensor fresh(DType::bf16, 1, 15, kHq, kD);  // poisoned
  struct Bad {
    std::vector<std::int64_t> cu_q, cu_k;
    std::string names;
  };
  const Bad bad[] = {
      {{}, {}, "cu_seqlens_q"},
      {{0, 10, 15}, {0, 25}, "the same size"},
      {{1, 10, 15}, {0, 20, 25}, "cu_seqlens_q[0] (1)"},
      {{0, 10, 15}, {0, 26, 25}, "cu_seqlens_k[2] (25) is below cu_seqlens_k[1] (26)"},
      {{0, 10, 14}, {0, 20, 25}, "cu_seqlens_q ends at 14, but q.seq is 15"},
      {{0, 10, 15}, {0, 20, 24}, "cu_seqlens_k ends at 24"},
      {{0, 12, 15}, {0, 11, 25}, "sequence 0 has 12 queries but 11 keys"},
      {{0, 5, 15}, {0, 20, 25}, "sequence 1 has 10 queries but 5 keys"},  // sequence 0 alone would run
  };
  for (const Bad& b : bad) {
    HostTensor out = fresh;
    std::vector<float> lse(static_cast<std::size_t>(kHq * 15), 7.0f);
    try {
      sample_attention_varlen(p.pq.view(), p.pk.view(), p.pv.view(), b.cu_q, b.cu_k, out.view(), lse.data());
      ADD_FAILURE() << "accepted offsets expected to fail with: " << b.names;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(b.names), std::string::npos) << e.what();
    }
    bool poisoned = true;
    for (std::int64_t r = 0; r < 15; ++r)
      for (std::int64_t h = 0; h < kHq; ++h)
        for (std::int64_t d = 0; d < kD; ++d) poisoned &= std::isnan(out.at(0, r, h, d));
    EXPECT_TRUE(poisoned) << "the output must keep its poison";
    EXPECT_EQ(lse, std::vector<float>(lse.size(), 7.0f));
  }
  // Checks of the packed views as one problem, which a per-sequence call would only make when it got there:
  // a NaN in the last sequence's v (the CPU backends reject non-finite inputs), and lse overlapping the last
  // sequence's rows of out. Nothing may be written.
  {
    HostTensor v = p.pv;
    v.set(0, 24, 1, 3, std::nanf(""));
    HostTensor out = fresh;
    std::vector<float> lse(static_cast<std::size_t>(kHq * 15), 7.0f);
    EXPECT_THROW(sample_attention_varlen(p.pq.view(), p.pk.view(), v.view(), p.cu_q, p.cu_k, out.view(), lse.data()),
                 Error);
    EXPECT_TRUE(test::max_abs_diff(out, fresh) == INFINITY && std::isnan(out.at(0, 0, 0, 0)));
    EXPECT_EQ(lse, std::vector<float>(lse.size(), 7.0f));
    float* inside_out = static_cast<float*>(out.view().data) + 10 * kHq * kD / 2;  // bf16: row 10 of out
    EXPECT_THROW(sample_attention_varlen(p.pq.view(), p.pk.view(), p.pv.view(), p.cu_q, p.cu_k, out.view(),
                                         inside_out),
                 Error);
    bool poisoned = true;
    for (std::int64_t r = 0; r < 15; ++r)
      for (std::int64_t h = 0; h < kHq; ++h)
        for (std::int64_t d = 0; d < kD; ++d) poisoned &= std::isnan(out.at(0, r, h, d));
    EXPECT_TRUE(poisoned) << "nothing may be written when a later sequence's check fails";
  }
  // A batch without queries does nothing.
  {
    HostTensor q0(DType::bf16, 1, 0, kHq, kD), out0(DType::bf16, 1, 0, kHq, kD);
    EXPECT_EQ(sample_attention_varlen(q0.view(), p.pk.view(), p.pv.view(), {0, 0, 0}, p.cu_k, out0.view()).size(), 2u);
  }
  // A batched q is not packed.
  HostTensor q2(DType::bf16, 2, 5, kHq, kD), out2(DType::bf16, 2, 5, kHq, kD);
  EXPECT_THROW(sample_attention_varlen(q2.view(), p.pk.view(), p.pv.view(), {0, 5}, {0, 25}, out2.view()), Error);
}

}  // namespace
}  // namespace sampleattn
