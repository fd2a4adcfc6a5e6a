// sampleattn run: SampleAttention (or dense attention) on the user's own .npy tensors.
//   q [batch, seq_q, q_heads, d], k and v [batch, seq_k, kv_heads, d]; float32, float16, or uint16 holding
//   bfloat16 with --bf16. Writes out [batch, seq_q, q_heads, d] in the input dtype, optionally the float32
//   log-sum-exp [batch, q_heads, seq_q] and the selection as JSON.
#include <cstdio>

#include "common.h"
#include "core/npy.h"
#include "core/problem.h"
#include "core/selection_json.h"
#include "device.h"
#include "sampleattn/api.h"
#include "sampleattn/error.h"

namespace sampleattn::cli {
namespace {

constexpr const char* kHelp = R"(usage: sampleattn run --q Q.npy --k K.npy --v V.npy --out O.npy [options]

Runs SampleAttention (select + sparse attention) on your tensors, or dense attention with --dense.
Tensors are .npy files in [batch, seq, heads, head_dim] layout, C order: float32 ('<f4'), float16 ('<f2'),
or bfloat16 stored as uint16 ('<u2') with --bf16. q may be shorter than k (chunked prefill: its rows are the
last q positions). Inputs holding NaN or Inf are rejected.

options:
  --out O.npy             output [batch, seq_q, q_heads, head_dim], the inputs' dtype (required)
  --lse LSE.npy           also write the log-sum-exp of each row, float32 [batch, q_heads, seq_q]
  --selection SEL.json    write the selection: per (batch, head) the window, kept key indices and stats
  --use-selection S.json  attend with a selection saved earlier instead of selecting again
  --alpha A               sampled attention mass the kept columns must reach, in (0, 1] (0.95)
  --sample-ratio R        fraction of query rows sampled, in (0, 1] (0.05)
  --window-ratio W        local window as a fraction of seq_k, in [0, 1] (0.08)
  --min-window N          smallest window (64)
  --sink-tokens N         always keep the first N keys (0)
  --dense-tail N          the last N query rows attend to every visible key (0)
  --dense-head-density F  a head whose mask keeps at least F of its entries keeps every column (runs dense),
                          in (0, 1] (1: off, the paper's method)
  --backend B             auto, cpu, cpu-ref (the fp64 reference), cuda (auto: cuda when present)
  --dense                 dense attention instead of SampleAttention
  --non-causal            every query sees every key (default: causal)
  --scale S               softmax scale (default 1/sqrt(head_dim))
  --bf16                  read uint16 arrays as bfloat16 (and write the output as uint16)
  --threads N             CPU threads (0 = all)
)";

std::vector<OptionSpec> options() {
  std::vector<OptionSpec> o = {{"q", true},       {"k", true},        {"v", true},          {"out", true},
                               {"lse", true},     {"selection", true}, {"use-selection", true}, {"backend", true},
                               {"dense", false},  {"non-causal", false}, {"scale", true},     {"bf16", false},
                               {"threads", true}};
  for (const OptionSpec& s : config_options()) o.push_back(s);
  return o;
}

}  // namespace

int run_main(const std::vector<std::string>& argv) {
  const Args args("run", argv, options());
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  const std::string q_path = args.required("q"), k_path = args.required("k"), v_path = args.required("v");
  const std::string out_path = args.required("out");
  const bool dense = args.has("dense");
  SA_CHECK(!(dense && (args.has("selection") || args.has("use-selection"))),
           "--dense computes no selection: drop --selection / --use-selection, or drop --dense");
  if (dense || args.has("use-selection")) {
    // These settings only shape a selection made here: say so rather than ignore them.
    for (const OptionSpec& o : config_options()) {
      SA_CHECK(!args.has(o.name), "--", o.name, " only applies when run selects: drop it, or drop ",
               dense ? "--dense" : "--use-selection");
    }
  }
  const SampleConfig config = config_from(args);
  AttnParams params;
  params.causal = !args.has("non-causal");
  // [2^-126, 1e30]: a positive normal float32.
  if (args.has("scale")) params.scale = static_cast<float>(args.real("scale", 1.0, 1.1754943508222875e-38, 1e30));
  ExecOptions exec;
  exec.backend = parse_backend(args.text("backend", "auto"));
  exec.num_threads = static_cast<int>(args.integer("threads", 0, 0, 4096));
  const bool bf16 = args.has("bf16");

  const io::NpyArray qa = io::read_npy(q_path, bf16), ka = io::read_npy(k_path, bf16), va = io::read_npy(v_path, bf16);
  const TensorView q = qa.view4d("--q " + q_path), k = ka.view4d("--k " + k_path), v = va.view4d("--v " + v_path);
  // Shapes, dtypes and finiteness are checked on the host before anything is allocated or uploaded.
  const core::Problem p = core::make_problem(q, k, &v, params);
  core::check_host_inputs(p, q, k, &v);

  Selection loaded;
  if (args.has("use-selection")) {
    const std::string path = args.text("use-selection", "");
    loaded = io::read_selection_json(path);
    SA_CHECK(loaded.batch == p.batch && loaded.heads == p.q_heads && loaded.seq_q == p.seq_q &&
                 loaded.seq_k == p.seq_k,
             "--use-selection ", path, ": its shape (batch ", loaded.batch, ", heads ", loaded.heads, ", seq_q ",
             loaded.seq_q, ", seq_k ", loaded.seq_k, ") does not match the tensors (batch ", p.batch, ", heads ",
             p.q_heads, ", seq_q ", p.seq_q, ", seq_k ", p.seq_k, ")");
    SA_CHECK(loaded.causal == p.causal, "--use-selection ", path, " was made ", loaded.causal ? "causal" : "non-causal",
             ": run with", loaded.causal ? "out" : "", " --non-causal to use it");
  }

  HostArray out(q.dtype, p.batch, p.seq_q, p.q_heads, p.head_dim);
  std::vector<float> lse(args.has("lse") ? static_cast<std::size_t>(p.batch * p.q_heads * p.seq_q) : 0);
  float* lse_ptr = lse.empty() ? nullptr : lse.data();

  TensorView qd = q, kd = k, vd = v, od = out.view();
  DeviceBuffer qb, kb, vb, ob, lb;
  if (exec.backend == Backend::cuda) {
    qd = upload_tensor(q, qb);
    kd = upload_tensor(k, kb);
    vd = upload_tensor(v, vb);
    od = upload_tensor(out.view(), ob);
    if (lse_ptr != nullptr) {
      lb = DeviceBuffer(lse.size() * sizeof(float));
      lse_ptr = static_cast<float*>(lb.data());
    }
  }

  Selection sel;
  const double t0 = now_seconds();
  if (dense) {
    dense_attention(qd, kd, vd, od, lse_ptr, params, exec);
  } else if (args.has("use-selection")) {
    sel = std::move(loaded);
    attend(qd, kd, vd, sel, od, lse_ptr, params, exec);
  } else {
    sel = sample_attention(qd, kd, vd, od, lse_ptr, params, config, exec);
  }
  device_sync();
  const double seconds = now_seconds() - t0;

  if (exec.backend == Backend::cuda) {
    ob.download(out.data(), out.bytes());
    if (!lse.empty()) lb.download(lse.data(), lse.size() * sizeof(float));
  }
  io::write_npy(out_path, q.dtype, out.shape(), out.data());
  if (!lse.empty()) io::write_npy(args.text("lse", ""), DType::f32, {p.batch, p.q_heads, p.seq_q}, lse.data());
  if (args.has("selection")) io::write_selection_json(args.text("selection", ""), sel);

  std::printf("sampleattn run: %s attention, backend %s, q %s, k %s, %s: %.3f ms", dense ? "dense" : "sample",
              to_string(exec.backend), io::shape_string(qa.shape).c_str(), io::shape_string(ka.shape).c_str(),
              to_string(q.dtype), 1e3 * seconds);
  if (!dense) std::printf(", density %.4f, min sampled coverage %.4f", sel.density(), sel.min_sampled_coverage());
  std::printf("\n");
  return 0;
}

}  // namespace sampleattn::cli
