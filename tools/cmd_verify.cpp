// sampleattn verify: the fast backends (cpu, and cuda when present) against the fp64 reference on fresh
// random cases. For each case and backend:
//   dense       dense_attention output and log-sum-exp within the dtype's tolerance of the reference's;
//   attend      attend() with the reference's selection, same tolerance;
//   select      the backend's kept columns equal the reference's, or differ only in columns that tie the alpha
//               cut within fp32 rounding (ref::columns_agree_up_to_ties);
//   end to end  sample_attention() output against the reference's attend() over the backend's selection.
// Prints one line per case; exits 1 when any check fails.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "common.h"
#include "core/half.h"
#include "core/schedule.h"
#include "core/tolerance.h"
#include "cpu/reference.h"
#include "device.h"
#include "sampleattn/api.h"
#include "sampleattn/error.h"

namespace sampleattn::cli {
namespace {

constexpr const char* kHelp = R"(usage: sampleattn verify [options]

Checks the fast backends against the fp64 CPU reference on random cases (shapes with Sk = 1, 17, 97, 300, 1025,
Sq < Sk, GQA 1/4/8, head_dim 64, 96, 128 and 256, float32 / float16 / bfloat16, causal and not): dense attention,
sparse attention on the reference's selection, the selection itself (equal up to rounding at the alpha
cut) and select + attend end to end. Exit code 1 on any mismatch.

options:
  --backend LIST   fast backends to check, comma-separated: cpu, cuda (default: cpu, and cuda when present)
  --cases N        random cases (12)
  --seed S         seed (default: from the clock; printed)
  --threads N      CPU threads (0 = all)
)";

struct Case {
  std::int64_t batch, sq, sk, hq, hkv, d;
  bool causal;
  DType dtype;
  SampleConfig config;
};

std::string describe_case(const Case& c) {
  char buf[200];
  std::snprintf(buf, sizeof(buf), "B%lld Sq%lld Sk%lld Hq%lld Hkv%lld d%lld %s %s alpha %.2f", (long long)c.batch,
                (long long)c.sq, (long long)c.sk, (long long)c.hq, (long long)c.hkv, (long long)c.d,
                c.causal ? "causal" : "non-causal", to_string(c.dtype), c.config.alpha);
  return buf;
}

Case random_case(std::mt19937_64& rng, int index, bool cuda_only_dims) {
  static const std::int64_t kSk[] = {1, 17, 97, 300, 1025};
  static const std::int64_t kGroup[] = {1, 4, 8};
  static const DType kTypes[] = {DType::bf16, DType::f16, DType::f32};
  static const std::int64_t kDims[] = {128, 64, 96, 256};
  Case c{};
  c.sk = kSk[index % 5];
  c.sq = (index % 3 == 1) ? 1 + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(c.sk)) : c.sk;
  c.hkv = 1 + static_cast<std::int64_t>(rng() % 2);
  c.hq = c.hkv * kGroup[index % 3];
  c.d = kDims[(index + index / 4) % 4];
  c.batch = c.sk <= 97 ? 2 : 1;
  c.causal = index % 4 != 3;
  c.dtype = kTypes[index % (cuda_only_dims ? 2 : 3)];
  c.config.alpha = (index % 5 == 4) ? 1.0 : 0.8 + 0.15 * static_cast<double>(rng() % 2);
  c.config.sample_ratio = (index % 2) ? 0.05 : 0.2;
  c.config.window_ratio = (index % 3 == 2) ? 0.0 : 0.08;
  c.config.min_window = (index % 3 == 2) ? 4 : 16;
  c.config.sink_tokens = index % 4;
  return c;
}

double max_abs(const TensorView& t) {
  double m = 0.0;
  const std::int64_t n = t.batch() * t.seq() * t.heads() * t.head_dim();
  for (std::int64_t i = 0; i < n; ++i) m = std::max(m, std::abs(static_cast<double>(core::load_element(t.data, t.dtype, i))));
  return m;
}

// max |a - b| over contiguous tensors of equal shape; infinity if anything is not finite.
double max_diff(const TensorView& a, const TensorView& b) {
  double m = 0.0;
  const std::int64_t n = a.batch() * a.seq() * a.heads() * a.head_dim();
  for (std::int64_t i = 0; i < n; ++i) {
    const double x = core::load_element(a.data, a.dtype, i), y = core::load_element(b.data, b.dtype, i);
    if (!std::isfinite(x) || !std::isfinite(y)) return INFINITY;
    m = std::max(m, std::abs(x - y));
  }
  return m;
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]));
  }
  return m;
}

