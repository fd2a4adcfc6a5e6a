#include "core/varlen.h"

#include "sampleattn/error.h"

namespace sampleattn::core {
namespace {

void check_offsets(const std::vector<std::int64_t>& cu, const char* name, std::int64_t total, const char* tensor) {
  SA_CHECK(!cu.empty(), name, " must hold n + 1 offsets for n sequences, but it is empty");
  SA_CHECK(cu.front() == 0, name, "[0] (", cu.front(), ") must be 0");
  for (std::size_t i = 1; i < cu.size(); ++i) {
    SA_CHECK(cu[i] >= cu[i - 1], name, "[", i, "] (", cu[i], ") is below ", name, "[", i - 1, "] (", cu[i - 1],
             "): offsets must not decrease");
  }
  SA_CHECK(cu.back() == total, name, " ends at ", cu.back(), ", but ", tensor, ".seq is ", total);
}

}  // namespace

std::vector<PackedSequence> packed_sequences(const TensorView& q, const TensorView& k,
                                             const std::vector<std::int64_t>& cu_seqlens_q,
                                             const std::vector<std::int64_t>& cu_seqlens_k) {
  SA_CHECK(q.batch() == 1 && k.batch() == 1, "packed sequences need q.batch and k.batch 1, but they are ", q.batch(),
           " and ", k.batch());
  SA_CHECK(cu_seqlens_q.size() == cu_seqlens_k.size(), "cu_seqlens_q and cu_seqlens_k must have the same size (n + 1 "
           "for n sequences), but they have ", cu_seqlens_q.size(), " and ", cu_seqlens_k.size());
  check_offsets(cu_seqlens_q, "cu_seqlens_q", q.seq(), "q");
  check_offsets(cu_seqlens_k, "cu_seqlens_k", k.seq(), "k");
  std::vector<PackedSequence> seqs(cu_seqlens_q.size() - 1);
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    PackedSequence& s = seqs[i];
    s.q_begin = cu_seqlens_q[i];
    s.q_len = cu_seqlens_q[i + 1] - s.q_begin;
    s.k_begin = cu_seqlens_k[i];
    s.k_len = cu_seqlens_k[i + 1] - s.k_begin;
    SA_CHECK(s.q_len <= s.k_len, "sequence ", i, " has ", s.q_len, " queries but ", s.k_len,
             " keys: its queries must be its last positions (q_len <= k_len)");
  }
  return seqs;
}

TensorView row_range(const TensorView& t, std::int64_t begin, std::int64_t count) {
  TensorView r = t;
  r.data = static_cast<char*>(t.data) + begin * t.stride[1] * static_cast<std::int64_t>(dtype_size(t.dtype));
  r.shape[1] = count;
  return r;
}

}  // namespace sampleattn::core
