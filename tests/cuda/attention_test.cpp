// The CUDA attention kernels (src/cuda/attention.h, run_attention) against the CPU reference
// (src/cpu/reference.h, fp64): dense and sparse with hand-built selections (random columns, windows,
// dense tail), Sq < Sk, GQA 1/4/8, head_dim 64/96/128/256, bf16/fp16, Sk = 1, 17, 97, 1025, 4097, and
// [b, h, s, d] and padded (unaligned) layouts. Inputs are uploaded byte for byte, so the kernel sees the
// same strides as the reference; outputs and lse are poisoned (NaN) first, so an unwritten element fails,
// and the padding of padded layouts must still hold the poison afterwards. Outputs are also checked per row
// against the rounding the 16-bit formats allow (support/row_check.h), which follows each row's size.
// Every test skips when no GPU is present (CI compiles this file without one).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/problem.h"
#include "cpu/reference.h"
#include "cuda/attention.h"
#include "cuda/device_util.h"
#include "sampleattn/error.h"
#include "support/host_tensor.h"
#include "support/row_check.h"
#include "core/tolerance.h"

namespace sampleattn {
namespace {

using test::HostTensor;
using test::Layout;

bool has_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

void check_cuda(cudaError_t err, const char* what) { ASSERT_EQ(err, cudaSuccess) << what << ": " << cudaGetErrorString(err); }

// Owning device buffer; copies of host vectors / tensors.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
    if (cudaMalloc(&ptr_, bytes > 0 ? bytes : 1) != cudaSuccess) throw Error("cudaMalloc failed");
  }
  DeviceBuffer(const void* host, std::size_t bytes) : DeviceBuffer(bytes) {
    if (bytes > 0 && cudaMemcpy(ptr_, host, bytes, cudaMemcpyHostToDevice) != cudaSuccess)
      throw Error("cudaMemcpy to device failed");
  }
  template <typename T>
  explicit DeviceBuffer(const std::vector<T>& v) : DeviceBuffer(v.data(), v.size() * sizeof(T)) {}
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }
  void download(void* host) const {
    if (cudaMemcpy(host, ptr_, bytes_, cudaMemcpyDeviceToHost) != cudaSuccess) throw Error("cudaMemcpy failed");
  }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

struct Case {
  std::int64_t batch, seq_q, seq_k, q_heads, kv_heads, head_dim;
  DType dtype;
  bool causal;
  Layout layout;
  bool sparse;
  std::int64_t window = 0, columns = 0, dense_tail = 0;
  float q_scale = 1.0f;  // stddev of q: larger values make the softmax sharper
};

std::string describe(const Case& c) {
  return "B" + std::to_string(c.batch) + " Sq" + std::to_string(c.seq_q) + " Sk" + std::to_string(c.seq_k) +
         " Hq" + std::to_string(c.q_heads) + " Hkv" + std::to_string(c.kv_heads) + " d" +
         std::to_string(c.head_dim) + " " + to_string(c.dtype) + (c.causal ? " causal" : " non-causal") +
         " layout" + std::to_string(static_cast<int>(c.layout)) +
         (c.sparse ? " sparse w" + std::to_string(c.window) + " cols" + std::to_string(c.columns) + " tail" +
                         std::to_string(c.dense_tail)
                   : " dense");
}

void copy_strides(const TensorView& t, std::int64_t (&dst)[4]) {
  for (int i = 0; i < 4; ++i) dst[i] = t.stride[i];
}

// Bit j of word bh * words + j / 32 set iff column j is kept by head bh.
std::vector<std::uint32_t> column_bitmap(const Selection& s, std::int64_t words) {
  std::vector<std::uint32_t> bits(static_cast<std::size_t>(s.num_heads_total() * words), 0u);
  for (std::int64_t bh = 0; bh < s.num_heads_total(); ++bh)
    for (std::int32_t j : s.columns(bh)) bits[bh * words + j / 32] |= 1u << (j % 32);
  return bits;
}

