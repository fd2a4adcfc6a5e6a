// C entry points over the sampleattn CUDA API (include/sampleattn/cuda.h, api.h) and the structured workload
// generator, so that bench/cuda_e2e_bench.py can drive them on PyTorch tensors through ctypes and time them
// beside PyTorch SDPA and FlexAttention on the same inputs. Not part of the library; built by
// `scripts/device_test.sh build`. Every function returns 0, or 1 with the message in err.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "sampleattn/api.h"
#include "sampleattn/cuda.h"
#include "sampleattn/error.h"
#include "sampleattn/workload.h"

namespace {

using sampleattn::DType;
using sampleattn::TensorView;

// sizes: batch, seq_q, seq_k, q_heads, kv_heads, head_dim; strides: 16 int64 (q, k, v, out).
struct Views {
  TensorView q, k, v, out;
};

TensorView make_view(const void* data, DType dtype, std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d,
                     const std::int64_t* stride) {
  TensorView t;
  t.data = const_cast<void*>(data);
  t.dtype = dtype;
  t.device = sampleattn::Device::cuda;
  t.shape = {b, s, h, d};
  for (int i = 0; i < 4; ++i) t.stride[i] = stride[i];
  return t;
}

Views make_views(const void* q, const void* k, const void* v, void* out, const std::int64_t* sizes,
                 const std::int64_t* strides, int dtype) {
  const DType dt = dtype == 0 ? DType::bf16 : DType::f16;
  Views x;
  x.q = make_view(q, dt, sizes[0], sizes[1], sizes[3], sizes[5], strides);
  x.k = make_view(k, dt, sizes[0], sizes[2], sizes[4], sizes[5], strides + 4);
  x.v = make_view(v != nullptr ? v : k, dt, sizes[0], sizes[2], sizes[4], sizes[5], strides + 8);
  x.out = make_view(out != nullptr ? out : q, dt, sizes[0], sizes[1], sizes[3], sizes[5], strides + 12);
  return x;
}

// config: alpha, sample_ratio, window_ratio, min_window, sink_tokens, dense_tail, dense_head_density; causal flag
// separate.
sampleattn::SampleConfig make_config(const double* c) {
  sampleattn::SampleConfig s;
  s.alpha = c[0];
  s.sample_ratio = c[1];
  s.window_ratio = c[2];
  s.min_window = static_cast<std::int64_t>(c[3]);
  s.sink_tokens = static_cast<std::int64_t>(c[4]);
  s.dense_tail = static_cast<std::int64_t>(c[5]);
  s.dense_head_density = c[6];
  return s;
}

sampleattn::AttnParams make_params(int causal) {
  sampleattn::AttnParams p;
  p.causal = causal != 0;
  return p;
}

template <typename F>
int guarded(char* err, int err_len, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    std::snprintf(err, static_cast<std::size_t>(err_len), "%s", e.what());
    return 1;
  }
  return 0;
}

}  // namespace

