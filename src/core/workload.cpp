// The synthetic workload generator (include/sampleattn/workload.h).
//
// Dimensions of one head vector (head_dim d, F = min(32, d / 4) position pairs):
//   [0, 2F)          position features: cos / sin(omega_f * position), f = 0..F-1
//   2F               sink channel: non-zero only on the sink keys
//   2F+1 .. 2F+3     heavy channels: each heavy key lights one of the three
//   2F+4 .. d        content noise, N(0, 1) in k
// With r = d^(1/4) on both sides, q . k / sqrt(d) turns products of the per-side amplitudes into logits.
// The key side carries the base logit L = ln(seq_k) + strength of each component; the query side of head h
// rescales it to L_h = L + ln(g) (g: the head's gain times a per-head jitter in [0.8, 1.2]), so a gain
// multiplies the component's attention mass; g = 0 removes it:
//   sink:  L_h                       for the keys [0, sink_tokens)
//   heavy: L_h + ln(w_c)             w_c in [0.5, 1.5] per (head, heavy channel)
//   local: L_h * K(p - j)            K(x) = mean_f cos(omega_f x)
//   noise: N(0, (g_noise * noise)^2)
// The omega_f are stratified draws from |N(0, 1 / local_scale^2)|, so K(x) is a random-Fourier estimate of
// exp(-x^2 / (2 local_scale^2)): 1 at x = 0, ~0.6 at local_scale, then small ripples of size ~1/sqrt(2F).
#include "sampleattn/workload.h"

#include <algorithm>
#include <cmath>

#include "core/half.h"
#include "sampleattn/error.h"

namespace sampleattn {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr std::int64_t kHeavyChannels = 3;

// SplitMix64: tiny, fast and identical on every platform (std:: distributions are not).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double normal() {  // Box-Muller; one value per call keeps the stream simple
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * kPi * u2);
  }

 private:
  std::uint64_t state_;
};

// Independent stream per (purpose, indices): results do not depend on generation order.
Rng stream(std::uint64_t seed, std::uint64_t purpose, std::uint64_t a = 0, std::uint64_t b = 0) {
  Rng mix(seed ^ (purpose * 0x632be59bd9b4e019ull));
  std::uint64_t s = mix.next() ^ (a * 0x8cb92ba72f3d8dd7ull);
  s = Rng(s).next() ^ (b * 0x9fb21c651e98df25ull);
  return Rng(Rng(s).next());
}

