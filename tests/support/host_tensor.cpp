// Test support implementation (host_tensor.h).
#include "support/host_tensor.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <numeric>

#include "core/half.h"

namespace sampleattn::test {

HostTensor::HostTensor(DType dtype, std::int64_t batch, std::int64_t seq, std::int64_t heads,
                       std::int64_t head_dim, Layout layout)
    : dtype_(dtype), shape_{batch, seq, heads, head_dim} {
  std::int64_t total = 0;
  switch (layout) {
    case Layout::bshd:
      stride_ = {seq * heads * head_dim, heads * head_dim, head_dim, 1};
      total = batch * seq * heads * head_dim;
      break;
    case Layout::bhsd:
      stride_ = {heads * seq * head_dim, head_dim, seq * head_dim, 1};
      total = batch * heads * seq * head_dim;
      break;
    case Layout::padded: {
      const std::int64_t row = heads * head_dim + 3 * head_dim + 8;  // seq stride wider than one row
      stride_ = {seq * row, row, head_dim + 2, 1};
      total = batch * seq * row;
      break;
    }
  }
  storage_.assign(static_cast<std::size_t>(total) * dtype_size(dtype), 0);
  poison();
}

TensorView HostTensor::view() const {
  TensorView t;
  t.data = const_cast<std::uint8_t*>(storage_.data());
  t.dtype = dtype_;
  t.shape = shape_;
  t.stride = stride_;
  return t;
}

float HostTensor::at(std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d) const {
  return core::load_element(storage_.data(), dtype_, view().offset(b, s, h, d));
}

void HostTensor::set(std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d, float value) {
  core::store_element(storage_.data(), dtype_, view().offset(b, s, h, d), value);
}

void HostTensor::fill_random(std::mt19937_64& rng, float stddev) {
  std::normal_distribution<float> dist(0.0f, stddev);
  for (std::int64_t b = 0; b < shape_[0]; ++b)
    for (std::int64_t s = 0; s < shape_[1]; ++s)
      for (std::int64_t h = 0; h < shape_[2]; ++h)
        for (std::int64_t d = 0; d < shape_[3]; ++d) set(b, s, h, d, dist(rng));
}

void HostTensor::poison() {
  const std::size_t n = storage_.size() / dtype_size(dtype_);
  for (std::size_t i = 0; i < n; ++i)
    core::store_element(storage_.data(), dtype_, static_cast<std::int64_t>(i), std::numeric_limits<float>::quiet_NaN());
}

HostTensor HostTensor::converted(DType dtype, Layout layout) const {
  HostTensor t(dtype, shape_[0], shape_[1], shape_[2], shape_[3], layout);
  for (std::int64_t b = 0; b < shape_[0]; ++b)
    for (std::int64_t s = 0; s < shape_[1]; ++s)
      for (std::int64_t h = 0; h < shape_[2]; ++h)
        for (std::int64_t d = 0; d < shape_[3]; ++d) t.set(b, s, h, d, at(b, s, h, d));
  return t;
}

bool padding_untouched(const HostTensor& t) {
  const std::size_t n = t.bytes() / dtype_size(t.dtype());
  std::vector<char> addressed(n, 0);
  const TensorView v = t.view();
  const auto& sh = t.shape();
  for (std::int64_t i0 = 0; i0 < sh[0]; ++i0)
    for (std::int64_t i1 = 0; i1 < sh[1]; ++i1)
      for (std::int64_t i2 = 0; i2 < sh[2]; ++i2)
        for (std::int64_t i3 = 0; i3 < sh[3]; ++i3) addressed[static_cast<std::size_t>(v.offset(i0, i1, i2, i3))] = 1;
  for (std::size_t i = 0; i < n; ++i)
    if (!addressed[i] && !std::isnan(core::load_element(t.data(), t.dtype(), static_cast<std::int64_t>(i)))) return false;
  return true;
}

double max_abs_diff(const HostTensor& a, const HostTensor& b) {
  if (a.shape() != b.shape()) return std::numeric_limits<double>::infinity();
  double m = 0.0;
  const auto& sh = a.shape();
  for (std::int64_t i0 = 0; i0 < sh[0]; ++i0)
    for (std::int64_t i1 = 0; i1 < sh[1]; ++i1)
      for (std::int64_t i2 = 0; i2 < sh[2]; ++i2)
        for (std::int64_t i3 = 0; i3 < sh[3]; ++i3) {
          const double x = a.at(i0, i1, i2, i3), y = b.at(i0, i1, i2, i3);
          if (!std::isfinite(x) || !std::isfinite(y)) return std::numeric_limits<double>::infinity();
          m = std::max(m, std::abs(x - y));
        }
  return m;
}

double max_abs(const HostTensor& t) {
  double m = 0.0;
  const auto& sh = t.shape();
  for (std::int64_t i0 = 0; i0 < sh[0]; ++i0)
    for (std::int64_t i1 = 0; i1 < sh[1]; ++i1)
      for (std::int64_t i2 = 0; i2 < sh[2]; ++i2)
        for (std::int64_t i3 = 0; i3 < sh[3]; ++i3) m = std::max(m, std::abs(double(t.at(i0, i1, i2, i3))));
  return m;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double m = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return std::numeric_limits<double>::infinity();
    m = std::max(m, std::abs(double(a[i]) - double(b[i])));
  }
  return m;
}

Selection random_selection(std::mt19937_64& rng, std::int64_t batch, std::int64_t heads, std::int64_t seq_q,
                           std::int64_t seq_k, bool causal, std::int64_t window, std::int64_t columns,
                           std::int64_t dense_tail) {
  Selection s;
  s.batch = batch;
  s.heads = heads;
  s.seq_q = seq_q;
  s.seq_k = seq_k;
  s.causal = causal;
  s.dense_tail = dense_tail;
  s.offsets.push_back(0);
  std::vector<std::int32_t> all(static_cast<std::size_t>(seq_k));
  std::iota(all.begin(), all.end(), 0);
  for (std::int64_t bh = 0; bh < batch * heads; ++bh) {
    std::shuffle(all.begin(), all.end(), rng);
    const std::int64_t n = std::min(columns, seq_k);
    std::vector<std::int32_t> cols(all.begin(), all.begin() + n);
    std::sort(cols.begin(), cols.end());
    s.window.push_back(std::clamp<std::int64_t>(window, 1, seq_k));
    s.indices.insert(s.indices.end(), cols.begin(), cols.end());
    s.offsets.push_back(static_cast<std::int64_t>(s.indices.size()));
  }
  s.recompute_counts();
  for (HeadStats& h : s.stats) h.sampled_coverage = 1.0;
  return s;
}

std::uint64_t test_seed() {
  if (const char* env = std::getenv("SAMPLEATTN_TEST_SEED")) return std::strtoull(env, nullptr, 10);
  return std::random_device{}();
}

}  // namespace sampleattn::test
