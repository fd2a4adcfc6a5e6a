// CPU reference backend (reference.h): one query row at a time, every score and sum in fp64, no tiling.
// The mask test is spelled out per key so that the code reads like SPEC.md step 4.
#include "cpu/reference.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <numeric>

#include "core/half.h"
#include "core/schedule.h"
#include "core/threshold.h"

namespace sampleattn::ref {
namespace {

using core::load_element;
using core::Problem;

// Scaled scores s_j = scale * q_r . k_j for keys j in [0, end).
std::vector<double> row_scores(const Problem& p, const TensorView& q, const TensorView& k, std::int64_t b,
                               std::int64_t h, std::int64_t r, std::int64_t end) {
  const std::int64_t kvh = p.kv_head(h);
  std::vector<double> qrow(static_cast<std::size_t>(p.head_dim));
  for (std::int64_t d = 0; d < p.head_dim; ++d) qrow[d] = load_element(q.data, q.dtype, q.offset(b, r, h, d));
  std::vector<double> s(static_cast<std::size_t>(end));
  for (std::int64_t j = 0; j < end; ++j) {
    double dot = 0.0;
    for (std::int64_t d = 0; d < p.head_dim; ++d) dot += qrow[d] * load_element(k.data, k.dtype, k.offset(b, j, kvh, d));
    s[j] = static_cast<double>(p.scale) * dot;
  }
  return s;
}

// Exact softmax probabilities of row r over its visible keys (SPEC step 2).
std::vector<double> row_probabilities(const Problem& p, const TensorView& q, const TensorView& k, std::int64_t b,
                                      std::int64_t h, std::int64_t r) {
  std::vector<double> s = row_scores(p, q, k, b, h, r, p.visible_end(r));
  const double m = *std::max_element(s.begin(), s.end());
  double sum = 0.0;
  for (double& x : s) sum += x = std::exp(x - m);
  for (double& x : s) x /= sum;
  return s;
}

// Which keys row r keeps: the whole visible range for the dense tail, else band + visible kept columns.
std::vector<char> row_mask(const Problem& p, std::int64_t window, std::int64_t dense_tail,
                           const std::vector<char>& is_column, std::int64_t r) {
  const std::int64_t end = p.visible_end(r);
  std::vector<char> keep(static_cast<std::size_t>(end), 0);
  const core::Span band = core::band(p, window, r);
  for (std::int64_t j = 0; j < end; ++j) {
    const bool in_band = j >= band.lo && j < band.hi;
    keep[j] = core::in_dense_tail(p, dense_tail, r) || in_band || is_column[j];
  }
  return keep;
}

// Softmax over the kept keys of one row, then O = P V; writes out and lse.
void attend_row(const Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
                const TensorView& out, float* lse, std::int64_t b, std::int64_t h, std::int64_t r,
                const std::vector<char>& keep) {
  const std::int64_t end = static_cast<std::int64_t>(keep.size());
  const std::vector<double> s = row_scores(p, q, k, b, h, r, end);
  double m = -std::numeric_limits<double>::infinity();
  for (std::int64_t j = 0; j < end; ++j)
    if (keep[j]) m = std::max(m, s[j]);
  double sum = 0.0;
  for (std::int64_t j = 0; j < end; ++j)
    if (keep[j]) sum += std::exp(s[j] - m);
  const std::int64_t kvh = p.kv_head(h);
  for (std::int64_t d = 0; d < p.head_dim; ++d) {
    double acc = 0.0;
    for (std::int64_t j = 0; j < end; ++j)
      if (keep[j]) acc += std::exp(s[j] - m) * load_element(v.data, v.dtype, v.offset(b, j, kvh, d));
    core::store_element(out.data, out.dtype, out.offset(b, r, h, d), static_cast<float>(acc / sum));
  }
  if (lse != nullptr) lse[(b * p.q_heads + h) * p.seq_q + r] = static_cast<float>(m + std::log(sum));
}

std::vector<char> column_flags(const Selection& sel, std::int64_t bh) {
  std::vector<char> flags(static_cast<std::size_t>(sel.seq_k), 0);
  for (std::int32_t j : sel.columns(bh)) flags[j] = 1;
  return flags;
}

}  // namespace

Selection select(const Problem& p, const TensorView& q, const TensorView& k, const SampleConfig& config) {
  Selection sel;
  sel.batch = p.batch;
  sel.heads = p.q_heads;
  sel.seq_q = p.seq_q;
  sel.seq_k = p.seq_k;
  sel.causal = p.causal;
  sel.dense_tail = config.dense_tail;
  const std::int64_t w = core::window_size(config, p.seq_k);
  const std::vector<std::int64_t> rows = core::sampled_rows(config.sample_ratio, p.seq_q);
  std::vector<double> coverage(static_cast<std::size_t>(p.batch * p.q_heads));
  sel.offsets.push_back(0);
  for (std::int64_t b = 0; b < p.batch; ++b) {
    for (std::int64_t h = 0; h < p.q_heads; ++h) {
      // colscore[j]: the sampled rows' probability at column j (SPEC step 2). kept_anyway: the part of the
      // sampled mass the mask keeps whatever the columns are (band, dense tail); outside[j]: column j's
      // mass outside the band of non-tail rows, kept only if j is chosen.
      std::vector<double> colscore(static_cast<std::size_t>(p.seq_k), 0.0);
      std::vector<double> outside(static_cast<std::size_t>(p.seq_k), 0.0);
      double kept_anyway = 0.0;
      for (std::int64_t r : rows) {
        const std::vector<double> probs = row_probabilities(p, q, k, b, h, r);
        const core::Span band = core::band(p, w, r);
        const bool tail = core::in_dense_tail(p, config.dense_tail, r);
        for (std::int64_t j = 0; j < static_cast<std::int64_t>(probs.size()); ++j) {
          const double prob = probs[j];
          colscore[j] += prob;
          if (tail || (j >= band.lo && j < band.hi)) {
            kept_anyway += prob;
          } else {
            outside[j] += prob;
          }
        }
      }
      const std::vector<std::int32_t> cols =
          core::keep_all_if_dense(
              p, w, config.dense_tail,
              core::choose_columns<double>(colscore.data(), p.seq_k, config.alpha, config.sink_tokens),
              config.dense_head_density);
      double kept = kept_anyway;
      for (std::int32_t j : cols) kept += outside[j];
      coverage[b * p.q_heads + h] = kept / static_cast<double>(rows.size());
      sel.window.push_back(w);
      sel.indices.insert(sel.indices.end(), cols.begin(), cols.end());
      sel.offsets.push_back(static_cast<std::int64_t>(sel.indices.size()));
    }
  }
  sel.recompute_counts();
  for (std::size_t i = 0; i < coverage.size(); ++i) sel.stats[i].sampled_coverage = coverage[i];
  return sel;
}

void attend(const Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
            const Selection& selection, const TensorView& out, float* lse) {
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h) {
      const std::int64_t bh = b * p.q_heads + h;
      const std::vector<char> is_column = column_flags(selection, bh);
      for (std::int64_t r = 0; r < p.seq_q; ++r) {
        const std::vector<char> keep = row_mask(p, selection.window[bh], selection.dense_tail, is_column, r);
        attend_row(p, q, k, v, out, lse, b, h, r, keep);
      }
    }
}

