// A structured generator of SYNTHETIC attention inputs (q, k, v) for demos, tests and benchmarks.
//
// The tensors are not taken from any model. They imitate the patterns the SampleAttention paper reports in
// real LLM heads, so that selection has something to find:
//   - sink tokens: the first `sink_tokens` keys draw a large share of every row's attention;
//   - heavy key columns: `heavy_columns` keys per (batch, KV head), at random positions, that every query of
//     a head reading them attends to strongly (the "column stripes");
//   - local decay: attention peaks at the query's own position and decays with distance (length scale
//     `local_scale` tokens), through position features of several frequencies in a few dimensions of q and
//     k (random Fourier features: q_r . k_j ~ cos-sum of (p(r) - j), which peaks at j = p(r));
//   - noise: Gaussian content features in the remaining dimensions.
// Each query head mixes these with its own gains (HeadProfile), so heads differ: with the default profiles,
// cycled over the query heads, one head in four is "stripes" (sinks + heavy columns: > 95% sparse at alpha
// 0.95 with a small window), one "local" (sinks + local decay), one "mixed" and one "dense" (near-uniform
// attention: nearly every column is needed to reach alpha).
//
// Strengths are logit boosts ABOVE ln(seq_k): a column of strength s carries e^s times the combined mass of
// seq_k ordinary keys (logit 0), so the patterns keep their weight as the sequence grows. The logits assume
// the default softmax scale 1 / sqrt(head_dim). Everything is a deterministic function of the config (the
// seed included) on every platform: the generator uses its own random number generator.
//
// Layout: q [batch, seq_q, q_heads, head_dim], k and v [batch, seq_k, kv_heads, head_dim], contiguous host
// buffers owned by the Workload; query row r sits at key position seq_k - seq_q + r.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sampleattn/tensor.h"

namespace sampleattn {

// Per query head gains. sink / heavy / local multiply the attention mass of that component (a logit shift
// of ln(gain); 0 removes it, 1 = the config's strength); noise multiplies the noise standard deviation.
// Each head also gets a seeded jitter of +-20% on every gain.
struct HeadProfile {
  std::string name;
  double sink = 0.0;
  double heavy = 0.0;
  double local = 0.0;
  double noise = 1.0;
};

struct WorkloadConfig {
  std::int64_t batch = 1;
  std::int64_t seq_k = 4096;
  std::int64_t seq_q = 0;  // 0 = seq_k (a plain prefill); else the last seq_q positions (chunked prefill)
  std::int64_t q_heads = 8;
  std::int64_t kv_heads = 2;
  std::int64_t head_dim = 128;  // >= 16
  DType dtype = DType::f32;
  std::uint64_t seed = 0;

  std::int64_t sink_tokens = 4;    // keys [0, sink_tokens) are sinks
  double sink_strength = 2.0;      // logit of a sink above ln(seq_k)
  std::int64_t heavy_columns = 32; // heavy keys per (batch, KV head), outside the sinks
  double heavy_strength = -1.0;    // logit of a heavy key above ln(seq_k) (32 of them: 12x the ordinary mass)
  double local_strength = 2.0;     // logit at distance 0 above ln(seq_k)
  double local_scale = 8.0;        // tokens: the logit falls to ~60% of its peak at this distance
  double noise = 0.5;              // standard deviation of the content logits
  double v_scale = 1.0;            // standard deviation of v

  // Gains of query head h are profiles[h % profiles.size()]; empty = default_profiles().
  std::vector<HeadProfile> profiles;
};

// stripes (sink 1, heavy 1, local 0, noise 1), local (sink 1, heavy 0, local 1, noise 1),
// mixed (0.5, 1, 0.3, 1), dense (0, 0, 0, 0.2).
std::vector<HeadProfile> default_profiles();

class Workload {
 public:
  // Throws sampleattn::Error on out-of-range parameters (naming the field and value).
  explicit Workload(const WorkloadConfig& config);

  const WorkloadConfig& config() const { return config_; }
  std::int64_t seq_q() const { return seq_q_; }

  TensorView q() const;  // [batch, seq_q, q_heads, head_dim]
  TensorView k() const;  // [batch, seq_k, kv_heads, head_dim]
  TensorView v() const;  // [batch, seq_k, kv_heads, head_dim]

  // Profile of query head h (the jitter-free gains).
  const HeadProfile& profile(std::int64_t head) const;
  // Heavy key positions of (batch b, KV head kvh), sorted ascending.
  const std::vector<std::int64_t>& heavy_positions(std::int64_t b, std::int64_t kv_head) const;

 private:
  WorkloadConfig config_;
  std::int64_t seq_q_ = 0;
  std::vector<std::uint8_t> q_, k_, v_;
  std::vector<std::vector<std::int64_t>> heavy_;  // [batch * kv_heads]
};

}  // namespace sampleattn
