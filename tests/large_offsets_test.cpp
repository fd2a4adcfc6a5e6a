// Element offsets beyond 2^31 on the CPU backends: q, k, v and out as views whose batch stride is 2^31 + 4096
// elements (support/spaced_view.h: address space reserved, only the touched pages allocated), against the
// same values in compact tensors. Each row is computed the same way whatever its strides, so the selection,
// the output and the lse must be identical; an offset held in 32 bits reads or writes the wrong batch.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "sampleattn/api.h"
#include "support/host_tensor.h"
#include "support/spaced_view.h"

namespace sampleattn {
namespace {

using test::HostTensor;

constexpr std::int64_t kBatchStride = (std::int64_t{1} << 31) + 4096;

// A spaced copy of a compact [batch, seq, heads, d] tensor (or, with fill = false, poisoned spaced storage
// of its shape).
struct Spaced {
  test::ReservedBuffer buffer;
  TensorView view;
  Spaced(const HostTensor& like, bool fill)
      : buffer(static_cast<std::size_t>(test::spaced_elements(like.shape()[0], like.shape()[1], like.shape()[2],
                                                              like.shape()[3], kBatchStride)) *
               dtype_size(like.dtype())),
        view(test::spaced_view(buffer.data(), like.dtype(), like.shape()[0], like.shape()[1], like.shape()[2],
                               like.shape()[3], kBatchStride)) {
    if (fill) {
      test::copy_view(like.view(), view);
    } else {
      HostTensor poison(like.dtype(), like.shape()[0], like.shape()[1], like.shape()[2], like.shape()[3]);
      test::copy_view(poison.view(), view);
    }
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
  HostTensor q(DType::bf16, 2, 40, 4, 64), k(DType::bf16, 2, 97, 2, 64), v(DType::bf16, 2, 97, 2, 64);
  q.fill_random(rng, 2.0f);
  k.fill_random(rng);
  v.fill_random(rng);
  const Spaced sq(q, true), sk(k, true), sv(v, true);
  SampleConfig cfg;
  cfg.min_window = 8;
  cfg.sink_tokens = 1;
  cfg.dense_tail = 3;
  for (Backend backend : {Backend::cpu, Backend::cpu_reference}) {
    SCOPED_TRACE(to_string(backend));
    ExecOptions opt;
    opt.backend = backend;
    HostTensor out(DType::bf16, 2, 40, 4, 64);
    const Spaced sout(out, false);
    std::vector<float> lse(2 * 4 * 40), spaced_lse(lse.size());
    const Selection sel = sample_attention(q.view(), k.view(), v.view(), out.view(), lse.data(), {}, cfg, opt);
    const Selection spaced_sel =
        sample_attention(sq.view, sk.view, sv.view, sout.view, spaced_lse.data(), {}, cfg, opt);
    EXPECT_LT(sel.density(), 1.0) << "the case should leave columns to choose";
    EXPECT_EQ(spaced_sel.window, sel.window);
    EXPECT_EQ(spaced_sel.offsets, sel.offsets);
    EXPECT_EQ(spaced_sel.indices, sel.indices);
    EXPECT_EQ(test::max_abs_diff(sout.compact(), out), 0.0);
    EXPECT_EQ(test::max_abs_diff(spaced_lse, lse), 0.0);

    dense_attention(q.view(), k.view(), v.view(), out.view(), lse.data(), {}, opt);
    dense_attention(sq.view, sk.view, sv.view, sout.view, spaced_lse.data(), {}, opt);
    EXPECT_EQ(test::max_abs_diff(sout.compact(), out), 0.0);
    EXPECT_EQ(test::max_abs_diff(spaced_lse, lse), 0.0);
  }
}

}  // namespace
}  // namespace sampleattn
