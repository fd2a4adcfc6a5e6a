// How a serving engine calls the CUDA backend: from several host threads at once (each with its own stream
// and workspace), and on a GPU other than the first. Each result must equal, bit for bit, the same call made
// alone on device 0 (the CUDA path is deterministic: no floating-point atomics), and that call is checked
// against the CPU reference. Calls whose tensors, workspace or stream belong to another device than the
// current one must fail with an error naming both devices, before anything is written. Skips without a GPU;
// the second-device test skips with fewer than two.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/problem.h"
#include "core/tolerance.h"
#include "cuda/device_util.h"
#include "cuda/selection_check.h"
#include "sampleattn/api.h"
#include "sampleattn/cuda.h"
#include "support/host_tensor.h"

namespace sampleattn {
namespace {

using test::DeviceBuffer;
using test::DeviceTensor;
using test::HostTensor;
using test::Layout;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

using test::on;

struct Shape {
  DType dtype;
  std::int64_t batch, seq_q, seq_k, q_heads, kv_heads, head_dim;
  bool causal;
};

// Shapes that reach different kernel instances: both dtypes and head dims, GQA 1 / 4 / 8, chunked prefill,
// batch 2, non-causal.
const Shape kShapes[] = {{DType::bf16, 1, 700, 700, 8, 2, 128, true},
                         {DType::f16, 1, 300, 1025, 4, 4, 64, true},
                         {DType::bf16, 2, 257, 257, 8, 1, 64, false},
                         {DType::f16, 1, 1100, 1500, 8, 2, 128, true}};

// One problem's host inputs, and what one call gives on device 0 alone.
struct Case {
  Shape shape;
  AttnParams params;
  HostTensor q, k, v, out;  // out: poisoned (NaN)
  HostTensor want;           // out of the call alone
  std::vector<float> want_lse;
  Selection want_selection;

  Case(const Shape& s, std::mt19937_64& rng)
      : shape(s),
        q(s.dtype, s.batch, s.seq_q, s.q_heads, s.head_dim, Layout::bshd),
        k(s.dtype, s.batch, s.seq_k, s.kv_heads, s.head_dim, Layout::bshd),
        v(s.dtype, s.batch, s.seq_k, s.kv_heads, s.head_dim, Layout::bshd),
        out(s.dtype, s.batch, s.seq_q, s.q_heads, s.head_dim, Layout::bshd),
        want(out) {
    params.causal = s.causal;
    q.fill_random(rng, 2.0f);
    k.fill_random(rng);
    v.fill_random(rng);
  }
  std::size_t lse_size() const { return static_cast<std::size_t>(shape.batch * shape.q_heads * shape.seq_q); }
};

// The inputs on the current device, with outputs poisoned and a workspace and stream of its own.
struct OnDevice {
  int device;
  DeviceTensor q, k, v, out;
  DeviceBuffer lse;
  std::size_t bytes;
  DeviceBuffer workspace;
  cudaStream_t stream = nullptr;

  OnDevice(const Case& p, int dev)
      : device(dev),
        q(p.q),
        k(p.k),
        v(p.v),
        out(p.out),
        lse(std::vector<float>(p.lse_size(), kNaN)),
        bytes(cuda::sample_attention_workspace_size(view(q), view(k), p.params, {})),
        workspace(bytes) {
    if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) throw Error("cudaStreamCreate");
  }
  ~OnDevice() { cudaStreamDestroy(stream); }
  OnDevice(const OnDevice&) = delete;
  OnDevice& operator=(const OnDevice&) = delete;