// The dense-mode parameters of q, k, v, whose copies are at dq, dk, dv on the device.
cuda::AttentionParams params_for(const HostTensor& q, const HostTensor& k, const HostTensor& v, const DeviceBuffer& dq,
                                 const DeviceBuffer& dk, const DeviceBuffer& dv, float scale, bool causal) {
  cuda::AttentionParams ap;
  ap.q = dq.get();
  ap.k = dk.get();
  ap.v = dv.get();
  copy_strides(q.view(), ap.q_stride);
  copy_strides(k.view(), ap.k_stride);
  copy_strides(v.view(), ap.v_stride);
  ap.batch = q.shape()[0];
  ap.seq_q = q.shape()[1];
  ap.q_heads = q.shape()[2];
  ap.head_dim = q.shape()[3];
  ap.seq_k = k.shape()[1];
  ap.kv_heads = k.shape()[2];
  ap.dtype = q.dtype();
  ap.scale = scale;
  ap.causal = causal;
  return ap;
}

// Sparse mode over the device copies of windows, kept columns (indices, offsets, counts) and their bitmap.
void set_sparse(cuda::AttentionParams& ap, const DeviceBuffer& window, const DeviceBuffer& indices,
                const DeviceBuffer& offsets, const DeviceBuffer& counts, const DeviceBuffer& bitmap,
                std::int64_t words) {
  ap.window = static_cast<const std::int32_t*>(window.get());
  ap.col_indices = static_cast<const std::int32_t*>(indices.get());
  ap.col_offsets = static_cast<const std::int64_t*>(offsets.get());
  ap.col_counts = static_cast<const std::int32_t*>(counts.get());
  ap.col_bitmap = static_cast<const std::uint32_t*>(bitmap.get());
  ap.bitmap_words = words;
}

// One kernel run with the given window hint into `out` (freshly constructed, so NaN-poisoned) and `lse`
// (poisoned here): an element the kernel does not write fails every comparison.
void run_poisoned(cuda::AttentionParams ap, std::int64_t window_hint, HostTensor& out, std::vector<float>& lse) {
  std::fill(lse.begin(), lse.end(), std::numeric_limits<float>::quiet_NaN());
  copy_strides(out.view(), ap.out_stride);
  DeviceBuffer dout(out.data(), out.bytes()), dlse(lse);
  ap.out = dout.get();
  ap.lse = static_cast<float*>(dlse.get());
  ap.window_hint = window_hint;
  cuda::run_attention(ap, nullptr);
  check_cuda(cudaDeviceSynchronize(), "attention kernel");
  dout.download(out.data());
  dlse.download(lse.data());
}

// Layouts of q, k, v and out; by default all the case's.
using Layouts = std::array<Layout, 4>;

