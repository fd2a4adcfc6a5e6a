// sampleattn bench: times dense attention, select() and attend() per (backend, size) and reports medians,
// effective GFLOP/s over the entries actually computed (4 * head_dim FLOPs per entry: QK^T and PV) and the
// speedups of sparse over dense; writes a JSON record (machine, date, git commit, every case) with --out.
//
// Selections: "synthetic" (default) attends a window + random columns selection built to a target density,
// while select() is still timed on the same inputs (its cost hardly depends on what it keeps), so that
// "sparse total" = select + attend at that density; "workload" runs the synthetic workload generator,
// attends what select() chose, and also times the fused sample_attention() call.
// On CUDA, select() includes copying the selection to the host and attend() uploading it again; the fused
// call keeps it on the device.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <numeric>
#include <random>
#include <sstream>
#include <thread>

#include "common.h"
#include "core/half.h"
#include "cpu/fast_kernels.h"
#include "device.h"
#include "sampleattn/api.h"
#include "sampleattn/error.h"
#include "sampleattn/workload.h"

namespace sampleattn::cli {
namespace {

constexpr const char* kHelp = R"(usage: sampleattn bench [options]

Times dense attention, select() and attend() (median of --reps runs after --warmup runs) for each backend
and size; prints a table and, with --out, writes a JSON record (machine, date, git commit, each case's
times, effective GFLOP/s over the computed entries, speedups).

options:
  --sizes LIST       sequence lengths, comma-separated (4096,16384; K suffix allowed)
  --backend LIST     cpu, cpu-ref, cuda, comma-separated (default: cuda when present, else cpu);
                     cpu-ref is the fp64 reference: keep sizes small
  --selection MODE   synthetic: window + random columns at --density (default); workload: the synthetic
                     workload generator and the columns select() chooses
  --density D        target kept density of the synthetic selection, in (0, 1] (0.1)
  --heads N          query heads (8)         --kv-heads N   key/value heads (2)
  --head-dim N       head dimension (128, 16-256) --batch N  batch size (1)
  --dtype T          f32, f16, bf16 (bf16)   --seed S       seed (0)
  --reps N           timed runs per measurement (3)   --warmup N   untimed runs first (1)
  --no-dense         skip dense attention (speedups are then not reported)
  --threads N        CPU threads (0 = all)
  --out FILE.json    write the JSON record
  --alpha, --sample-ratio, --window-ratio, --min-window, --sink-tokens, --dense-tail, --dense-head-density:
                     select()'s settings
)";

std::vector<OptionSpec> options() {
  std::vector<OptionSpec> o = {{"sizes", true},   {"backend", true},  {"selection", true}, {"density", true},
                               {"heads", true},   {"kv-heads", true}, {"head-dim", true},  {"batch", true},
                               {"dtype", true},   {"seed", true},     {"reps", true},      {"warmup", true},
                               {"no-dense", false}, {"threads", true}, {"out", true}};
  for (const OptionSpec& s : config_options()) o.push_back(s);
  return o;
}

struct Timing {
  std::vector<double> ms;
  double median_ms() const { return median(ms); }
  double min_ms() const { return ms.empty() ? 0.0 : *std::min_element(ms.begin(), ms.end()); }
};

Timing time_it(int warmup, int reps, const std::function<void()>& fn) {
  for (int i = 0; i < warmup; ++i) {
    fn();
    device_sync();
  }
  Timing t;
  for (int i = 0; i < reps; ++i) {
    const double t0 = now_seconds();
    fn();
    device_sync();
    t.ms.push_back(1e3 * (now_seconds() - t0));
  }
  return t;
}

// Window about a quarter of the target (its band then holds about half the kept entries), then the number
// of random columns per head that brings the density closest to the target (bisection: density grows with
// the column count for a fixed random order).
Selection synthetic_selection(std::uint64_t seed, std::int64_t batch, std::int64_t heads, std::int64_t sq,
                              std::int64_t sk, double target) {
  Selection s;
  s.batch = batch;
  s.heads = heads;
  s.seq_q = sq;
  s.seq_k = sk;
  const std::int64_t n = batch * heads;
  const std::int64_t window = std::clamp<std::int64_t>(static_cast<std::int64_t>(std::llround(target * sk / 4.0)), 1, sk);
  std::mt19937_64 rng(seed);
  std::vector<std::vector<std::int32_t>> order(static_cast<std::size_t>(n));
  for (auto& o : order) {
    o.resize(static_cast<std::size_t>(sk));
    std::iota(o.begin(), o.end(), 0);
    std::shuffle(o.begin(), o.end(), rng);
  }
  auto build = [&](std::int64_t columns) {
    s.window.assign(static_cast<std::size_t>(n), window);
    s.offsets.assign(1, 0);
    s.indices.clear();
    for (std::int64_t bh = 0; bh < n; ++bh) {
      std::vector<std::int32_t> cols(order[bh].begin(), order[bh].begin() + columns);
      std::sort(cols.begin(), cols.end());
      s.indices.insert(s.indices.end(), cols.begin(), cols.end());
      s.offsets.push_back(static_cast<std::int64_t>(s.indices.size()));
    }
    s.recompute_counts();
    return s.density();
  };
  std::int64_t lo = 0, hi = sk;
  while (lo < hi) {
    const std::int64_t mid = (lo + hi) / 2;
    if (build(mid) < target) lo = mid + 1; else hi = mid;
  }
  build(lo);
  for (HeadStats& st : s.stats) st.sampled_coverage = 1.0;
  return s;
}

std::string number(double x) {
  std::ostringstream os;
  os.precision(6);
  os << x;
  return os.str();
}

std::string timing_json(const Timing& t) {
  std::string s = "{\"median_ms\": " + number(t.median_ms()) + ", \"min_ms\": " + number(t.min_ms()) + ", \"runs_ms\": [";
  for (std::size_t i = 0; i < t.ms.size(); ++i) s += (i ? ", " : "") + number(t.ms[i]);
  return s + "]}";
}

}  // namespace