void dense(const Problem& p, const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
           float* lse) {
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t r = 0; r < p.seq_q; ++r) {
        const std::vector<char> keep(static_cast<std::size_t>(p.visible_end(r)), 1);
        attend_row(p, q, k, v, out, lse, b, h, r, keep);
      }
}

std::vector<double> column_scores(const Problem& p, const TensorView& q, const TensorView& k, double sample_ratio,
                                  std::int64_t b, std::int64_t h) {
  std::vector<double> score(static_cast<std::size_t>(p.seq_k), 0.0);
  for (std::int64_t r : core::sampled_rows(sample_ratio, p.seq_q)) {
    const std::vector<double> probs = row_probabilities(p, q, k, b, h, r);
    for (std::size_t j = 0; j < probs.size(); ++j) score[j] += probs[j];
  }
  return score;
}

std::string columns_agree_up_to_ties(std::span<const std::int32_t> got, std::span<const std::int32_t> want,
                                     const std::vector<double>& scores, double alpha, double rel) {
  if (std::ranges::equal(got, want)) return "";
  const std::int64_t n = static_cast<std::int64_t>(scores.size());
  std::vector<std::int32_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t c) { return scores[a] > scores[c]; });
  double total = 0.0;
  for (double x : scores) total += x;
  const double target = alpha * total;
  std::vector<double> cum(static_cast<std::size_t>(n + 1), 0.0);
  for (std::int64_t i = 0; i < n; ++i) cum[i + 1] = cum[i] + scores[order[i]];
  std::int64_t cut = 0;  // the greedy count of SPEC step 3
  while (cut < n && cum[cut] < target && scores[order[cut]] > 0) ++cut;
  auto near = [&](double a, double c) { return std::abs(a - c) <= rel * std::max(std::abs(a), std::abs(c)) + 1e-12 * total; };
  const double at_cut = cut > 0 ? scores[order[cut - 1]] : 0.0, after_cut = cut < n ? scores[order[cut]] : 0.0;
  std::vector<std::int32_t> diff;
  std::ranges::set_symmetric_difference(got, want, std::back_inserter(diff));
  for (std::int32_t j : diff) {
    if (!near(scores[j], at_cut) && !near(scores[j], after_cut)) {
      return "column " + std::to_string(j) + " (score " + std::to_string(scores[j]) +
             ") is in one set only and is no tie with the cut (scores " + std::to_string(at_cut) + " / " +
             std::to_string(after_cut) + ")";
    }
  }
  if (got.size() != want.size()) {
    const bool crossing = std::abs(cum[cut] - target) <= rel * total ||
                          (cut > 0 && std::abs(cum[cut - 1] - target) <= rel * total);
    if (!crossing) {
      return "column counts differ (" + std::to_string(got.size()) + " vs " + std::to_string(want.size()) +
             ") away from the alpha crossing";
    }
  }
  return "";
}