void run_case(const Case& c, std::uint64_t seed, std::optional<Layouts> layouts = std::nullopt) {
  const Layouts lay = layouts.value_or(Layouts{c.layout, c.layout, c.layout, c.layout});
  SCOPED_TRACE(describe(c) + " seed " + std::to_string(seed) + " layouts q/k/v/out " +
               std::to_string(static_cast<int>(lay[0])) + std::to_string(static_cast<int>(lay[1])) +
               std::to_string(static_cast<int>(lay[2])) + std::to_string(static_cast<int>(lay[3])));
  std::mt19937_64 rng(seed);
  HostTensor q(c.dtype, c.batch, c.seq_q, c.q_heads, c.head_dim, lay[0]);
  HostTensor k(c.dtype, c.batch, c.seq_k, c.kv_heads, c.head_dim, lay[1]);
  HostTensor v(c.dtype, c.batch, c.seq_k, c.kv_heads, c.head_dim, lay[2]);
  q.fill_random(rng, c.q_scale);
  k.fill_random(rng);
  v.fill_random(rng);
  core::Problem p;
  p.batch = c.batch;
  p.seq_q = c.seq_q;
  p.seq_k = c.seq_k;
  p.q_heads = c.q_heads;
  p.kv_heads = c.kv_heads;
  p.head_dim = c.head_dim;
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  p.causal = c.causal;

  // The reference at the scale, and its lse at twice the scale (the rows' spread, support/row_check.h).
  HostTensor ref_out(DType::f32, c.batch, c.seq_q, c.q_heads, c.head_dim), ref_out2 = ref_out;
  std::vector<float> ref_lse(static_cast<std::size_t>(c.batch * c.q_heads * c.seq_q)), ref_lse2 = ref_lse;
  Selection sel;
  if (c.sparse)
    sel = test::random_selection(rng, c.batch, c.q_heads, c.seq_q, c.seq_k, c.causal, c.window, c.columns,
                                 c.dense_tail);
  core::Problem p2 = p;
  p2.scale = 2.0f * p.scale;
  for (auto [pp, o, l] : {std::tuple{&p, &ref_out, &ref_lse}, std::tuple{&p2, &ref_out2, &ref_lse2}}) {
    if (c.sparse)
      ref::attend(*pp, q.view(), k.view(), v.view(), sel, o->view(), l->data());
    else
      ref::dense(*pp, q.view(), k.view(), v.view(), o->view(), l->data());
  }

  DeviceBuffer dq(q.data(), q.bytes()), dk(k.data(), k.bytes()), dv(v.data(), v.bytes());
  cuda::AttentionParams ap = params_for(q, k, v, dq, dk, dv, p.scale, c.causal);

  std::vector<std::int32_t> windows, counts;
  std::vector<std::uint32_t> bitmap;
  const std::int64_t words = (c.seq_k + 31) / 32;
  for (std::int64_t bh = 0; c.sparse && bh < sel.num_heads_total(); ++bh) {
    windows.push_back(static_cast<std::int32_t>(sel.window[bh]));
    counts.push_back(static_cast<std::int32_t>(sel.offsets[bh + 1] - sel.offsets[bh]));
  }
  if (c.sparse) bitmap = column_bitmap(sel, words);
  std::vector<std::int32_t> indices = sel.indices;
  if (indices.empty()) indices.push_back(0);  // keep the device pointer non-null
  DeviceBuffer dwin(windows), dcounts(counts), dbits(bitmap), dind(indices), doff(sel.offsets);
  if (c.sparse) {
    set_sparse(ap, dwin, dind, doff, dcounts, dbits, words);
    ap.dense_tail = c.dense_tail;
  }

  // Sparse cases run twice: without a window hint (128-row query tiles) and with the largest window as the
  // hint (64-row tiles on sm_90 when it is small); both must match the reference.
  const core::Tolerance tol = core::tolerance(c.dtype);
  const double vmax = test::max_abs(v);
  std::vector<std::int64_t> hints = {0};
  if (c.sparse) hints.push_back(*std::max_element(windows.begin(), windows.end()));
  for (std::int64_t hint : hints) {
    SCOPED_TRACE("window_hint " + std::to_string(hint));
    HostTensor out(c.dtype, c.batch, c.seq_q, c.q_heads, c.head_dim, lay[3]);  // poisoned by construction
    std::vector<float> lse(ref_lse.size());
    run_poisoned(ap, hint, out, lse);
    EXPECT_LE(test::max_abs_diff(out, ref_out), tol.out * vmax);
    EXPECT_LE(test::rounding_error_ratio(out, ref_out, ref_lse, ref_lse2, tol.rounding, vmax), 1.0);
    EXPECT_LE(test::max_abs_diff(lse, ref_lse), tol.lse);
    EXPECT_TRUE(test::padding_untouched(out)) << "the kernel wrote outside the output view";
  }
}

