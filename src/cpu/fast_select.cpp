// Fast CPU selection (fast.h): SPEC.md variant A stages 1 and 2, with the reference's stats.
//
// Per (batch, KV head) the K rows are converted once (fast_tiles.h; kept bf16 for bf16 dot products where
// the kernel set has them and q and k are bf16). Per query head, the sampled rows
// (core::sampled_rows) go in tiles of 16 to the threads by a static split (largest tile first to the least
// loaded thread, each thread's tiles then in row order: a given thread count always sums in the same order).
// Each tile scores its rows against all their visible keys, takes the exact softmax of each row, and adds
// the probabilities per key column into the thread's fp64 colscore, and the part outside each row's band
// into `outside` (fast_kernels.h: sample_rows). The threads' arrays are then summed in thread order,
// core::choose_columns<double> picks the columns, and
//   sampled_coverage = 1 - (mass outside the bands in columns not chosen) / n,
// the same quantity the reference computes as (band mass + chosen columns' outside mass) / n.
#include <algorithm>
#include <limits>
#include <vector>

#include "core/schedule.h"
#include "core/threshold.h"
#include "cpu/fast.h"
#include "cpu/fast_kernels.h"
#include "cpu/fast_parallel.h"
#include "cpu/fast_tiles.h"
#include "sampleattn/error.h"

namespace sampleattn::cpu {
namespace {

using core::Problem;
using namespace fast;

struct ThreadState {
  FloatBuffer qt, row, s;
  AlignedBuffer<std::uint32_t> qp;
  std::vector<double> colscore, outside;
  std::int32_t vis[kLanes], lo[kLanes], hi[kLanes];
};

// K of one (batch, KV head): fp32 rows, or bf16 rows for the bf16 path (k16 set).
struct Keys {
  const Panel* k = nullptr;
  const Panel16* k16 = nullptr;
};

// Rows rows[0..n) (n <= kLanes) of head (b, h) into t's column sums.
void sample_tile(const Kernels& kern, const Problem& p, const TensorView& q, const Keys& keys, std::int64_t b,
                 std::int64_t h, std::int64_t window, std::int64_t dense_tail, const std::int64_t* rows, int n,
                 ThreadState& ts) {
  const std::int64_t d = p.head_dim;
  SampleTile st;
  st.rows = n;
  st.dim = static_cast<int>(d);
  if (keys.k16 != nullptr) {
    st.dim_pairs = static_cast<int>((d + 1) / 2);
    std::uint32_t* qp = ts.qp.resize(static_cast<std::size_t>(st.dim_pairs) * kLanes);
    load_query_pairs(q, b, h, rows, n, kLanes, qp);
    st.qp = qp;
    st.q_scale = p.scale * kLog2e;
    st.k16 = keys.k16->data;
    st.k16_ld = keys.k16->ld;
  } else {
    float* qt = ts.qt.resize(static_cast<std::size_t>(d) * kLanes);
    load_query_tile(kern, q, b, h, rows, n, kLanes, p.scale * kLog2e, ts.row.resize(static_cast<std::size_t>(d)), qt);
    st.qt = qt;
    st.k = keys.k->data;
    st.k_ld = keys.k->ld;
  }
  st.out_lo = std::numeric_limits<std::int64_t>::max();
  st.in_lo = 0;
  st.out_hi = 0;
  st.in_hi = std::numeric_limits<std::int64_t>::max();
  for (int i = 0; i < kLanes; ++i) {
    if (i >= n) {
      ts.vis[i] = ts.lo[i] = ts.hi[i] = 0;
      continue;
    }
    const std::int64_t r = rows[i];
    const std::int64_t vis = p.visible_end(r);
    // A dense-tail row keeps everything: its "band" is all of its visible keys.
    const core::Span band = core::in_dense_tail(p, dense_tail, r) ? core::Span{0, vis} : core::band(p, window, r);
    ts.vis[i] = static_cast<std::int32_t>(vis);
    ts.lo[i] = static_cast<std::int32_t>(band.lo);
    ts.hi[i] = static_cast<std::int32_t>(band.hi);
    st.end = std::max(st.end, vis);
    st.out_lo = std::min(st.out_lo, band.lo);
    st.out_hi = std::max(st.out_hi, band.hi);
    st.in_lo = std::max(st.in_lo, band.lo);
    st.in_hi = std::min(st.in_hi, band.hi);
  }
  st.vis = ts.vis;
  st.lo = ts.lo;
  st.hi = ts.hi;
  st.s = ts.s.resize(static_cast<std::size_t>(st.end) * kLanes);
  st.colscore = ts.colscore.data();
  st.outside = ts.outside.data();
  if (keys.k16 != nullptr) {
    kern.sample_rows_bf16(st);
  } else {
    kern.sample_rows(st);
  }
}

// Tiles [0, tiles) of sampled rows (16 rows each, tile i's last row rows[16 i + 15] or the last) split over
// `threads`: the largest first (cost = the visible keys of its last row), each to the thread with the least
// cost so far (the lower t among equals). Returns each thread's tiles in ascending order.
std::vector<std::vector<std::int64_t>> split_tiles(const Problem& p, const std::vector<std::int64_t>& rows,
                                                   std::int64_t tiles, int threads) {
  std::vector<std::int64_t> order(static_cast<std::size_t>(tiles)), cost(static_cast<std::size_t>(tiles));
  for (std::int64_t i = 0; i < tiles; ++i) {
    order[i] = i;
    const std::int64_t last = std::min<std::int64_t>((i + 1) * kLanes, static_cast<std::int64_t>(rows.size())) - 1;
    cost[i] = p.visible_end(rows[last]);
  }
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return cost[a] > cost[b]; });
  std::vector<std::vector<std::int64_t>> mine(static_cast<std::size_t>(threads));
  std::vector<std::int64_t> load(static_cast<std::size_t>(threads), 0);
  for (std::int64_t i : order) {
    const auto t = static_cast<std::size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    load[t] += cost[i];
    mine[t].push_back(i);
  }
  for (auto& m : mine) std::sort(m.begin(), m.end());
  return mine;
}

}  // namespace

