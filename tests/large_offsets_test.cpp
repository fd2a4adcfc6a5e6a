// Element offsets beyond 2^32 on the CPU backends: q and out with a batch stride past 2^32 elements, k and v
// with batches interleaved in rows 2^22 + 64 elements apart so that row 1024 starts past 2^32
// (support/spaced_view.h: address space reserved, only the touched pages allocated), against the same
// values in compact tensors. Each row is computed the same way whatever its strides, so the selection, the
// output and the lse must be identical; an offset held in 32 bits (signed or not) reads or writes elsewhere.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "sampleattn/api.h"
#include "sampleattn/error.h"
#include "support/host_tensor.h"
#include "support/spaced_view.h"

namespace sampleattn {
namespace {

using test::HostTensor;

// A spaced copy of a compact [batch, seq, heads, d] tensor.
struct Spaced {
  TensorView view;
  std::unique_ptr<test::ReservedBuffer> buffer;

  Spaced(const HostTensor& like, std::int64_t batch_stride, std::int64_t seq_stride)
      : view(test::spaced_view(nullptr, like.dtype(), like.shape(), batch_stride, seq_stride)) {
    buffer = std::make_unique<test::ReservedBuffer>(static_cast<std::size_t>(test::spanned_elements(view)) *
                                                    dtype_size(like.dtype()));
    view.data = buffer->data();
    test::copy_view(like.view(), view);
  }
  HostTensor compact() const {
    HostTensor t(view.dtype, view.batch(), view.seq(), view.heads(), view.head_dim());
    test::copy_view(view, t.view());
    return t;
  }
};

TEST(LargeOffsets, CpuBackendsMatchCompactCopies) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  HostTensor q(DType::bf16, 2, 40, 4, 64), k(DType::bf16, 2, 1100, 2, 64), v(DType::bf16, 2, 1100, 2, 64);
  HostTensor out(DType::bf16, 2, 40, 4, 64);  // poisoned
  q.fill_random(rng, 2.0f);
  k.fill_random(rng);
  v.fill_random(rng);
  const std::int64_t kv_row = 2 * 64;  // one batch's row: the next batch's row follows it
  std::unique_ptr<Spaced> sq, sk, sv, sout;
  try {
    sq = std::make_unique<Spaced>(q, test::kSpacedBatchStride, 4 * 64);
    sout = std::make_unique<Spaced>(out, test::kSpacedBatchStride, 4 * 64);
    sk = std::make_unique<Spaced>(k, kv_row, test::kSpacedRowStride);
    sv = std::make_unique<Spaced>(v, kv_row, test::kSpacedRowStride);
  } catch (const Error& e) {
    GTEST_SKIP() << "cannot reserve the address space: " << e.what();
  }
  ASSERT_GT(static_cast<double>(sq->view.offset(1, 0, 0, 0)), std::ldexp(1.0, 32));
  ASSERT_GT(static_cast<double>(sk->view.offset(0, 1024, 0, 0)), std::ldexp(1.0, 32));
  SampleConfig cfg;
  cfg.min_window = 8;
  cfg.sink_tokens = 1;
  cfg.dense_tail = 3;
  const std::vector<float> poisoned(2 * 4 * 40, std::nanf(""));
  for (Backend backend : {Backend::cpu, Backend::cpu_reference}) {
    SCOPED_TRACE(to_string(backend));
    ExecOptions opt;
    opt.backend = backend;
    for (bool sparse : {true, false}) {
      SCOPED_TRACE(sparse ? "sample_attention" : "dense_attention");
      HostTensor want(DType::bf16, 2, 40, 4, 64);  // poisoned
      test::copy_view(out.view(), sout->view);
      std::vector<float> lse = poisoned, spaced_lse = poisoned;
      if (sparse) {
        const Selection sel = sample_attention(q.view(), k.view(), v.view(), want.view(), lse.data(), {}, cfg, opt);
        const Selection spaced_sel =
            sample_attention(sq->view, sk->view, sv->view, sout->view, spaced_lse.data(), {}, cfg, opt);
        EXPECT_LT(sel.density(), 1.0) << "the case should leave columns to choose";
        EXPECT_EQ(spaced_sel.window, sel.window);
        EXPECT_EQ(spaced_sel.offsets, sel.offsets);
        EXPECT_EQ(spaced_sel.indices, sel.indices);
      } else {
        dense_attention(q.view(), k.view(), v.view(), want.view(), lse.data(), {}, opt);
        dense_attention(sq->view, sk->view, sv->view, sout->view, spaced_lse.data(), {}, opt);
      }
      EXPECT_EQ(test::max_abs_diff(sout->compact(), want), 0.0);
      EXPECT_EQ(test::max_abs_diff(spaced_lse, lse), 0.0);
    }
  }
}

}  // namespace
}  // namespace sampleattn