struct Runner {
  Backend backend;
  int threads;

  // Runs `fn(q, k, v, out, lse)` with tensors placed for the backend; results come back to the host.
  template <typename Fn>
  void run(const TensorView& q, const TensorView& k, const TensorView& v, HostArray& out, std::vector<float>& lse,
           Fn fn) const {
    if (backend != Backend::cuda) {
      fn(q, k, v, out.view(), lse.data());
      return;
    }
    DeviceBuffer qb, kb, vb, ob, lb(lse.size() * sizeof(float));
    const TensorView od = upload_tensor(out.view(), ob);
    lb.upload(lse.data(), lse.size() * sizeof(float));
    fn(upload_tensor(q, qb), upload_tensor(k, kb), upload_tensor(v, vb), od, static_cast<float*>(lb.data()));
    device_sync();
    ob.download(out.data(), out.bytes());
    lb.download(lse.data(), lse.size() * sizeof(float));
  }
  ExecOptions exec() const {
    ExecOptions e;
    e.backend = backend;
    e.num_threads = threads;
    return e;
  }
};

HostArray random_tensor(std::mt19937_64& rng, DType dtype, std::int64_t b, std::int64_t s, std::int64_t h,
                        std::int64_t d) {
  HostArray t(dtype, b, s, h, d);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const std::int64_t n = b * s * h * d;
  for (std::int64_t i = 0; i < n; ++i) core::store_element(t.data(), dtype, i, dist(rng));
  return t;
}

}  // namespace

