// Test support: owning host tensors in several memory layouts, random fill, poisoning, comparisons, and
// synthetic selections (window + random columns). Used by every backend test and by the device tests.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "sampleattn/selection.h"
#include "sampleattn/tensor.h"

namespace sampleattn::test {

// bshd: contiguous [batch, seq, heads, head_dim]; bhsd: the [batch, heads, seq, head_dim] buffer order;
// padded: bshd rows inside a wider buffer (as a slice of a fused QKV projection: seq stride > heads * dim).
enum class Layout { bshd, bhsd, padded };

class HostTensor {
 public:
  HostTensor(DType dtype, std::int64_t batch, std::int64_t seq, std::int64_t heads, std::int64_t head_dim,
             Layout layout = Layout::bshd);

  TensorView view() const;
  DType dtype() const { return dtype_; }
  const std::array<std::int64_t, 4>& shape() const { return shape_; }
  std::int64_t elements() const { return shape_[0] * shape_[1] * shape_[2] * shape_[3]; }
  std::size_t bytes() const { return storage_.size(); }
  void* data() { return storage_.data(); }
  const void* data() const { return storage_.data(); }

  float at(std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d) const;
  void set(std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d, float value);
  // Normal(0, stddev) entries, rounded to the dtype.
  void fill_random(std::mt19937_64& rng, float stddev = 1.0f);
  // NaN in every byte of the buffer, padding included.
  void poison();
  // Same values, another dtype or layout.
  HostTensor converted(DType dtype, Layout layout) const;

 private:
  DType dtype_;
  std::array<std::int64_t, 4> shape_;
  std::array<std::int64_t, 4> stride_;
  std::vector<std::uint8_t> storage_;
};

// Whether every element of the buffer that the view does not address (padding of a strided layout) still
// holds the NaN poison(): a backend must write its outputs and nothing beside them.
bool padding_untouched(const HostTensor& t);

// max over elements of |a - b|; +inf if either holds a NaN or Inf (NaN never passes).
double max_abs_diff(const HostTensor& a, const HostTensor& b);
double max_abs(const HostTensor& t);
double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b);

// A selection with window `window` and `columns` distinct random columns per head (fewer if seq_k is
// smaller), stats recomputed; sampled_coverage set to 1.
Selection random_selection(std::mt19937_64& rng, std::int64_t batch, std::int64_t heads, std::int64_t seq_q,
                           std::int64_t seq_k, bool causal, std::int64_t window, std::int64_t columns,
                           std::int64_t dense_tail = 0);

// A fresh seed for each test run (printed by the test on failure via SCOPED_TRACE), or SAMPLEATTN_TEST_SEED.
std::uint64_t test_seed();

}  // namespace sampleattn::test