// Inverse of the standard normal CDF by bisection on erfc (only called F times per KV head).
double normal_quantile(double p) {
  double lo = -10.0, hi = 10.0;
  for (int i = 0; i < 100; ++i) {
    const double mid = 0.5 * (lo + hi);
    (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

void check_config(const WorkloadConfig& c) {
  SA_CHECK(c.batch >= 1, "workload.batch (", c.batch, ") must be >= 1");
  SA_CHECK(c.seq_k >= 1, "workload.seq_k (", c.seq_k, ") must be >= 1");
  SA_CHECK(c.seq_q >= 0 && c.seq_q <= c.seq_k, "workload.seq_q (", c.seq_q, ") must be in [0, seq_k = ", c.seq_k,
           "] (0 = seq_k)");
  SA_CHECK(c.q_heads >= 1 && c.kv_heads >= 1, "workload.q_heads (", c.q_heads, ") and kv_heads (", c.kv_heads,
           ") must be >= 1");
  SA_CHECK(c.q_heads % c.kv_heads == 0, "workload.q_heads (", c.q_heads, ") must be a multiple of kv_heads (",
           c.kv_heads, ")");
  SA_CHECK(c.head_dim >= 16 && c.head_dim <= 1024, "workload.head_dim (", c.head_dim, ") must be in [16, 1024]");
  SA_CHECK(c.dtype == DType::f32 || c.dtype == DType::f16 || c.dtype == DType::bf16,
           "workload.dtype is not one of float32, float16, bfloat16");
  SA_CHECK(c.sink_tokens >= 0 && c.sink_tokens <= c.seq_k, "workload.sink_tokens (", c.sink_tokens,
           ") must be in [0, seq_k = ", c.seq_k, "]");
  SA_CHECK(c.heavy_columns >= 0, "workload.heavy_columns (", c.heavy_columns, ") must be >= 0");
  SA_CHECK(std::isfinite(c.sink_strength) && std::isfinite(c.heavy_strength) && std::isfinite(c.local_strength),
           "workload strengths (sink ", c.sink_strength, ", heavy ", c.heavy_strength, ", local ", c.local_strength,
           ") must be finite");
  SA_CHECK(std::isfinite(c.local_scale) && c.local_scale > 0.0, "workload.local_scale (", c.local_scale,
           ") must be finite and > 0");
  SA_CHECK(std::isfinite(c.noise) && c.noise >= 0.0, "workload.noise (", c.noise, ") must be finite and >= 0");
  SA_CHECK(std::isfinite(c.v_scale) && c.v_scale >= 0.0, "workload.v_scale (", c.v_scale,
           ") must be finite and >= 0");
  for (const HeadProfile& p : c.profiles) {
    SA_CHECK(std::isfinite(p.sink) && std::isfinite(p.heavy) && std::isfinite(p.local) && std::isfinite(p.noise),
             "workload profile '", p.name, "' gains must be finite");
  }
  // Elements of the largest tensor, times bytes: must fit comfortably in memory-size arithmetic.
  const std::int64_t heads = std::max(c.q_heads, c.kv_heads);
  std::int64_t n = 0;
  if (__builtin_mul_overflow(c.batch, c.seq_k, &n) || __builtin_mul_overflow(n, heads, &n) ||
      __builtin_mul_overflow(n, c.head_dim, &n) || __builtin_mul_overflow(n, std::int64_t{4}, &n)) {
    detail::fail("workload size (batch ", c.batch, " x seq_k ", c.seq_k, " x heads ", heads, " x head_dim ",
                 c.head_dim, ") overflows int64");
  }
}

// Key-side amplitude of a component with base logit `base`, and the query-side amplitude that turns it into
// the logit `target`: (r * sqrt|base|) * (r * target / sqrt|base|) / sqrt(d) = target.
double key_amp(double r, double base) { return r * std::sqrt(std::max(std::abs(base), 1e-3)); }
double query_amp(double r, double base, double target) { return r * target / std::sqrt(std::max(std::abs(base), 1e-3)); }
// Logit of a component for a head with mass gain g: base + ln(g), or nothing for g = 0.
double head_logit(double base, double gain) { return gain > 0.0 ? base + std::log(gain) : 0.0; }

}  // namespace

std::vector<HeadProfile> default_profiles() {
  return {{"stripes", 1.0, 1.0, 0.0, 1.0},
          {"local", 1.0, 0.0, 1.0, 1.0},
          {"mixed", 0.5, 1.0, 0.3, 1.0},
          {"dense", 0.0, 0.0, 0.0, 0.2}};
}

Workload::Workload(const WorkloadConfig& config) : config_(config) {
  check_config(config_);
  if (config_.profiles.empty()) config_.profiles = default_profiles();
  const WorkloadConfig& c = config_;
  seq_q_ = c.seq_q == 0 ? c.seq_k : c.seq_q;
  const std::int64_t d = c.head_dim;
  const std::int64_t pairs = std::min<std::int64_t>(32, d / 4);
  const std::int64_t sink_dim = 2 * pairs, heavy_dim = sink_dim + 1, noise_dim = heavy_dim + kHeavyChannels;
  const std::int64_t noise_dims = d - noise_dim;
  const double r = std::pow(static_cast<double>(d), 0.25);
  const double log_sk = std::log(static_cast<double>(c.seq_k));
  const double ls = log_sk + c.sink_strength, lh = log_sk + c.heavy_strength, ll = log_sk + c.local_strength;
  const std::size_t esize = dtype_size(c.dtype);

  q_.resize(static_cast<std::size_t>(c.batch * seq_q_ * c.q_heads * d) * esize);
  k_.resize(static_cast<std::size_t>(c.batch * c.seq_k * c.kv_heads * d) * esize);
  v_.resize(k_.size());
  const TensorView qv = q(), kv = k(), vv = v();
  heavy_.assign(static_cast<std::size_t>(c.batch * c.kv_heads), {});

  std::vector<double> omega(static_cast<std::size_t>(pairs));
  std::vector<int> channel_of(static_cast<std::size_t>(c.seq_k));  // heavy channel of each key, -1 = none
  for (std::int64_t b = 0; b < c.batch; ++b) {
    for (std::int64_t kvh = 0; kvh < c.kv_heads; ++kvh) {
      // Frequencies of this KV head: stratified quantiles of |N(0, 1 / local_scale^2)|.
      Rng frng = stream(c.seed, 1, b, kvh);
      for (std::int64_t f = 0; f < pairs; ++f) {
        const double u = (static_cast<double>(f) + frng.uniform()) / static_cast<double>(pairs);
        omega[f] = normal_quantile(0.5 + 0.5 * u) / c.local_scale;
      }
      // Heavy positions: distinct, outside the sinks, each on a random heavy channel.
      std::fill(channel_of.begin(), channel_of.end(), -1);
      Rng hrng = stream(c.seed, 2, b, kvh);
      const std::int64_t free = c.seq_k - c.sink_tokens;
      const std::int64_t count = std::min(c.heavy_columns, free);
      std::vector<std::int64_t>& heavy = heavy_[b * c.kv_heads + kvh];
      if (count * 2 > free) {  // dense pick: partial Fisher-Yates over all candidates
        std::vector<std::int64_t> all(static_cast<std::size_t>(free));
        for (std::int64_t i = 0; i < free; ++i) all[i] = c.sink_tokens + i;
        for (std::int64_t i = 0; i < count; ++i) {
          std::swap(all[i], all[i + static_cast<std::int64_t>(hrng.next() % static_cast<std::uint64_t>(free - i))]);
          heavy.push_back(all[i]);
        }
      } else {
        while (static_cast<std::int64_t>(heavy.size()) < count) {
          const std::int64_t j = c.sink_tokens + static_cast<std::int64_t>(hrng.next() % static_cast<std::uint64_t>(free));
          if (channel_of[j] >= 0) continue;
          channel_of[j] = 0;
          heavy.push_back(j);
        }
      }
      std::sort(heavy.begin(), heavy.end());
      for (std::int64_t j : heavy) channel_of[j] = static_cast<int>(hrng.next() % kHeavyChannels);

      // Keys and values.
      const double inv_sqrt_pairs = 1.0 / std::sqrt(static_cast<double>(pairs));
      const double pos_amp = key_amp(r, ll) * inv_sqrt_pairs;
      for (std::int64_t j = 0; j < c.seq_k; ++j) {
        Rng nrng = stream(c.seed, 3, (static_cast<std::uint64_t>(b) << 32) ^ static_cast<std::uint64_t>(kvh), j);
        auto put = [&](std::int64_t x, double value) {
          core::store_element(kv.data, c.dtype, kv.offset(b, j, kvh, x), static_cast<float>(value));
        };
        for (std::int64_t f = 0; f < pairs; ++f) {
          put(2 * f, pos_amp * std::cos(omega[f] * static_cast<double>(j)));
          put(2 * f + 1, pos_amp * std::sin(omega[f] * static_cast<double>(j)));
        }
        put(sink_dim, j < c.sink_tokens ? key_amp(r, ls) : 0.0);
        for (std::int64_t ch = 0; ch < kHeavyChannels; ++ch) put(heavy_dim + ch, channel_of[j] == ch ? key_amp(r, lh) : 0.0);
        for (std::int64_t x = noise_dim; x < d; ++x) put(x, nrng.normal());
        for (std::int64_t x = 0; x < d; ++x) {
          core::store_element(vv.data, c.dtype, vv.offset(b, j, kvh, x), static_cast<float>(c.v_scale * nrng.normal()));
        }
      }

      // Queries of the heads that read this KV head.
      const std::int64_t group = c.q_heads / c.kv_heads;
      for (std::int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
        const HeadProfile& prof = profile(h);
        Rng grng = stream(c.seed, 4, b, h);
        auto jitter = [&] { return 0.8 + 0.4 * grng.uniform(); };  // per-head variety within a profile
        const double sink_q = query_amp(r, ls, head_logit(ls, prof.sink * jitter()));
        const double heavy_gain = prof.heavy * jitter();
        double heavy_q[kHeavyChannels];
        for (double& x : heavy_q) x = query_amp(r, lh, head_logit(lh, heavy_gain * (0.5 + grng.uniform())));
        const double local_q = query_amp(r, ll, head_logit(ll, prof.local * jitter())) * inv_sqrt_pairs;
        const double g_noise = prof.noise * jitter();
        const double noise_amp = noise_dims > 0 ? c.noise * g_noise * std::sqrt(static_cast<double>(d) / noise_dims) : 0.0;
        for (std::int64_t row = 0; row < seq_q_; ++row) {
          const double p = static_cast<double>(c.seq_k - seq_q_ + row);
          Rng nrng = stream(c.seed, 5, (static_cast<std::uint64_t>(b) << 32) ^ static_cast<std::uint64_t>(h), row);
          auto put = [&](std::int64_t x, double value) {
            core::store_element(qv.data, c.dtype, qv.offset(b, row, h, x), static_cast<float>(value));
          };
          for (std::int64_t f = 0; f < pairs; ++f) {
            put(2 * f, local_q * std::cos(omega[f] * p));
            put(2 * f + 1, local_q * std::sin(omega[f] * p));
          }
          put(sink_dim, sink_q);
          for (std::int64_t ch = 0; ch < kHeavyChannels; ++ch) put(heavy_dim + ch, heavy_q[ch]);
          for (std::int64_t x = noise_dim; x < d; ++x) put(x, noise_amp * nrng.normal());
        }
      }
    }
  }
}

TensorView Workload::q() const {
  return TensorView::contiguous(const_cast<std::uint8_t*>(q_.data()), config_.dtype, config_.batch, seq_q_,
                                config_.q_heads, config_.head_dim);
}

TensorView Workload::k() const {
  return TensorView::contiguous(const_cast<std::uint8_t*>(k_.data()), config_.dtype, config_.batch, config_.seq_k,
                                config_.kv_heads, config_.head_dim);
}

TensorView Workload::v() const {
  return TensorView::contiguous(const_cast<std::uint8_t*>(v_.data()), config_.dtype, config_.batch, config_.seq_k,
                                config_.kv_heads, config_.head_dim);
}

const HeadProfile& Workload::profile(std::int64_t head) const {
  SA_CHECK(head >= 0 && head < config_.q_heads, "workload head (", head, ") must be in [0, ", config_.q_heads, ")");
  return config_.profiles[static_cast<std::size_t>(head) % config_.profiles.size()];
}

const std::vector<std::int64_t>& Workload::heavy_positions(std::int64_t b, std::int64_t kv_head) const {
  SA_CHECK(b >= 0 && b < config_.batch && kv_head >= 0 && kv_head < config_.kv_heads, "workload (batch ", b,
           ", kv_head ", kv_head, ") out of range (", config_.batch, ", ", config_.kv_heads, ")");
  return heavy_[b * config_.kv_heads + kv_head];
}

}  // namespace sampleattn