extern "C" {

int sa_workspace_size(const void* q, const void* k, const std::int64_t* sizes, const std::int64_t* strides, int dtype,
                      int causal, const double* config, std::uint64_t* bytes, char* err, int err_len) {
  return guarded(err, err_len, [&] {
    const Views x = make_views(q, k, nullptr, nullptr, sizes, strides, dtype);
    *bytes = sampleattn::cuda::sample_attention_workspace_size(x.q, x.k, make_params(causal), make_config(config));
  });
}

int sa_sample_attention(const void* q, const void* k, const void* v, void* out, float* lse, const std::int64_t* sizes,
                        const std::int64_t* strides, int dtype, int causal, const double* config, void* ws,
                        std::uint64_t ws_bytes, void* stream, char* err, int err_len) {
  return guarded(err, err_len, [&] {
    const Views x = make_views(q, k, v, out, sizes, strides, dtype);
    sampleattn::cuda::sample_attention(x.q, x.k, x.v, x.out, lse, make_params(causal), make_config(config), ws,
                                       ws_bytes, stream);
  });
}

int sa_select(const void* q, const void* k, const std::int64_t* sizes, const std::int64_t* strides, int dtype,
              int causal, const double* config, void* ws, std::uint64_t ws_bytes, void* stream, char* err,
              int err_len) {
  return guarded(err, err_len, [&] {
    const Views x = make_views(q, k, nullptr, nullptr, sizes, strides, dtype);
    sampleattn::cuda::select_to_workspace(x.q, x.k, make_params(causal), make_config(config), ws, ws_bytes, stream);
  });
}

int sa_dense(const void* q, const void* k, const void* v, void* out, float* lse, const std::int64_t* sizes,
             const std::int64_t* strides, int dtype, int causal, void* stream, char* err, int err_len) {
  return guarded(err, err_len, [&] {
    const Views x = make_views(q, k, v, out, sizes, strides, dtype);
    sampleattn::ExecOptions o;
    o.backend = sampleattn::Backend::cuda;
    o.cuda_stream = stream;
    sampleattn::dense_attention(x.q, x.k, x.v, x.out, lse, make_params(causal), o);
  });
}

// The selection left in the workspace: counts [B*Hq] (int64), indices [B*Hq*Sk] (int32, head bh's columns
// first at bh * Sk), window [B*Hq], kept_entries [B*Hq], visible [B*Hq], coverage [B*Hq] (double).
int sa_selection(const void* q, const void* k, const std::int64_t* sizes, const std::int64_t* strides, int dtype,
                 int causal, const double* config, const void* ws, std::uint64_t ws_bytes, void* stream,
                 std::int64_t* counts, std::int32_t* indices, std::int64_t* window, std::int64_t* kept_entries,
                 std::int64_t* visible, double* coverage, char* err, int err_len) {
  return guarded(err, err_len, [&] {
    const Views x = make_views(q, k, nullptr, nullptr, sizes, strides, dtype);
    const sampleattn::Selection s = sampleattn::cuda::selection_from_workspace(
        x.q, x.k, make_params(causal), make_config(config), ws, ws_bytes, stream);
    for (std::int64_t bh = 0; bh < s.num_heads_total(); ++bh) {
      const auto cols = s.columns(bh);
      counts[bh] = static_cast<std::int64_t>(cols.size());
      std::memcpy(indices + bh * s.seq_k, cols.data(), cols.size() * sizeof(std::int32_t));
      window[bh] = s.window[bh];
      kept_entries[bh] = s.stats[bh].kept_entries;
      visible[bh] = s.stats[bh].visible_entries;
      coverage[bh] = s.stats[bh].sampled_coverage;
    }
  });
}

// Structured workload (include/sampleattn/workload.h), batch 1, bf16, contiguous host buffers
// q [S, Hq, d], k / v [S, Hkv, d]. Each KV head (with its Hq / Hkv query heads, same profiles) is generated
// as its own workload (seed + kvh) on its own thread, then scattered into place. profile_mix 0: the default
// profiles (stripes, local, mixed, dense); 1: "no-dense", the dense (near-uniform) profile replaced by a
// second stripes head, for the sparser head mix long-context models show.
int sa_workload(std::int64_t seq, std::int64_t q_heads, std::int64_t kv_heads, std::int64_t head_dim,
                std::uint64_t seed, int profile_mix, std::uint16_t* q, std::uint16_t* k, std::uint16_t* v, char* err,
                int err_len) {
  return guarded(err, err_len, [&] {
    const std::int64_t group = q_heads / kv_heads;
    std::vector<std::thread> threads;
    std::vector<std::string> errors(static_cast<std::size_t>(kv_heads));
    for (std::int64_t kvh = 0; kvh < kv_heads; ++kvh) {
      threads.emplace_back([&, kvh] {
        try {
          sampleattn::WorkloadConfig c;
          c.seq_k = seq;
          c.q_heads = group;
          c.kv_heads = 1;
          c.head_dim = head_dim;
          c.dtype = DType::bf16;
          c.seed = seed + static_cast<std::uint64_t>(kvh);
          if (profile_mix == 1) {
            c.profiles = sampleattn::default_profiles();
            for (auto& prof : c.profiles)
              if (prof.name == "dense") prof = c.profiles.front();
          }
          const sampleattn::Workload w(c);
          const auto* wq = static_cast<const std::uint16_t*>(w.q().data);
          const auto* wk = static_cast<const std::uint16_t*>(w.k().data);
          const auto* wv = static_cast<const std::uint16_t*>(w.v().data);
          for (std::int64_t s = 0; s < seq; ++s) {
            std::memcpy(q + (s * q_heads + kvh * group) * head_dim, wq + s * group * head_dim,
                        static_cast<std::size_t>(group * head_dim) * 2);
            std::memcpy(k + (s * kv_heads + kvh) * head_dim, wk + s * head_dim, static_cast<std::size_t>(head_dim) * 2);
            std::memcpy(v + (s * kv_heads + kvh) * head_dim, wv + s * head_dim, static_cast<std::size_t>(head_dim) * 2);
          }
        } catch (const std::exception& e) {
          errors[kvh] = e.what();
        }
      });
    }
    for (auto& t : threads) t.join();
    for (const std::string& e : errors)
      if (!e.empty()) throw sampleattn::Error(e);
  });
}

}  // extern "C"