  TensorView view(const DeviceTensor& t) const {
    TensorView x = t.view();
    x.device_index = device;
    return x;
  }
  float* lse_ptr() const { return static_cast<float*>(lse.get()); }
  void run_no_allocation(const Case& p) {
    cuda::sample_attention(view(q), view(k), view(v), view(out), lse_ptr(), p.params, {}, workspace.get(), bytes,
                           stream);
  }
  Selection run_allocating(const Case& p) {
    return sample_attention(view(q), view(k), view(v), view(out), lse_ptr(), p.params, {},
                            on(Backend::cuda, stream));
  }
  void poison(const Case& p) {
    if (cudaStreamSynchronize(stream) != cudaSuccess) throw Error("cudaStreamSynchronize");
    out.upload(p.out);
    lse.upload(std::vector<float>(p.lse_size(), kNaN).data());
  }
  // Bitwise against device 0's call alone.
  void expect_as_alone(const Case& p, const std::string& what) {
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess) << what;
    HostTensor got = p.out;
    out.download(got);
    std::vector<float> got_lse(p.lse_size());
    lse.download(got_lse.data());
    EXPECT_EQ(std::memcmp(got.data(), p.want.data(), got.bytes()), 0) << what << ": out differs from the call alone";
    EXPECT_EQ(std::memcmp(got_lse.data(), p.want_lse.data(), got_lse.size() * sizeof(float)), 0)
        << what << ": lse differs from the call alone";
  }
};

class Devices : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::has_gpu()) GTEST_SKIP() << "no CUDA device";
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    const std::uint64_t seed = test::test_seed();
    seed_trace_ = std::make_unique<::testing::ScopedTrace>(__FILE__, __LINE__, "seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    for (const Shape& s : kShapes) problems_.push_back(std::make_unique<Case>(s, rng));
    // Each problem alone on device 0, checked against the CPU reference.
    for (auto& p : problems_) {
      OnDevice d(*p, 0);
      d.run_no_allocation(*p);
      ASSERT_EQ(cudaStreamSynchronize(d.stream), cudaSuccess);
      p->want = p->out;
      d.out.download(p->want);
      p->want_lse.assign(p->lse_size(), 0.0f);
      d.lse.download(p->want_lse.data());
      p->want_selection =
          cuda::selection_from_workspace(d.view(d.q), d.view(d.k), p->params, {}, d.workspace.get(), d.bytes, d.stream);
      const ExecOptions ref = on(Backend::cpu_reference);
      const Selection want = select(p->q.view(), p->k.view(), p->params, {}, ref);
      test::expect_selection_matches(p->want_selection, want,
                                     core::make_problem(p->q.view(), p->k.view(), nullptr, p->params), p->q.view(),
                                     p->k.view(), {});
      HostTensor attended(DType::f32, p->shape.batch, p->shape.seq_q, p->shape.q_heads, p->shape.head_dim);
      attend(p->q.view(), p->k.view(), p->v.view(), p->want_selection, attended.view(), nullptr, p->params, ref);
      EXPECT_LE(test::max_abs_diff(p->want, attended), core::tolerance(p->shape.dtype).out * test::max_abs(p->v))
          << "device 0's call alone against the reference attention over its selection";
    }
  }
  void TearDown() override { cudaSetDevice(0); }

  std::vector<std::unique_ptr<Case>> problems_;
  std::unique_ptr<::testing::ScopedTrace> seed_trace_;
};

// Every problem in its own host thread, all at once, three rounds: the no-allocation call twice, then the
// allocating one (which downloads its selection), each against the call alone.
TEST_F(Devices, ConcurrentCallsFromThreads) {
  std::vector<std::unique_ptr<OnDevice>> on;
  for (auto& p : problems_) on.push_back(std::make_unique<OnDevice>(*p, 0));
  for (int round = 0; round < 3; ++round) {
    for (std::size_t i = 0; i < on.size(); ++i) on[i]->poison(*problems_[i]);
    std::vector<std::string> errors(on.size());
    std::vector<Selection> selections(on.size());
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < on.size(); ++i) {
      threads.emplace_back([&, i] {
        try {
          cudaSetDevice(0);  // each thread's current device starts at 0 anyway; made explicit
          if (round < 2) {
            on[i]->run_no_allocation(*problems_[i]);
          } else {
            selections[i] = on[i]->run_allocating(*problems_[i]);
          }
        } catch (const std::exception& e) {
          errors[i] = e.what();
        }
      });
    }
    for (auto& t : threads) t.join();
    for (std::size_t i = 0; i < on.size(); ++i) {
      const std::string what = "round " + std::to_string(round) + ", problem " + std::to_string(i);
      ASSERT_EQ(errors[i], "") << what;
      on[i]->expect_as_alone(*problems_[i], what);
      if (round == 2) {
        EXPECT_EQ(selections[i].indices, problems_[i]->want_selection.indices) << what;
        EXPECT_EQ(selections[i].offsets, problems_[i]->want_selection.offsets) << what;
      }
    }
  }
}