std::vector<HeadMetrics> metrics(const Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
                                 const Selection& selection, const std::vector<std::int64_t>& rows) {
  std::vector<HeadMetrics> result;
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h) {
      const std::int64_t bh = b * p.q_heads + h;
      const std::int64_t kvh = p.kv_head(h);
      const std::vector<char> is_column = column_flags(selection, bh);
      HeadMetrics hm;
      double mass_sum = 0.0, err2 = 0.0, ref2 = 0.0;
      for (std::int64_t r : rows) {
        const std::int64_t end = p.visible_end(r);
        const std::vector<char> keep = row_mask(p, selection.window[bh], selection.dense_tail, is_column, r);
        const std::vector<double> prob = row_probabilities(p, q, k, b, h, r);
        double kept = 0.0;
        for (std::int64_t j = 0; j < end; ++j)
          if (keep[j]) kept += prob[j];
        for (std::int64_t d = 0; d < p.head_dim; ++d) {
          double dense_o = 0.0, sparse_o = 0.0;
          for (std::int64_t j = 0; j < end; ++j) {
            const double pv = prob[j] * load_element(v.data, v.dtype, v.offset(b, j, kvh, d));
            dense_o += pv;
            if (keep[j]) sparse_o += pv;
          }
          sparse_o /= kept;
          err2 += (sparse_o - dense_o) * (sparse_o - dense_o);
          ref2 += dense_o * dense_o;
        }
        hm.min_kept_mass = std::min(hm.min_kept_mass, kept);
        mass_sum += kept;
        ++hm.rows;
      }
      hm.mean_kept_mass = hm.rows > 0 ? mass_sum / static_cast<double>(hm.rows) : 1.0;
      hm.rel_error = ref2 > 0.0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
      result.push_back(hm);
    }
  return result;
}

}  // namespace sampleattn::ref
