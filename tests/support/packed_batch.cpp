#include "support/packed_batch.h"

namespace sampleattn::test {
namespace {

void copy_rows(const HostTensor& from, std::int64_t from_row, HostTensor& to, std::int64_t to_row,
               std::int64_t count) {
  for (std::int64_t s = 0; s < count; ++s)
    for (std::int64_t h = 0; h < from.shape()[2]; ++h)
      for (std::int64_t d = 0; d < from.shape()[3]; ++d) to.set(0, to_row + s, h, d, from.at(0, from_row + s, h, d));
}

}  // namespace

PackedBatch make_packed_batch(DType dtype, std::int64_t q_heads, std::int64_t kv_heads, std::int64_t head_dim,
                              const std::vector<std::pair<std::int64_t, std::int64_t>>& lens, std::mt19937_64& rng,
                              float q_scale) {
  std::int64_t total_q = 0, total_k = 0;
  for (const auto& [sq, sk] : lens) {
    total_q += sq;
    total_k += sk;
  }
  PackedBatch p{{0}, {0}, {}, {}, {}, HostTensor(dtype, 1, total_q, q_heads, head_dim),
                HostTensor(dtype, 1, total_k, kv_heads, head_dim), HostTensor(dtype, 1, total_k, kv_heads, head_dim)};
  for (const auto& [sq, sk] : lens) {
    p.q.emplace_back(dtype, 1, sq, q_heads, head_dim);
    p.k.emplace_back(dtype, 1, sk, kv_heads, head_dim);
    p.v.emplace_back(dtype, 1, sk, kv_heads, head_dim);
    p.q.back().fill_random(rng, q_scale);
    p.k.back().fill_random(rng);
    p.v.back().fill_random(rng);
    copy_rows(p.q.back(), 0, p.pq, p.cu_q.back(), sq);
    copy_rows(p.k.back(), 0, p.pk, p.cu_k.back(), sk);
    copy_rows(p.v.back(), 0, p.pv, p.cu_k.back(), sk);
    p.cu_q.push_back(p.cu_q.back() + sq);
    p.cu_k.push_back(p.cu_k.back() + sk);
  }
  return p;
}

HostTensor row_slice(const HostTensor& t, std::int64_t begin, std::int64_t count) {
  HostTensor r(t.dtype(), 1, count, t.shape()[2], t.shape()[3]);
  copy_rows(t, begin, r, 0, count);
  return r;
}

}  // namespace sampleattn::test