std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

void expect_error(const std::function<void()>& call, const std::string& part, const std::string& what) {
  const std::string e = error_of(call);
  EXPECT_NE(e.find(part), std::string::npos) << what << ": " << e;
}

TEST_F(Devices, SecondDevice) {
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  if (count < 2) GTEST_SKIP() << "needs two GPUs (" << count << " here)";
  cudaDeviceProp p0{}, p1{};
  ASSERT_EQ(cudaGetDeviceProperties(&p0, 0), cudaSuccess);
  ASSERT_EQ(cudaGetDeviceProperties(&p1, 1), cudaSuccess);
  // Bitwise equality needs the same kernels and the same split of the work: same model.
  const bool same_model = std::string(p0.name) == p1.name && p0.major == p1.major && p0.minor == p1.minor &&
                          p0.multiProcessorCount == p1.multiProcessorCount;
  if (!same_model) GTEST_SKIP() << "device 1 (" << p1.name << ") differs from device 0 (" << p0.name << ")";
  const Case& p = *problems_[0];
  auto on0 = std::make_unique<OnDevice>(p, 0);

  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  {
    OnDevice on1(p, 1);
    on1.run_no_allocation(p);
    on1.expect_as_alone(p, "device 1, no-allocation API");
    on1.poison(p);
    const Selection s = on1.run_allocating(p);
    on1.expect_as_alone(p, "device 1, allocating API");
    EXPECT_EQ(s.indices, p.want_selection.indices);
    on1.poison(p);
    attend(on1.view(on1.q), on1.view(on1.k), on1.view(on1.v), p.want_selection, on1.view(on1.out), on1.lse_ptr(),
           p.params, on(Backend::cuda, on1.stream));
    on1.expect_as_alone(p, "device 1, attend with device 0's selection");

    // Current device 1; something of device 0 in the call. Nothing may be written.
    on1.poison(p);
    // sample_attention on `t`'s tensors, with `out` (default: t's), a workspace and a stream.
    auto call = [&p](const OnDevice& t, const TensorView& out, void* ws, std::size_t bytes, cudaStream_t stream) {
      return [&p, &t, out, ws, bytes, stream] {
        cuda::sample_attention(t.view(t.q), t.view(t.k), t.view(t.v), out, nullptr, p.params, {}, ws, bytes, stream);
      };
    };
    const TensorView out1 = on1.view(on1.out);
    expect_error(call(*on0, on0->view(on0->out), on1.workspace.get(), on1.bytes, on1.stream),
                 "q is on cuda:0 but the current device is cuda:1", "tensors of device 0");
    TensorView out_of_0 = on0->view(on0->out);
    out_of_0.device_index = 1;  // labelled cuda:1, memory of cuda:0
    expect_error(call(on1, out_of_0, on1.workspace.get(), on1.bytes, on1.stream),
                 "is memory of cuda:0 but the call runs on cuda:1", "out of device 0");
    expect_error(call(on1, out1, on0->workspace.get(), on1.bytes, on1.stream),
                 "is memory of cuda:0 but the call runs on cuda:1", "workspace of device 0");
    expect_error(call(on1, out1, on1.workspace.get(), on1.bytes, on0->stream),
                 "belongs to cuda:0 but the call runs on cuda:1", "stream of device 0");
    expect_error(
        [&] {
          sample_attention(on1.view(on1.q), on1.view(on1.k), on1.view(on1.v), out1, nullptr, p.params, {},
                           on(Backend::cuda, on0->stream));
        },
        "belongs to cuda:0 but the call runs on cuda:1", "stream of device 0, allocating API");
    // Current device 0, tensors of device 1.
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    expect_error(call(on1, out1, on0->workspace.get(), on0->bytes, on0->stream),
                 "q is on cuda:1 but the current device is cuda:0", "tensors of device 1 from device 0");
    ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
    HostTensor after = p.out;
    on1.out.download(after);
    EXPECT_EQ(std::memcmp(after.data(), p.out.data(), after.bytes()), 0) << "a rejected call wrote out";
  }
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
}

}  // namespace
}  // namespace sampleattn