int verify_main(const std::vector<std::string>& argv) {
  const Args args("verify", argv, {{"backend", true}, {"cases", true}, {"seed", true}, {"threads", true}});
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  std::vector<std::string> fallback = {"cpu"};
  if (cuda_present()) fallback.push_back("cuda");
  const std::vector<std::string> names = args.words("backend", fallback, {"cpu", "cuda"});
  std::vector<Runner> runners;
  const int threads = static_cast<int>(args.integer("threads", 0, 0, 4096));
  for (const std::string& n : names) runners.push_back({parse_backend(n), threads});
  const std::int64_t cases = args.integer("cases", 12, 1, 100000);
  const std::uint64_t seed = static_cast<std::uint64_t>(
      args.integer("seed", static_cast<std::int64_t>(now_seconds() * 1e6) & INT64_MAX, 0, INT64_MAX));
  std::printf("sampleattn verify: %lld random cases, seed %llu\n", static_cast<long long>(cases),
              static_cast<unsigned long long>(seed));

  std::mt19937_64 rng(seed);
  const ExecOptions ref{Backend::cpu_reference};
  int failures = 0, checks = 0;
  for (std::int64_t i = 0; i < cases; ++i) {
    for (const Runner& runner : runners) {
      const bool cuda = runner.backend == Backend::cuda;
      Case c = random_case(rng, static_cast<int>(i), cuda);
      if (cuda && !cuda_supports(c.dtype, c.d)) {  // head_dim 256 on a GPU with less shared memory a block
        std::printf("cuda case %3lld  head_dim %lld has no kernel on this GPU: run at head_dim 128\n",
                    static_cast<long long>(i), static_cast<long long>(c.d));
        c.d = 128;
      }
      const HostArray qa = random_tensor(rng, c.dtype, c.batch, c.sq, c.hq, c.d);
      const HostArray ka = random_tensor(rng, c.dtype, c.batch, c.sk, c.hkv, c.d);
      const HostArray va = random_tensor(rng, c.dtype, c.batch, c.sk, c.hkv, c.d);
      const TensorView q = qa.view(), k = ka.view(), v = va.view();
      AttnParams params;
      params.causal = c.causal;
      const core::Tolerance tol = core::tolerance(c.dtype);
      const double vmax = std::max(1.0, max_abs(v));
      const std::size_t lse_size = static_cast<std::size_t>(c.batch * c.hq * c.sq);
      std::vector<std::string> problems;
      auto compare = [&](const char* what, const HostArray& out, const HostArray& ref_out,
                         const std::vector<float>& lse, const std::vector<float>& ref_lse) {
        ++checks;
        const double e_out = max_diff(out.view(), ref_out.view()) / vmax, e_lse = max_diff(lse, ref_lse);
        if (e_out > tol.out || e_lse > tol.lse) {
          char buf[200];
          std::snprintf(buf, sizeof(buf), "%s: output error %.3e (tolerance %.1e), lse error %.3e (tolerance %.1e)",
                        what, e_out, tol.out, e_lse, tol.lse);
          problems.push_back(buf);
        }
      };
      auto fresh = [&] {
        HostArray o(c.dtype, c.batch, c.sq, c.hq, c.d);
        o.fill_nan();
        return o;
      };
      std::vector<float> ref_lse(lse_size, NAN), lse(lse_size, NAN);
      HostArray ref_out = fresh(), out = fresh();

      // Dense.
      dense_attention(q, k, v, ref_out.view(), ref_lse.data(), params, ref);
      runner.run(q, k, v, out, lse, [&](auto qd, auto kd, auto vd, auto od, float* l) {
        dense_attention(qd, kd, vd, od, l, params, runner.exec());
      });
      compare("dense", out, ref_out, lse, ref_lse);

      // Attend on the reference's selection.
      const Selection ref_sel = select(q, k, params, c.config, ref);
      ref_out = fresh(), out = fresh();
      std::fill(ref_lse.begin(), ref_lse.end(), NAN);
      std::fill(lse.begin(), lse.end(), NAN);
      attend(q, k, v, ref_sel, ref_out.view(), ref_lse.data(), params, ref);
      runner.run(q, k, v, out, lse, [&](auto qd, auto kd, auto vd, auto od, float* l) {
        attend(qd, kd, vd, ref_sel, od, l, params, runner.exec());
      });
      compare("attend", out, ref_out, lse, ref_lse);

      // Select + attend end to end; the selection against the reference's.
      Selection sel;
      out = fresh();
      std::fill(lse.begin(), lse.end(), NAN);
      runner.run(q, k, v, out, lse, [&](auto qd, auto kd, auto vd, auto od, float* l) {
        sel = sample_attention(qd, kd, vd, od, l, params, c.config, runner.exec());
      });
      ++checks;
      const core::Problem problem = core::make_problem(q, k, nullptr, params);
      for (std::int64_t bh = 0; bh < c.batch * c.hq && sel.num_heads_total() == ref_sel.num_heads_total(); ++bh) {
        // fp32 sums (CUDA: in another order too) may break ties at the alpha cut differently.
        const std::string why = ref::columns_agree_up_to_ties(
            sel.columns(bh), ref_sel.columns(bh),
            ref::column_scores(problem, q, k, c.config.sample_ratio, bh / c.hq, bh % c.hq), c.config.alpha,
            cuda ? 1e-4 : 1e-5);
        if (!why.empty()) {
          problems.push_back("select, head " + std::to_string(bh) + ": " + why);
          break;
        }
        if (sel.window[bh] != ref_sel.window[bh]) {
          problems.push_back("select, head " + std::to_string(bh) + ": window " + std::to_string(sel.window[bh]) +
                             ", reference " + std::to_string(ref_sel.window[bh]));
          break;
        }
      }
      if (sel.num_heads_total() != ref_sel.num_heads_total()) problems.push_back("select: wrong number of heads");
      if (problems.empty()) {
        ref_out = fresh();
        std::fill(ref_lse.begin(), ref_lse.end(), NAN);
        attend(q, k, v, sel, ref_out.view(), ref_lse.data(), params, ref);
        compare("select + attend", out, ref_out, lse, ref_lse);
      }

      std::printf("%-4s case %3lld  %-58s %s\n", to_string(runner.backend), static_cast<long long>(i),
                  describe_case(c).c_str(), problems.empty() ? "ok" : "MISMATCH");
      for (const std::string& p : problems) std::printf("      %s\n", p.c_str());
      failures += problems.empty() ? 0 : 1;
    }
  }
  std::printf("verify: %d checks, %d case(s) with mismatches, seed %llu\n", checks, failures,
              static_cast<unsigned long long>(seed));
  return failures == 0 ? 0 : 1;
}

}  // namespace sampleattn::cli
