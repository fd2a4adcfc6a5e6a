// Fast CPU attention (fast.h): sparse attend() over a Selection and dense(), one engine for both.
//
// Work is split per (batch, KV head): its K and V rows are converted to fp32 once (fast_tiles.h), then every
// query head of the group is cut into tiles of up to 64 consecutive rows (128 on the AMX set), handed out
// largest first to all threads. A tile [r0, r1) walks, with an online softmax (fast_kernels.h):
//   1. the kept columns left of its band span, lo(r0): gathered by index, no mask (every row keeps them);
//   2. the band span [lo(r0), hi(r1-1)): an interior [lo(r1-1), hi(r0)) kept by every row, unmasked, and
//      the two edges (fewer keys each than the tile has rows) with element masks: band, or a kept column
//      the row sees;
//   3. non-causal only: the kept columns right of the span, gathered, no mask.
// So the cost follows the kept entries, plus at most two edge chunks per tile. Dense attention and the
// dense-tail rows are the same walk with band = all visible keys and no columns. With bf16 q, k, v and out
// and a kernel set that has attend_chunk_bf16, the panels stay bf16 and the chunks run on bf16 dot products.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/schedule.h"
#include "cpu/fast.h"
#include "cpu/fast_kernels.h"
#include "cpu/fast_parallel.h"
#include "cpu/fast_tiles.h"
#include "sampleattn/error.h"

namespace sampleattn::cpu {
namespace {

using core::Problem;
using namespace fast;

// Per-thread scratch, sized for the largest tile.
struct Workspace {
  FloatBuffer qt, o, s, m, l, corr, row;
  AlignedBuffer<std::uint32_t> qp, pairs;
  std::vector<std::int32_t> lo, hi, vis;
  std::vector<const float*> kp, vp;
  std::vector<const std::uint16_t*> kp16, vp16;
  std::vector<std::int64_t> rows;
};

// The mask of one query head: the window and kept columns, or (columns == nullptr) every visible key.
struct HeadMask {
  std::int64_t window = 0;
  const std::int32_t* columns = nullptr;
  std::int64_t num_columns = 0;
  const std::uint8_t* is_column = nullptr;  // [seq_k] flags of the same columns
};

struct Job {
  std::int64_t h = 0;
  std::int64_t r0 = 0, r1 = 0;
  bool dense = false;
  std::int64_t cost = 0;  // keys touched times rows: the order jobs are handed out in
};

struct Engine {
  const Problem& p;
  const TensorView& q;
  const TensorView& out;
  float* lse;
  std::int64_t b = 0;
  const Panel* k = nullptr;
  const Panel* v = nullptr;
  const Panel16* k16 = nullptr;  // the bf16 path: these instead of k and v
  const Panel16* v16 = nullptr;
  const std::uint32_t* v_pairs = nullptr;  // the bf16 path where the set wants them (load_v_pairs)
  int dim_padded = 0;
  const Kernels* kern = nullptr;  // read once per call: the set may not change under a running call