// Window 0 (allowed by the raw kernel API, not by Selection): each row attends to its head's kept columns only
// (those <= p when causal; all of them, right stripes included, when not). A query tile's band span then holds
// no band entry or is empty: Sq 129 / Sk 256 ends on row 128 alone at p = 255, whose span is empty, so the
// kernel starts on a gathered tile and needs the stripes before its first tile; with Sk 258 the tiles ending at
// p1 = 256 (128 rows, and 64 rows on sm_90) have a non-causal span that ends where the tile of p1 begins. Head 1
// keeps nothing: O = 0, lse = -inf. Reference: fp64 softmax over each row's kept set, written here.
void run_zero_window(std::int64_t sq, std::int64_t sk, bool causal, std::uint64_t seed) {
  SCOPED_TRACE("seed " + std::to_string(seed) + " Sq " + std::to_string(sq) + " Sk " + std::to_string(sk) +
               (causal ? " causal" : " non-causal"));
  std::mt19937_64 rng(seed);
  const std::int64_t hq = 4, hkv = 1, d = 128;
  HostTensor q(DType::bf16, 1, sq, hq, d), k(DType::bf16, 1, sk, hkv, d), v(DType::bf16, 1, sk, hkv, d);
  q.fill_random(rng);
  k.fill_random(rng);
  v.fill_random(rng);
  std::vector<std::vector<std::int32_t>> cols = {{10, 100, static_cast<std::int32_t>(sk - 1)}, {}, {}, {}};
  for (int h = 2; h < hq; ++h) {
    std::vector<std::int32_t> all(sk);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    cols[h].assign(all.begin(), all.begin() + 50);
    std::sort(cols[h].begin(), cols[h].end());
  }
  std::vector<std::int32_t> windows(hq, 0), counts, indices;
  std::vector<std::int64_t> offsets = {0};
  const std::int64_t words = (sk + 31) / 32;
  std::vector<std::uint32_t> bitmap(static_cast<std::size_t>(hq * words), 0u);
  for (int h = 0; h < hq; ++h) {
    counts.push_back(static_cast<std::int32_t>(cols[h].size()));
    indices.insert(indices.end(), cols[h].begin(), cols[h].end());
    offsets.push_back(static_cast<std::int64_t>(indices.size()));
    for (std::int32_t j : cols[h]) bitmap[h * words + j / 32] |= 1u << (j % 32);
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  HostTensor ref(DType::f32, 1, sq, hq, d);
  std::vector<float> ref_lse(static_cast<std::size_t>(hq * sq)), ref_lse2(ref_lse.size());
  for (int h = 0; h < hq; ++h) {
    for (std::int64_t r = 0; r < sq; ++r) {
      const std::int64_t p = sk - sq + r;
      std::vector<double> logit;
      std::vector<std::int32_t> kept;
      for (std::int32_t j : cols[h]) {
        if (causal && j > p) continue;
        double dot = 0.0;
        for (std::int64_t e = 0; e < d; ++e) dot += double(q.at(0, r, h, e)) * k.at(0, j, h / (hq / hkv), e);
        logit.push_back(dot * scale);
        kept.push_back(j);
      }
      if (kept.empty()) {
        for (std::int64_t e = 0; e < d; ++e) ref.set(0, r, h, e, 0.0f);
        ref_lse[h * sq + r] = ref_lse2[h * sq + r] = -std::numeric_limits<float>::infinity();
        continue;
      }
      const double m = *std::max_element(logit.begin(), logit.end());
      double sum = 0.0, sum2 = 0.0;
      for (double& x : logit) {
        sum += (x = std::exp(x - m));
        sum2 += x * x;
      }
      for (std::int64_t e = 0; e < d; ++e) {
        double acc = 0.0;
        for (std::size_t i = 0; i < kept.size(); ++i) acc += logit[i] * v.at(0, kept[i], h / (hq / hkv), e);
        ref.set(0, r, h, e, static_cast<float>(acc / sum));
      }
      ref_lse[h * sq + r] = static_cast<float>(m + std::log(sum));
      ref_lse2[h * sq + r] = static_cast<float>(2 * m + std::log(sum2));
    }
  }

  DeviceBuffer dq(q.data(), q.bytes()), dk(k.data(), k.bytes()), dv(v.data(), v.bytes());
  DeviceBuffer dwin(windows), dcounts(counts), dbits(bitmap), dind(indices), doff(offsets);
  cuda::AttentionParams ap = params_for(q, k, v, dq, dk, dv, scale, causal);
  set_sparse(ap, dwin, dind, doff, dcounts, dbits, words);
  const core::Tolerance tol = core::tolerance(DType::bf16);
  for (std::int64_t hint : {0, 1}) {  // 128-row query tiles, then 64-row ones on sm_90
    SCOPED_TRACE("window_hint " + std::to_string(hint));
    HostTensor out(DType::bf16, 1, sq, hq, d);  // poisoned by construction
    std::vector<float> lse(ref_lse.size());
    run_poisoned(ap, hint, out, lse);
    EXPECT_LE(test::max_abs_diff(out, ref), tol.out * test::max_abs(v));
    EXPECT_LE(test::rounding_error_ratio(out, ref, ref_lse, ref_lse2, tol.rounding, test::max_abs(v)), 1.0);
    double lse_err = 0.0;
    for (std::size_t i = 0; i < lse.size(); ++i) {
      if (std::isinf(ref_lse[i])) {
        EXPECT_TRUE(std::isinf(lse[i]) && lse[i] < 0) << "row " << i % sq << " head " << i / sq << ": " << lse[i];
      } else {
        const double err = std::abs(double(lse[i]) - ref_lse[i]);
        lse_err = std::isfinite(err) ? std::max(lse_err, err) : std::numeric_limits<double>::infinity();
      }
    }
    EXPECT_LE(lse_err, tol.lse);
  }
}


class AttentionCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(AttentionCuda, DenseMatchesReference) {
  const std::uint64_t seed = test::test_seed();
  const Case cases[] = {
      {1, 1, 1, 1, 1, 64, DType::bf16, true, Layout::bshd, false},
      {1, 17, 17, 4, 1, 128, DType::f16, true, Layout::bshd, false},
      {2, 97, 97, 2, 2, 64, DType::bf16, false, Layout::bhsd, false},
      {1, 50, 97, 8, 1, 128, DType::bf16, true, Layout::padded, false},
      {1, 300, 1025, 8, 2, 128, DType::bf16, true, Layout::bshd, false, 0, 0, 0, 2.0f},
      {1, 200, 1025, 4, 4, 64, DType::f16, false, Layout::bshd, false},
      {1, 130, 4097, 2, 1, 128, DType::f16, true, Layout::bhsd, false},
      {1, 129, 4097, 4, 1, 128, DType::bf16, true, Layout::bshd, false, 0, 0, 0, 2.5f},
      {1, 257, 257, 1, 1, 128, DType::bf16, true, Layout::bshd, false, 0, 0, 0, 3.0f},
  };
  for (const Case& c : cases) run_case(c, seed);
}

TEST_F(AttentionCuda, SparseMatchesReference) {
  const std::uint64_t seed = test::test_seed();
  const Case cases[] = {
      {1, 1, 1, 1, 1, 64, DType::bf16, true, Layout::bshd, true, 1, 1},
      {1, 17, 17, 4, 1, 128, DType::f16, true, Layout::bshd, true, 3, 4},
      {2, 97, 97, 4, 1, 64, DType::bf16, true, Layout::bhsd, true, 10, 20, 3},
      {1, 60, 97, 2, 2, 128, DType::bf16, false, Layout::padded, true, 7, 9},
      {1, 300, 1025, 8, 1, 128, DType::bf16, true, Layout::bshd, true, 100, 60, 5},
      {1, 300, 1025, 4, 4, 64, DType::f16, false, Layout::bshd, true, 64, 100},
      {2, 130, 4097, 2, 1, 128, DType::bf16, true, Layout::bshd, true, 500, 300},
      {1, 257, 4097, 4, 1, 128, DType::f16, true, Layout::bshd, true, 1, 1000, 40, 2.0f},
      {1, 200, 4097, 4, 2, 128, DType::bf16, true, Layout::bshd, true, 300, 900, 0, 2.5f},
      {1, 129, 1025, 2, 2, 64, DType::bf16, true, Layout::bhsd, true, 2000, 0},
      // Nearly every column kept: the left region is read as contiguous tiles with bitmap masks.
      {1, 300, 2049, 4, 1, 128, DType::bf16, true, Layout::bshd, true, 200, 1950},
      {1, 130, 1025, 2, 2, 64, DType::f16, false, Layout::bhsd, true, 50, 1000, 4},
      // GQA with several KV heads of several query heads each: h / group and h % kv_heads differ.
      {1, 300, 1025, 8, 2, 128, DType::bf16, true, Layout::bshd, true, 100, 60, 5},
      {2, 97, 200, 8, 2, 64, DType::f16, false, Layout::bhsd, true, 9, 30},
  };
  for (const Case& c : cases) run_case(c, seed);
}

// head_dim 96 (on Hopper the sm_90a kernel with rows stored 128 wide, 12 of 16 chunks copied; the sm_80 kernel with
// rows padded in shared memory where SAMPLEATTN_CUDA_KERNELS=sm80 or elsewhere) and 256 (on Hopper the sm_90a kernel
// with 128 x 64 tiles; the sm_80 kernel with 64-row blocks where SAMPLEATTN_CUDA_KERNELS=sm80 or elsewhere). Awkward
// lengths, GQA 1/4/8, Sq < Sk, both causal modes, every layout, dense and sparse.
TEST_F(AttentionCuda, HeadDims96And256MatchReference) {
  const std::uint64_t seed = test::test_seed();
  const Case cases[] = {
      {1, 1, 1, 1, 1, 96, DType::bf16, true, Layout::bshd, false},
      {1, 17, 17, 4, 1, 256, DType::f16, true, Layout::bshd, false},
      {2, 97, 97, 2, 2, 96, DType::f16, false, Layout::bhsd, false},
      {1, 50, 97, 8, 1, 256, DType::bf16, true, Layout::padded, false},
      {1, 300, 1025, 8, 1, 96, DType::bf16, true, Layout::padded, false, 0, 0, 0, 2.0f},
      {1, 130, 4097, 2, 1, 256, DType::bf16, true, Layout::bshd, false, 0, 0, 0, 2.5f},
      {1, 65, 4097, 2, 2, 96, DType::f16, true, Layout::bhsd, false},
      {1, 1, 1, 1, 1, 256, DType::bf16, true, Layout::bshd, true, 1, 1},
      {1, 17, 17, 4, 1, 96, DType::f16, true, Layout::bshd, true, 3, 4},
      {2, 97, 97, 4, 1, 256, DType::bf16, true, Layout::bhsd, true, 10, 20, 3},
      {1, 60, 97, 2, 2, 96, DType::bf16, false, Layout::padded, true, 7, 9},
      {1, 300, 1025, 8, 2, 256, DType::f16, true, Layout::padded, true, 100, 60, 5},
      {1, 129, 4097, 8, 1, 96, DType::bf16, true, Layout::bshd, true, 1, 1000, 40, 2.0f},
      {1, 100, 4097, 2, 2, 256, DType::bf16, false, Layout::bshd, true, 300, 900, 0, 2.5f},
      {1, 300, 2049, 4, 1, 256, DType::bf16, true, Layout::bshd, true, 200, 1950},
  };
  if (const int n = test::run_where_supported(cases, [&](const Case& c) { run_case(c, seed); }))
    GTEST_SKIP() << n << " head_dim 256 case(s) left out: this GPU gives a block too little shared memory";
}

// q, k, v and out each in its own layout (aligned ones keep the fast copy path, the padded one takes the
// other): a kernel reading v with k's strides, or writing out with q's, fails here.
TEST_F(AttentionCuda, MixedLayoutsMatchReference) {
  const std::uint64_t seed = test::test_seed();
  const Case dense{1, 200, 700, 8, 2, 128, DType::bf16, true, Layout::bshd, false};
  const Case sparse{2, 150, 600, 8, 2, 64, DType::f16, true, Layout::bshd, true, 40, 80, 3};
  for (const Layouts& l : {Layouts{Layout::bshd, Layout::bhsd, Layout::bshd, Layout::bhsd},
                           Layouts{Layout::bhsd, Layout::bshd, Layout::bhsd, Layout::bshd},
                           Layouts{Layout::bshd, Layout::bshd, Layout::padded, Layout::padded}}) {
    run_case(dense, seed, l);
    run_case(sparse, seed, l);
  }
}

TEST_F(AttentionCuda, SparseWithEveryColumnEqualsDense) {
  // Every column kept: the mask is the causal mask, so the result must equal dense attention.
  const std::uint64_t seed = test::test_seed();
  Case c{1, 200, 700, 4, 1, 128, DType::bf16, true, Layout::bshd, true, 1, 700};
  run_case(c, seed);
}

TEST_F(AttentionCuda, SparseWithZeroWindowKeepsOnlyItsColumns) {
  const std::uint64_t seed = test::test_seed();
  for (bool causal : {true, false}) {
    run_zero_window(129, 256, causal, seed);
    run_zero_window(129, 258, causal, seed);
  }
}

TEST_F(AttentionCuda, SmallCasesForSanitizers) {
  // Small enough for compute-sanitizer (memcheck, racecheck): every path once (gathered stripes on both
  // sides, band edges, dense tail, unaligned layout, partial tiles, a nearly full left region).
  const std::uint64_t seed = test::test_seed();
  const Case cases[] = {
      {1, 70, 150, 2, 1, 128, DType::bf16, true, Layout::bshd, false},
      {1, 140, 200, 2, 2, 64, DType::f16, false, Layout::padded, true, 20, 40},
      {2, 129, 300, 4, 1, 128, DType::bf16, true, Layout::bhsd, true, 30, 50, 7},
      {1, 100, 400, 2, 1, 128, DType::bf16, true, Layout::bshd, true, 20, 380},
      {1, 70, 150, 2, 1, 96, DType::f16, true, Layout::padded, true, 20, 40},
      {1, 70, 150, 2, 2, 256, DType::bf16, false, Layout::bshd, true, 20, 40},
      {1, 70, 150, 4, 2, 256, DType::f16, true, Layout::padded, true, 20, 40},
      {1, 70, 150, 2, 1, 96, DType::bf16, true, Layout::bshd, true, 20, 40},
  };
  if (const int n = test::run_where_supported(cases, [&](const Case& c) { run_case(c, seed); }))
    GTEST_SKIP() << n << " head_dim 256 case(s) left out: this GPU gives a block too little shared memory";
}

TEST(AttentionCudaHost, RejectsUnsupportedShapes) {
  EXPECT_FALSE(cuda::attention_supported(DType::f32, 128));
  EXPECT_FALSE(cuda::attention_supported(DType::bf16, 80));
  EXPECT_FALSE(cuda::attention_supported(DType::f16, 512));
  cuda::AttentionParams ap;
  ap.head_dim = 80;
  ap.batch = ap.seq_q = ap.seq_k = ap.q_heads = ap.kv_heads = 1;
  EXPECT_THROW(cuda::run_attention(ap, nullptr), Error);
  ap.head_dim = 128;
  EXPECT_THROW(cuda::run_attention(ap, nullptr), Error);  // null tensors
}

}  // namespace
}  // namespace sampleattn
