// Selection: what SampleAttention keeps, per (batch, query head). This is the object select() returns and
// attend() consumes; users may inspect it, save it (tools: JSON), reuse it across calls or build their own.
//
// Head index bh = b * heads + h. For each head: the local window w and the sorted, unique kept key columns
// I (CSR: indices[offsets[bh] .. offsets[bh+1])). The mask of row r is band(w) union {j in I visible to r}
// (SPEC.md step 4), plus every visible key for the last dense_tail rows.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace sampleattn {

struct HeadStats {
  std::int64_t kept_columns = 0;    // |I|
  std::int64_t kept_entries = 0;    // entries of the mask (band, stripes and tail, each counted once)
  std::int64_t visible_entries = 0; // entries a dense (causal) attention computes
  double density = 0.0;             // kept_entries / visible_entries
  double sampled_coverage = 0.0;    // fraction of the sampled rows' mass that the mask keeps (>= alpha)
};

struct Selection {
  std::int64_t batch = 0;
  std::int64_t heads = 0;  // query heads
  std::int64_t seq_q = 0;
  std::int64_t seq_k = 0;
  bool causal = true;
  std::int64_t dense_tail = 0;
  std::vector<std::int64_t> window;   // [batch * heads]
  std::vector<std::int64_t> offsets;  // [batch * heads + 1]
  std::vector<std::int32_t> indices;  // sorted ascending, unique, each in [0, seq_k)
  std::vector<HeadStats> stats;       // [batch * heads]

  std::int64_t num_heads_total() const { return batch * heads; }
  std::span<const std::int32_t> columns(std::int64_t bh) const {
    return {indices.data() + offsets[bh], static_cast<std::size_t>(offsets[bh + 1] - offsets[bh])};
  }
  // Kept entries over visible entries, all heads together.
  double density() const;
  // Smallest sampled coverage over the heads; NaN if any head's is NaN (its column scores were not finite).
  double min_sampled_coverage() const;

  // Throws sampleattn::Error unless the arrays are consistent (sizes, offsets spanning indices, sorted unique
  // in-range indices, window >= 1). attend() calls this on every selection it is given.
  void validate() const;
  // Validates, then recomputes kept_columns / kept_entries / visible_entries / density from window and
  // indices (sampled_coverage is left as it is).
  void recompute_counts();
};

}  // namespace sampleattn