  void run_tile(Workspace& ws, const Job& job, const HeadMask& hm) const;
};

void Engine::run_tile(Workspace& ws, const Job& job, const HeadMask& hm) const {
  const Kernels& kern = *this->kern;
  const int nq = static_cast<int>(job.r1 - job.r0);
  const int rp = static_cast<int>(round_up(nq, kLanes));
  const int d = static_cast<int>(p.head_dim);
  const int dp = dim_padded;

  const bool bf16 = k16 != nullptr;
  ws.rows.resize(static_cast<std::size_t>(nq));
  for (int i = 0; i < nq; ++i) ws.rows[i] = job.r0 + i;

  QueryTile t;
  t.rows = nq;
  t.rows_padded = rp;
  t.dim = d;
  t.dim_padded = dp;
  if (bf16) {
    t.dim_pairs = (d + 1) / 2;
    std::uint32_t* qp = ws.qp.resize(static_cast<std::size_t>(t.dim_pairs) * rp);
    load_query_pairs(q, b, job.h, ws.rows.data(), nq, rp, qp);
    t.qp = qp;
    t.q_scale = p.scale * kLog2e;
    t.pairs = ws.pairs.resize(static_cast<std::size_t>(pair_scratch_words(rp, dp)));
  } else {
    float* qt = ws.qt.resize(static_cast<std::size_t>(d) * rp);
    load_query_tile(kern, q, b, job.h, ws.rows.data(), nq, rp, p.scale * kLog2e,
                    ws.row.resize(static_cast<std::size_t>(d)), qt);
    t.qt = qt;
  }
  t.o = ws.o.resize(static_cast<std::size_t>(rp) * dp);
  t.m = ws.m.resize(rp);
  t.l = ws.l.resize(rp);
  t.s = ws.s.resize(static_cast<std::size_t>(kChunk) * rp);
  t.corr = ws.corr.resize(rp);
  std::fill(t.o, t.o + static_cast<std::size_t>(rp) * dp, 0.0f);
  std::fill(t.m, t.m + rp, -std::numeric_limits<float>::infinity());
  std::fill(t.l, t.l + rp, 0.0f);

  // Per row: band [lo, hi) and visible end; dense rows have band = every visible key. Padded rows repeat
  // the last row (their results are never stored).
  ws.lo.resize(rp);
  ws.hi.resize(rp);
  ws.vis.resize(rp);
  for (int i = 0; i < rp; ++i) {
    const std::int64_t r = job.r0 + std::min(i, nq - 1);
    const std::int64_t vis = p.visible_end(r);
    const core::Span band = job.dense ? core::Span{0, vis} : core::band(p, hm.window, r);
    ws.lo[i] = static_cast<std::int32_t>(band.lo);
    ws.hi[i] = static_cast<std::int32_t>(band.hi);
    ws.vis[i] = static_cast<std::int32_t>(vis);
  }
  t.lo = ws.lo.data();
  t.hi = ws.hi.data();
  t.vis = ws.vis.data();

  ws.kp.resize(kChunk);
  ws.vp.resize(kChunk);
  ws.kp16.resize(kChunk);
  ws.vp16.resize(kChunk);
  const std::uint8_t* is_column = job.dense ? nullptr : hm.is_column;
  // One chunk of n keys, key j of the chunk at row key(j) of the panels (consecutive: key(j) = first_key + j).
  auto run_chunk = [&](int n, auto key, bool masked, std::int64_t first_key, bool consecutive) {
    KeyChunk c;
    c.n = n;
    c.masked = masked;
    c.first_key = static_cast<std::int32_t>(first_key);
    c.is_column = masked ? is_column : nullptr;
    if (bf16) {
      if (v_pairs != nullptr && consecutive && first_key % 2 == 0) c.v_pairs = v_pairs + first_key / 2 * dp;
      for (int j = 0; j < n; ++j) {
        ws.kp16[j] = k16->data + key(j) * k16->ld;
        ws.vp16[j] = v16->data + key(j) * v16->ld;
      }
      c.k16 = ws.kp16.data();
      c.v16 = ws.vp16.data();
      kern.attend_chunk_bf16(t, c);
    } else {
      for (int j = 0; j < n; ++j) {
        ws.kp[j] = k->data + key(j) * k->ld;
        ws.vp[j] = v->data + key(j) * v->ld;
      }
      c.k = ws.kp.data();
      c.v = ws.vp.data();
      kern.attend_chunk(t, c);
    }
  };
  // With V pairs, a span from an odd key starts with a chunk one key short, so that the rest start even.
  auto run_span = [&](std::int64_t a, std::int64_t e, bool masked) {
    for (std::int64_t x = a; x < e;) {
      const std::int64_t n = std::min<std::int64_t>(v_pairs != nullptr && x % 2 != 0 ? kChunk - 1 : kChunk, e - x);
      run_chunk(static_cast<int>(n), [x](int j) { return x + j; }, masked, x, true);
      x += n;
    }
  };
  auto run_list = [&](const std::int32_t* idx, std::int64_t count) {
    for (std::int64_t x = 0; x < count; x += kChunk)
      run_chunk(static_cast<int>(std::min<std::int64_t>(kChunk, count - x)),
                [idx, x](int j) { return static_cast<std::int64_t>(idx[x + j]); }, false, 0, false);
  };

  // Bands move right with the row: lo and hi are non-decreasing in r.
  const std::int64_t span_lo = ws.lo[0], span_hi = ws.hi[nq - 1];
  const std::int64_t in_lo = ws.lo[nq - 1], in_hi = ws.hi[0];
  const std::int32_t* cols = job.dense ? nullptr : hm.columns;
  const std::int64_t ncols = job.dense ? 0 : hm.num_columns;
  const std::int64_t left = std::lower_bound(cols, cols + ncols, span_lo) - cols;
  const std::int64_t right = p.causal ? ncols : std::lower_bound(cols, cols + ncols, span_hi) - cols;
  run_list(cols, left);
  if (in_lo < in_hi) {
    run_span(span_lo, in_lo, true);
    run_span(in_lo, in_hi, false);
    run_span(in_hi, span_hi, true);
  } else {
    run_span(span_lo, span_hi, true);
  }
  run_list(cols + right, ncols - right);

  // O = acc / l; lse = ln(2) * (m + log2(l)) (scores are in log2 units).
  const std::size_t osize = dtype_size(out.dtype);
  char* obase = static_cast<char*>(out.data);
  for (int i = 0; i < nq; ++i) {
    const std::int64_t r = job.r0 + i;
    kern.store_row(t.o + static_cast<std::int64_t>(i) * dp, d, 1.0f / t.l[i],
                   obase + out.offset(b, r, job.h, 0) * static_cast<std::int64_t>(osize), out.dtype, out.stride[3]);
    if (lse != nullptr) lse[(b * p.q_heads + job.h) * p.seq_q + r] = kLn2 * (t.m[i] + std::log2(t.l[i]));
  }
}

// Tiles of one query head: the body rows [0, body) under the head's mask, the dense-tail rows after them.
void add_jobs(const Problem& p, std::int64_t h, std::int64_t body, const HeadMask& hm, int tile_rows,
              std::vector<Job>& jobs) {
  auto add = [&](std::int64_t from, std::int64_t to, bool dense) {
    for (std::int64_t r0 = from; r0 < to; r0 += tile_rows) {
      Job j;
      j.h = h;
      j.r0 = r0;
      j.r1 = std::min(to, r0 + tile_rows);
      j.dense = dense;
      const std::int64_t last = j.r1 - 1;
      std::int64_t keys = p.visible_end(last);
      if (!dense) {
        const core::Span first = core::band(p, hm.window, r0), final = core::band(p, hm.window, last);
        keys = final.hi - first.lo + (std::lower_bound(hm.columns, hm.columns + hm.num_columns, first.lo) - hm.columns);
      }
      j.cost = keys * (j.r1 - j.r0);
      jobs.push_back(j);
    }
  };
  add(0, body, false);
  add(body, p.seq_q, true);
}

// selection == nullptr: dense attention.
void run(const Problem& p, const TensorView& q, const TensorView& k, const TensorView& v, const Selection* selection,
         const TensorView& out, float* lse, int num_threads) {
  SA_CHECK(p.seq_k <= std::numeric_limits<std::int32_t>::max(), "seq_k (", p.seq_k,
           ") must fit int32 key indices on the fast CPU backend");
  const int threads = resolve_threads(num_threads);
  const std::int64_t group = p.group();
  const std::int64_t tail = selection == nullptr ? p.seq_q : std::min(selection->dense_tail, p.seq_q);
  const std::int64_t body = p.seq_q - tail;

  Engine eng{p, q, out, lse};
  eng.dim_padded = static_cast<int>(round_up(p.head_dim, 8));
  // bf16 dot products (P rounded to bf16) only where the output is bf16 too: its own rounding is as large.
  const Kernels& kern = kernels();
  eng.kern = &kern;
  const bool bf16 = kern.attend_chunk_bf16 != nullptr && q.dtype == DType::bf16 && k.dtype == DType::bf16 &&
                    v.dtype == DType::bf16 && out.dtype == DType::bf16;
  Panel kpanel, vpanel;
  Panel16 kpanel16, vpanel16;
  AlignedBuffer<std::uint32_t> vpairs;
  const bool want_v_pairs = bf16 && kern.wants_v_pairs != nullptr && kern.wants_v_pairs(static_cast<int>(p.head_dim));
  std::vector<Workspace> workspaces(static_cast<std::size_t>(threads));
  std::vector<std::uint8_t> flags;
  std::vector<HeadMask> masks(static_cast<std::size_t>(group));
  std::vector<Job> jobs;

  for (std::int64_t b = 0; b < p.batch; ++b) {
    for (std::int64_t kvh = 0; kvh < p.kv_heads; ++kvh) {
      if (bf16) {
        load_panel_bf16(k, b, kvh, p.seq_k, eng.dim_padded, threads, kpanel16);
        load_panel_bf16(v, b, kvh, p.seq_k, eng.dim_padded, threads, vpanel16);
        eng.k16 = &kpanel16;
        eng.v16 = &vpanel16;
        if (want_v_pairs) {
          load_v_pairs(v, b, kvh, p.seq_k, eng.dim_padded, threads, vpairs);
          eng.v_pairs = vpairs.data();
        }
      } else {
        load_panel(kern, k, b, kvh, p.seq_k, eng.dim_padded, threads, kpanel);
        load_panel(kern, v, b, kvh, p.seq_k, eng.dim_padded, threads, vpanel);
        eng.k = &kpanel;
        eng.v = &vpanel;
      }
      eng.b = b;
      jobs.clear();
      if (selection != nullptr && body > 0) flags.assign(static_cast<std::size_t>(group * p.seq_k), 0);
      for (std::int64_t g = 0; g < group; ++g) {
        const std::int64_t h = kvh * group + g;
        HeadMask& hm = masks[g];
        if (selection != nullptr && body > 0) {
          const std::int64_t bh = b * p.q_heads + h;
          const auto cols = selection->columns(bh);
          hm.window = selection->window[bh];
          hm.columns = cols.data();
          hm.num_columns = static_cast<std::int64_t>(cols.size());
          std::uint8_t* f = flags.data() + g * p.seq_k;
          for (std::int32_t j : cols) f[j] = 1;
          hm.is_column = f;
        }
        add_jobs(p, h, body, hm, bf16 ? kern.bf16_tile_rows : kTileRows, jobs);
      }
      std::stable_sort(jobs.begin(), jobs.end(), [](const Job& x, const Job& y) { return x.cost > y.cost; });
      parallel_for(static_cast<std::int64_t>(jobs.size()), threads, [&](std::int64_t i, int t) {
        const Job& job = jobs[i];
        eng.run_tile(workspaces[t], job, masks[job.h - kvh * group]);
      });
    }
  }
}

}  // namespace

void attend(const Problem& p, const TensorView& q, const TensorView& k, const TensorView& v, const Selection& selection,
            const TensorView& out, float* lse, int num_threads) {
  run(p, q, k, v, &selection, out, lse, num_threads);
}

void dense(const Problem& p, const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
           float* lse, int num_threads) {
  run(p, q, k, v, nullptr, out, lse, num_threads);
}

}  // namespace sampleattn::cpu