Selection select(const Problem& p, const TensorView& q, const TensorView& k, const SampleConfig& config,
                 int num_threads) {
  SA_CHECK(p.seq_k <= std::numeric_limits<std::int32_t>::max(), "seq_k (", p.seq_k,
           ") must fit int32 key indices on the fast CPU backend");
  const std::int64_t sk = p.seq_k;
  const std::int64_t group = p.group();
  const std::int64_t window = core::window_size(config, sk);
  const std::vector<std::int64_t> rows = core::sampled_rows(config.sample_ratio, p.seq_q);
  const std::int64_t n = static_cast<std::int64_t>(rows.size());
  const std::int64_t tiles = (n + kLanes - 1) / kLanes;
  const int threads = static_cast<int>(std::min<std::int64_t>(resolve_threads(num_threads), tiles));
  const std::vector<std::vector<std::int64_t>> split = split_tiles(p, rows, tiles, threads);

  std::vector<ThreadState> states(static_cast<std::size_t>(threads));
  std::vector<double> colscore(static_cast<std::size_t>(group * sk)), outside(static_cast<std::size_t>(group * sk));
  std::vector<std::vector<std::int32_t>> chosen(static_cast<std::size_t>(p.batch * p.q_heads));
  std::vector<double> coverage(static_cast<std::size_t>(p.batch * p.q_heads));
  Panel kpanel;
  Panel16 kpanel16;
  // bf16 dot products for bf16 q and k: exact products, the same fp32 softmax and sums.
  const Kernels& kern = kernels();  // read once per call: the set may not change under a running call
  const bool bf16 = kern.sample_rows_bf16 != nullptr && q.dtype == DType::bf16 && k.dtype == DType::bf16;
  Keys keys;

  for (std::int64_t b = 0; b < p.batch; ++b) {
    for (std::int64_t kvh = 0; kvh < p.kv_heads; ++kvh) {
      if (bf16) {
        load_panel_bf16(k, b, kvh, sk, round_up(p.head_dim, 8), threads, kpanel16);
        keys.k16 = &kpanel16;
      } else {
        load_panel(kern, k, b, kvh, sk, round_up(p.head_dim, 8), threads, kpanel);
        keys.k = &kpanel;
      }
      for (std::int64_t g = 0; g < group; ++g) {
        const std::int64_t h = kvh * group + g;
        parallel_run(threads, [&](int t) {
          ThreadState& ts = states[t];
          ts.colscore.assign(static_cast<std::size_t>(sk), 0.0);
          ts.outside.assign(static_cast<std::size_t>(sk), 0.0);
          for (const std::int64_t tile : split[static_cast<std::size_t>(t)]) {
            const int cnt = static_cast<int>(std::min<std::int64_t>(kLanes, n - tile * kLanes));
            sample_tile(kern, p, q, keys, b, h, window, config.dense_tail, rows.data() + tile * kLanes, cnt, ts);
          }
        });
        // Sum the threads' arrays in thread order, in parallel over key ranges.
        double* cs = colscore.data() + g * sk;
        double* os = outside.data() + g * sk;
        constexpr std::int64_t kBlock = 1024;
        parallel_for((sk + kBlock - 1) / kBlock, threads, [&](std::int64_t blk, int) {
          const std::int64_t end = std::min(sk, (blk + 1) * kBlock);
          for (std::int64_t j = blk * kBlock; j < end; ++j) {
            double c = 0.0, o = 0.0;
            for (const ThreadState& ts : states) {
              c += ts.colscore[j];
              o += ts.outside[j];
            }
            cs[j] = c;
            os[j] = o;
          }
        });
      }
      parallel_for(group, threads, [&](std::int64_t g, int) {
        const std::int64_t bh = b * p.q_heads + kvh * group + g;
        const double* cs = colscore.data() + g * sk;
        const double* os = outside.data() + g * sk;
        chosen[bh] = core::keep_all_if_dense(p, window, config.dense_tail,
                                             core::choose_columns<double>(cs, sk, config.alpha, config.sink_tokens),
                                             config.dense_head_density);
        double lost = 0.0;
        std::size_t next = 0;
        for (std::int64_t j = 0; j < sk; ++j) {
          if (next < chosen[bh].size() && chosen[bh][next] == j) {
            ++next;
          } else {
            lost += os[j];
          }
        }
        coverage[bh] = std::clamp(1.0 - lost / static_cast<double>(n), 0.0, 1.0);
      });
    }
  }

  Selection sel;
  sel.batch = p.batch;
  sel.heads = p.q_heads;
  sel.seq_q = p.seq_q;
  sel.seq_k = sk;
  sel.causal = p.causal;
  sel.dense_tail = config.dense_tail;
  sel.window.assign(static_cast<std::size_t>(p.batch * p.q_heads), window);
  sel.offsets.push_back(0);
  for (const std::vector<std::int32_t>& cols : chosen) {
    sel.indices.insert(sel.indices.end(), cols.begin(), cols.end());
    sel.offsets.push_back(static_cast<std::int64_t>(sel.indices.size()));
  }
  sel.recompute_counts();
  for (std::size_t i = 0; i < coverage.size(); ++i) sel.stats[i].sampled_coverage = coverage[i];
  return sel;
}

}  // namespace sampleattn::cpu