int bench_main(const std::vector<std::string>& argv) {
  const Args args("bench", argv, options());
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  const std::vector<std::int64_t> sizes = args.integers("sizes", {4096, 16384}, 1, std::int64_t{1} << 24);
  const std::vector<std::string> backend_names =
      args.words("backend", {cuda_present() ? "cuda" : "cpu"}, {"cpu", "cpu-ref", "cuda"});
  const std::vector<std::string> modes = args.words("selection", {"synthetic"}, {"synthetic", "workload"});
  SA_CHECK(modes.size() == 1, "--selection takes one of synthetic or workload, not a list (got ",
           args.text("selection", ""), ")");
  const std::string mode = modes.front();
  const double target = args.real("density", 0.1, 0.0, 1.0, /*lo_open=*/true);
  const std::int64_t hq = args.integer("heads", 8, 1, 1024), hkv = args.integer("kv-heads", 2, 1, 1024);
  const std::int64_t d = args.integer("head-dim", 128, 16, 256), batch = args.integer("batch", 1, 1, 1024);
  SA_CHECK(hq % hkv == 0, "--heads (", hq, ") must be a multiple of --kv-heads (", hkv, ")");
  const DType dtype = parse_dtype("dtype", args.text("dtype", "bf16"));
  const std::uint64_t seed = static_cast<std::uint64_t>(args.integer("seed", 0, 0, INT64_MAX));
  const int reps = static_cast<int>(args.integer("reps", 3, 1, 1000));
  const int warmup = static_cast<int>(args.integer("warmup", 1, 0, 1000));
  const bool run_dense = !args.has("no-dense");
  const SampleConfig config = config_from(args);
  const int threads = static_cast<int>(args.integer("threads", 0, 0, 4096));
  std::vector<Backend> backends;
  for (const std::string& n : backend_names) backends.push_back(parse_backend(n));
  for (std::int64_t s : sizes) {
    std::int64_t total = 0;
    SA_CHECK(!__builtin_mul_overflow(batch, s, &total) && !__builtin_mul_overflow(total, hq * d, &total) &&
                 !__builtin_mul_overflow(total, std::int64_t{4}, &total),
             "--sizes (", s, ") x --heads (", hq, ") x --head-dim (", d, ") x --batch (", batch, ") overflows int64");
  }

  bool dirty = false;
  const std::string commit = git_commit(&dirty);
  std::string cases_json;
  std::printf("sampleattn bench: %s selection%s, batch %lld, Hq %lld, Hkv %lld, d %lld, %s, %d reps (median)\n",
              mode.c_str(), mode == "synthetic" ? (" at density " + number(target)).c_str() : "",
              static_cast<long long>(batch), static_cast<long long>(hq), static_cast<long long>(hkv),
              static_cast<long long>(d), to_string(dtype), reps);
  std::printf("%-8s %7s %8s %11s %11s %11s %11s %9s %9s %12s %12s\n", "backend", "seq", "density", "dense ms",
              "select ms", "attend ms", "sparse ms", "x total", "x attend", "dense GF/s", "attend GF/s");

  for (const Backend backend : backends) {
    for (const std::int64_t seq : sizes) {
      WorkloadConfig wc;
      wc.batch = batch;
      wc.seq_k = seq;
      wc.q_heads = hq;
      wc.kv_heads = hkv;
      wc.head_dim = d;
      wc.dtype = dtype;
      wc.seed = seed;
      wc.sink_tokens = std::min(wc.sink_tokens, seq);
      if (mode == "synthetic") {  // plain Gaussian inputs: the selection is made up anyway
        wc.profiles = {{"random", 0.0, 0.0, 0.0, 1.0}};
        wc.sink_tokens = 0;
        wc.heavy_columns = 0;
      }
      const Workload w(wc);
      TensorView q = w.q(), k = w.k(), v = w.v();
      HostArray out(dtype, batch, seq, hq, d);
      TensorView o = out.view();
      DeviceBuffer qb, kb, vb, ob;
      if (backend == Backend::cuda) {
        q = upload_tensor(q, qb);
        k = upload_tensor(k, kb);
        v = upload_tensor(v, vb);
        o = upload_tensor(o, ob);
      }
      ExecOptions exec;
      exec.backend = backend;
      exec.num_threads = threads;

      Selection chosen;
      const Timing t_select = time_it(warmup, reps, [&] { chosen = select(q, k, {}, config, exec); });
      const Selection sel = mode == "synthetic" ? synthetic_selection(seed + 1, batch, hq, seq, seq, target) : chosen;
      const Timing t_attend = time_it(warmup, reps, [&] { attend(q, k, v, sel, o, nullptr, {}, exec); });
      Timing t_dense, t_sample;
      if (run_dense) t_dense = time_it(warmup, reps, [&] { dense_attention(q, k, v, o, nullptr, {}, exec); });
      // The fused call (on CUDA the selection then stays on the device); only meaningful on the workload.
      if (mode == "workload") t_sample = time_it(warmup, reps, [&] { sample_attention(q, k, v, o, nullptr, {}, config, exec); });

      std::int64_t kept = 0, visible = 0;
      for (const HeadStats& st : sel.stats) {
        kept += st.kept_entries;
        visible += st.visible_entries;
      }
      const double flop_per_entry = 4.0 * static_cast<double>(d);
      const double dense_ms = t_dense.median_ms(), select_ms = t_select.median_ms(), attend_ms = t_attend.median_ms();
      const double sparse_ms = select_ms + attend_ms;
      const double dense_gflops = run_dense ? flop_per_entry * visible / (dense_ms * 1e6) : 0.0;
      const double attend_gflops = flop_per_entry * kept / (attend_ms * 1e6);
      const double x_total = run_dense ? dense_ms / sparse_ms : 0.0, x_attend = run_dense ? dense_ms / attend_ms : 0.0;
      std::printf("%-8s %7lld %7.2f%% %11.2f %11.2f %11.2f %11.2f %8.2fx %8.2fx %12.1f %12.1f\n", to_string(backend),
                  static_cast<long long>(seq), 100.0 * sel.density(), dense_ms, select_ms, attend_ms, sparse_ms, x_total,
                  x_attend, dense_gflops, attend_gflops);
      std::fflush(stdout);

      std::ostringstream c;
      c << (cases_json.empty() ? "\n    " : ",\n    ") << "{\"backend\": " << json_string(to_string(backend))
        << ", \"batch\": " << batch << ", \"seq_q\": " << seq << ", \"seq_k\": " << seq << ", \"q_heads\": " << hq
        << ", \"kv_heads\": " << hkv << ", \"head_dim\": " << d << ", \"dtype\": " << json_string(to_string(dtype))
        << ", \"causal\": true, \"selection\": " << json_string(mode) << ", \"target_density\": "
        << (mode == "synthetic" ? number(target) : "null") << ", \"density\": " << number(sel.density())
        << ", \"kept_entries\": " << kept << ", \"visible_entries\": " << visible
        << ",\n     \"select\": " << timing_json(t_select) << ",\n     \"attend\": " << timing_json(t_attend)
        << ",\n     \"dense\": " << (run_dense ? timing_json(t_dense) : "null")
        << ",\n     \"sample_attention\": " << (mode == "workload" ? timing_json(t_sample) : "null")
        << ",\n     \"sparse_total_ms\": " << number(sparse_ms)
        << ", \"dense_gflops\": " << (run_dense ? number(dense_gflops) : "null")
        << ", \"attend_gflops_kept\": " << number(attend_gflops)
        << ", \"sparse_total_gflops_kept\": " << number(flop_per_entry * kept / (sparse_ms * 1e6))
        << ", \"speedup_total\": " << (run_dense ? number(x_total) : "null")
        << ", \"speedup_attend\": " << (run_dense ? number(x_attend) : "null") << "}";
      cases_json += c.str();
    }
  }

  if (args.has("out")) {
    const std::string path = args.text("out", "");
    const unsigned hw = std::thread::hardware_concurrency();
    std::ostringstream j;
    j << "{\n  \"tool\": \"sampleattn bench\", \"version\": " << json_string(SAMPLEATTN_VERSION)
      << ",\n  \"date\": " << json_string(utc_timestamp()) << ",\n  \"git_commit\": " << json_string(commit)
      << ", \"git_dirty\": " << (dirty ? "true" : "false") << ",\n  \"machine\": {\"host\": "
      << json_string(host_name()) << ", \"cpu\": " << json_string(cpu_model()) << ", \"hardware_threads\": " << hw
      << ", \"threads_used\": " << (threads > 0 ? static_cast<unsigned>(threads) : hw)
      << ", \"cpu_kernels\": " << json_string(cpu::fast::kernels().name)
      << ", \"os\": " << json_string(os_description()) << ", \"gpu\": " << json_string(gpu_description())
      << "},\n  \"settings\": {\"selection\": " << json_string(mode) << ", \"reps\": " << reps << ", \"warmup\": "
      << warmup << ", \"seed\": " << seed << ", \"alpha\": " << number(config.alpha) << ", \"sample_ratio\": "
      << number(config.sample_ratio) << ", \"window_ratio\": " << number(config.window_ratio)
      << ", \"min_window\": " << config.min_window << ", \"sink_tokens\": " << config.sink_tokens
      << ", \"flops_per_entry\": \"4 * head_dim\"},\n  \"cases\": [" << cases_json << "\n  ]\n}\n";
    std::ofstream f(path, std::ios::trunc);
    SA_CHECK(f.good(), "--out ", path, ": cannot open for writing");
    f << j.str();
    f.close();
    SA_CHECK(!f.fail(), "--out ", path, ": write failed");
    std::printf("wrote %s\n", path.c_str());
  }
  return 0;
}

}  // namespace sampleattn::cli
