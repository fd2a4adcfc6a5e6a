// Selection consistency checks and aggregate statistics (selection.h).
#include "sampleattn/selection.h"

#include <algorithm>
#include <cmath>

#include "core/schedule.h"
#include "sampleattn/error.h"

namespace sampleattn {

double Selection::density() const {
  std::int64_t kept = 0, visible = 0;
  for (const HeadStats& s : stats) {
    kept += s.kept_entries;
    visible += s.visible_entries;
  }
  return visible > 0 ? static_cast<double>(kept) / static_cast<double>(visible) : 0.0;
}

double Selection::min_sampled_coverage() const {
  double m = 1.0;
  for (const HeadStats& s : stats) {
    if (std::isnan(s.sampled_coverage)) return s.sampled_coverage;  // a head whose scores were not finite
    m = std::min(m, s.sampled_coverage);
  }
  return m;
}

void Selection::validate() const {
  SA_CHECK(batch > 0 && heads > 0 && seq_q > 0 && seq_k > 0, "selection sizes (batch ", batch, ", heads ", heads,
           ", seq_q ", seq_q, ", seq_k ", seq_k, ") must be > 0");
  SA_CHECK(seq_q <= seq_k, "selection.seq_q (", seq_q, ") must be <= selection.seq_k (", seq_k, ")");
  SA_CHECK(seq_k <= INT32_MAX, "selection.seq_k (", seq_k, ") must fit int32 column indices");
  SA_CHECK(dense_tail >= 0, "selection.dense_tail (", dense_tail, ") must be >= 0");
  std::int64_t n = 0;
  SA_CHECK(!__builtin_mul_overflow(batch, heads, &n), "selection.batch (", batch, ") x selection.heads (", heads,
           ") overflows int64");
  SA_CHECK(static_cast<std::int64_t>(window.size()) == n, "selection.window has ", window.size(),
           " entries, expected batch * heads = ", n);
  SA_CHECK(static_cast<std::int64_t>(offsets.size()) == n + 1, "selection.offsets has ", offsets.size(),
           " entries, expected batch * heads + 1 = ", n + 1);
  SA_CHECK(stats.empty() || static_cast<std::int64_t>(stats.size()) == n, "selection.stats has ", stats.size(),
           " entries, expected 0 or ", n);
  SA_CHECK(offsets[0] == 0 && offsets[n] == static_cast<std::int64_t>(indices.size()), "selection.offsets (first ",
           offsets[0], ", last ", offsets[n], ") must span indices (", indices.size(), " entries)");
  // Every offset is checked before any index is read through it.
  for (std::int64_t bh = 0; bh < n; ++bh) {
    SA_CHECK(offsets[bh] <= offsets[bh + 1], "selection.offsets must be non-decreasing (head ", bh, ": ",
             offsets[bh], " then ", offsets[bh + 1], ")");
  }
  for (std::int64_t bh = 0; bh < n; ++bh) {
    SA_CHECK(window[bh] >= 1, "selection.window[", bh, "] (", window[bh], ") must be >= 1: the diagonal is kept");
    std::int64_t prev = -1;
    for (std::int64_t i = offsets[bh]; i < offsets[bh + 1]; ++i) {
      const std::int64_t j = indices[i];
      SA_CHECK(j > prev && j < seq_k, "selection.indices of head ", bh, " must be sorted, unique and in [0, ",
               seq_k, "); found ", j, " after ", prev);
      prev = j;
    }
  }
}

void Selection::recompute_counts() {
  validate();
  core::Problem p;
  p.batch = batch;
  p.seq_q = seq_q;
  p.seq_k = seq_k;
  p.q_heads = heads;
  p.kv_heads = heads;
  p.causal = causal;
  const std::int64_t n = batch * heads;
  stats.resize(static_cast<std::size_t>(n));
  for (std::int64_t bh = 0; bh < n; ++bh) {
    const core::EntryCount c =
        core::count_entries(p, window[bh], dense_tail, indices.data() + offsets[bh], offsets[bh + 1] - offsets[bh]);
    HeadStats& s = stats[bh];
    s.kept_columns = offsets[bh + 1] - offsets[bh];
    s.kept_entries = c.kept;
    s.visible_entries = c.visible;
    s.density = c.visible > 0 ? static_cast<double>(c.kept) / static_cast<double>(c.visible) : 0.0;
  }
}

}  // namespace sampleattn
