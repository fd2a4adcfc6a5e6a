// sampleattn demo: the main job on a built-in default. The synthetic workload generator (workload.h) at 16K
// tokens, 8 query heads, 2 KV heads, head_dim 128; SampleAttention (select + attend) and dense attention on
// the best backend present; then a per-head table (kept columns, density, sampled coverage, exact CRA and
// relative error on a subset of rows, against fp64 dense attention) and a summary line with both times and
// the speedup.
#include <algorithm>
#include <cstdio>

#include "common.h"
#include "cpu/fast_kernels.h"
#include "device.h"
#include "sampleattn/api.h"
#include "sampleattn/error.h"
#include "sampleattn/workload.h"

namespace sampleattn::cli {
namespace {

constexpr const char* kHelp = R"(usage: sampleattn demo [options]

SampleAttention against dense attention on a SYNTHETIC workload (the built-in generator: sink tokens, heavy
key columns, local decay and noise, mixed per head; not data from a model). Prints, per query head: the
generator's profile, kept columns, density (kept / causal entries), sampled coverage, and, on --metric-rows
rows, the exact CRA (minimum kept dense attention mass) and the relative error of the sparse output against
fp64 dense attention; then the times and the speedup.

options:
  --seq N            tokens (16384; K and M suffixes allowed)
  --heads N          query heads (8)
  --kv-heads N       key/value heads (2)
  --head-dim N       head dimension (128; 16 to 256, and 64, 96, 128 or 256 on CUDA)
  --batch N          batch size (1)
  --dtype T          f32, f16, bf16 (bf16)
  --seed S           generator seed (0)
  --backend B        auto, cpu, cpu-ref, cuda (auto: cuda when present, else the fast CPU backend)
  --metric-rows N    rows per head for the exact metrics (32)
  --threads N        CPU threads (0 = all)
  --alpha, --sample-ratio, --window-ratio, --min-window, --sink-tokens, --dense-tail, --dense-head-density: as in
                     sampleattn run
)";

std::vector<OptionSpec> options() {
  std::vector<OptionSpec> o = {{"seq", true},  {"heads", true},   {"kv-heads", true}, {"head-dim", true},
                               {"batch", true}, {"dtype", true},  {"seed", true},     {"backend", true},
                               {"metric-rows", true}, {"threads", true}};
  for (const OptionSpec& s : config_options()) o.push_back(s);
  return o;
}

}  // namespace

int demo_main(const std::vector<std::string>& argv) {
  const Args args("demo", argv, options());
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  WorkloadConfig wc;
  wc.seq_k = args.integer("seq", 16384, 1, std::int64_t{1} << 24);
  wc.sink_tokens = std::min(wc.sink_tokens, wc.seq_k);  // the generator's sinks, at most every key
  wc.q_heads = args.integer("heads", 8, 1, 1024);
  wc.kv_heads = args.integer("kv-heads", 2, 1, 1024);
  wc.head_dim = args.integer("head-dim", 128, 16, 256);
  wc.batch = args.integer("batch", 1, 1, 1024);
  wc.dtype = parse_dtype("dtype", args.text("dtype", "bf16"));
  wc.seed = static_cast<std::uint64_t>(args.integer("seed", 0, 0, INT64_MAX));
  SA_CHECK(wc.q_heads % wc.kv_heads == 0, "--heads (", wc.q_heads, ") must be a multiple of --kv-heads (",
           wc.kv_heads, ")");
  const SampleConfig config = config_from(args);
  const std::int64_t metric_count = args.integer("metric-rows", 32, 1, std::int64_t{1} << 24);
  ExecOptions exec;
  exec.backend = parse_backend(args.text("backend", "auto"));
  exec.num_threads = static_cast<int>(args.integer("threads", 0, 0, 4096));

  const double tg = now_seconds();
  const Workload w(wc);
  const double gen_seconds = now_seconds() - tg;
  const std::int64_t sq = w.seq_q();
  HostArray sparse_out(wc.dtype, wc.batch, sq, wc.q_heads, wc.head_dim);
  HostArray dense_out(wc.dtype, wc.batch, sq, wc.q_heads, wc.head_dim);
  sparse_out.fill_nan();
  dense_out.fill_nan();

  TensorView q = w.q(), k = w.k(), v = w.v(), os = sparse_out.view(), od = dense_out.view();
  DeviceBuffer qb, kb, vb, osb, odb;
  const bool on_device = exec.backend == Backend::cuda;
  if (on_device) {
    q = upload_tensor(q, qb);
    k = upload_tensor(k, kb);
    v = upload_tensor(v, vb);
    os = upload_tensor(os, osb);
    od = upload_tensor(od, odb);
    // One untimed pass of each so that module loading and first-touch costs stay out of the timings.
    sample_attention(q, k, v, os, nullptr, {}, config, exec);
    dense_attention(q, k, v, od, nullptr, {}, exec);
    device_sync();
  }

  std::printf("sampleattn demo: SYNTHETIC workload (generator, not model data): batch %lld, %lld tokens, %lld query "
              "heads, %lld KV heads, head_dim %lld, %s, seed %llu\n",
              static_cast<long long>(wc.batch), static_cast<long long>(wc.seq_k), static_cast<long long>(wc.q_heads),
              static_cast<long long>(wc.kv_heads), static_cast<long long>(wc.head_dim), to_string(wc.dtype),
              static_cast<unsigned long long>(wc.seed));
  const std::string device = on_device                         ? " (" + gpu_description() + ")"
                             : exec.backend == Backend::cpu ? std::string(" (") + cpu::fast::kernels().name + " kernels)"
                                                            : "";
  std::printf("backend %s%s; %s\n", to_string(exec.backend), device.c_str(), describe(config).c_str());
  std::fflush(stdout);

  const double t0 = now_seconds();
  const Selection sel = sample_attention(q, k, v, os, nullptr, {}, config, exec);
  device_sync();
  const double t1 = now_seconds();
  dense_attention(q, k, v, od, nullptr, {}, exec);
  device_sync();
  const double t2 = now_seconds();
  const double sparse_seconds = t1 - t0, dense_seconds = t2 - t1;

  if (on_device) {
    osb.download(sparse_out.data(), sparse_out.bytes());
    odb.download(dense_out.data(), dense_out.bytes());
  }
  const std::vector<std::int64_t> rows = metric_rows(sq, metric_count);
  const std::vector<HeadMetrics> metrics = exact_metrics(w.q(), w.k(), w.v(), sel, rows);

  std::printf("CRA, rel err: exact (fp64) against dense attention on %zu rows per head; out err: the backend's sparse "
              "output against its dense output, all rows\n\n",
              rows.size());
  std::printf("%5s %5s %3s  %-8s %10s %8s %9s %8s %9s %9s\n", "batch", "head", "kv", "profile", "kept cols",
              "density", "coverage", "CRA", "rel err", "out err");
  double worst_cra = 1.0, worst_err = 0.0, worst_out = 0.0;
  for (std::int64_t b = 0; b < wc.batch; ++b) {
    for (std::int64_t h = 0; h < wc.q_heads; ++h) {
      const std::int64_t bh = b * wc.q_heads + h;
      const HeadStats& s = sel.stats[bh];
      const HeadMetrics& m = metrics[bh];
      const double out_err = relative_error(sparse_out.view(), dense_out.view(), b, h);
      worst_cra = std::min(worst_cra, m.min_kept_mass);
      worst_err = std::max(worst_err, m.rel_error);
      worst_out = std::max(worst_out, out_err);
      std::printf("%5lld %5lld %3lld  %-8s %10lld %7.2f%% %9.4f %8.4f %9.2e %9.2e\n", static_cast<long long>(b),
                  static_cast<long long>(h), static_cast<long long>(h / (wc.q_heads / wc.kv_heads)),
                  w.profile(h).name.c_str(), static_cast<long long>(s.kept_columns), 100.0 * s.density,
                  s.sampled_coverage, m.min_kept_mass, m.rel_error, out_err);
    }
  }
  std::printf("\noverall: density %.2f%%, min sampled coverage %.4f, min CRA %.4f, max rel err %.2e, max out err "
              "%.2e\n",
              100.0 * sel.density(), sel.min_sampled_coverage(), worst_cra, worst_err, worst_out);
  std::printf("summary: sample attention (select + attend) %.3f s, dense attention %.3f s, speedup %.2fx "
              "[%s; workload generated in %.2f s]\n",
              sparse_seconds, dense_seconds, dense_seconds / sparse_seconds, to_string(exec.backend), gen_seconds);
  return 0;
}

}  // namespace sampleattn::cli
