// Public API: validation, then dispatch to the reference, fast CPU or CUDA backend.
#include "sampleattn/api.h"

#include <algorithm>
#include <functional>

#include "core/problem.h"
#include "core/varlen.h"
#include "cpu/fast.h"
#include "cpu/fast_parallel.h"
#include "cpu/reference.h"
#include "sampleattn/error.h"
#ifdef SAMPLEATTN_WITH_CUDA
#include "cuda/backend.h"
#endif

namespace sampleattn {
namespace {

using core::Problem;

constexpr int kMaxThreads = 4096;

Backend resolve(const ExecOptions& options, const TensorView& q) {
  Backend b = options.backend;
  if (b == Backend::automatic) b = q.device == Device::cuda ? Backend::cuda : Backend::cpu;
  if (b == Backend::cuda) {
#ifdef SAMPLEATTN_WITH_CUDA
    SA_CHECK(q.device == Device::cuda, "backend cuda needs CUDA tensors, but q.device is ", to_string(q.device));
    SA_CHECK(cuda::available(), "backend cuda: no CUDA device is available");
#else
    detail::fail("backend cuda: this build of sampleattn has no CUDA backend");
#endif
  } else {
    SA_CHECK(q.device == Device::cpu, "backend ", to_string(b), " needs host tensors, but q.device is ",
             to_string(q.device));
  }
  SA_CHECK(options.num_threads >= 0 && options.num_threads <= kMaxThreads, "options.num_threads (",
           options.num_threads, ") must be in [0, ", kMaxThreads, "] (0 = all hardware threads)");
  return b;
}

void check_inputs(Backend b, const Problem& p, const TensorView& q, const TensorView& k, const TensorView* v,
                  [[maybe_unused]] const TensorView* out, [[maybe_unused]] const float* lse,
                  [[maybe_unused]] const ExecOptions& options) {
  if (b == Backend::cuda) {
#ifdef SAMPLEATTN_WITH_CUDA
    cuda::check_device_inputs(p, q, k, v, out, lse);
    cuda::check_stream(options.cuda_stream);
#endif
    return;
  }
  SA_CHECK(p.head_dim <= 256, "q.head_dim (", p.head_dim, ") must be <= 256 on the CPU backends");
  if (b == Backend::cpu) {  // the scan on the fast backend's threads; the reference stays on one
    const int threads = cpu::fast::resolve_threads(options.num_threads);
    core::check_host_inputs(p, q, k, v, [threads](std::int64_t n, const std::function<void(std::int64_t)>& body) {
      cpu::fast::parallel_for(n, threads, [&body](std::int64_t i, int) { body(i); });
    });
  } else {
    core::check_host_inputs(p, q, k, v);
  }
  if (b == Backend::cpu) cpu::check_kernel_choice();
}

void check_selection(const Problem& p, const Selection& selection) {
  selection.validate();
  SA_CHECK(selection.batch == p.batch && selection.heads == p.q_heads && selection.seq_q == p.seq_q &&
               selection.seq_k == p.seq_k,
           "selection shape (batch ", selection.batch, ", heads ", selection.heads, ", seq_q ", selection.seq_q,
           ", seq_k ", selection.seq_k, ") does not match the inputs (batch ", p.batch, ", heads ", p.q_heads,
           ", seq_q ", p.seq_q, ", seq_k ", p.seq_k, ")");
  SA_CHECK(selection.causal == p.causal, "selection.causal (", selection.causal, ") must equal params.causal (",
           p.causal, ")");
}

}  // namespace

Selection select(const TensorView& q, const TensorView& k, const AttnParams& params, const SampleConfig& config,
                 const ExecOptions& options) {
  const Problem p = core::make_problem(q, k, nullptr, params);
  core::check_config(config);
  const Backend b = resolve(options, q);
  check_inputs(b, p, q, k, nullptr, nullptr, nullptr, options);
  switch (b) {
    case Backend::cpu_reference: return ref::select(p, q, k, config);
#ifdef SAMPLEATTN_WITH_CUDA
    case Backend::cuda: return cuda::select(p, q, k, config, options.cuda_stream);
#endif
    default: return cpu::select(p, q, k, config, options.num_threads);
  }
}

void attend(const TensorView& q, const TensorView& k, const TensorView& v, const Selection& selection,
            const TensorView& out, float* lse, const AttnParams& params, const ExecOptions& options) {
  const Problem p = core::make_problem(q, k, &v, params);
  core::check_output(p, q, k, &v, out, lse);
  check_selection(p, selection);
  const Backend b = resolve(options, q);
  check_inputs(b, p, q, k, &v, &out, lse, options);
  switch (b) {
    case Backend::cpu_reference: ref::attend(p, q, k, v, selection, out, lse); break;
#ifdef SAMPLEATTN_WITH_CUDA
    case Backend::cuda: cuda::attend(p, q, k, v, selection, out, lse, options.cuda_stream); break;
#endif
    default: cpu::attend(p, q, k, v, selection, out, lse, options.num_threads); break;
  }
}

void window_attention(const TensorView& q, const TensorView& k, const TensorView& v, std::int64_t window,
                      const TensorView& out, float* lse, const AttnParams& params, const ExecOptions& options) {
  const Problem p = core::make_problem(q, k, &v, params);
  core::check_output(p, q, k, &v, out, lse);
  SA_CHECK(window >= 1, "window_attention: window (", window, ") must be >= 1: the diagonal is kept");
  const Backend b = resolve(options, q);
  check_inputs(b, p, q, k, &v, &out, lse, options);
#ifdef SAMPLEATTN_WITH_CUDA
  if (b == Backend::cuda) return cuda::attend_window(p, q, k, v, window, out, lse, options.cuda_stream);
#endif
  Selection s;
  s.batch = p.batch;
  s.heads = p.q_heads;
  s.seq_q = p.seq_q;
  s.seq_k = p.seq_k;
  s.causal = p.causal;
  s.window.assign(static_cast<std::size_t>(p.batch * p.q_heads), std::min(window, p.seq_k));
  s.offsets.assign(static_cast<std::size_t>(p.batch * p.q_heads + 1), 0);
  if (b == Backend::cpu_reference) {
    ref::attend(p, q, k, v, s, out, lse);
  } else {
    cpu::attend(p, q, k, v, s, out, lse, options.num_threads);
  }
}

Selection sample_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                           float* lse, const AttnParams& params, const SampleConfig& config,
                           const ExecOptions& options) {
  const Problem p = core::make_problem(q, k, &v, params);
  core::check_output(p, q, k, &v, out, lse);
  core::check_config(config);
  const Backend b = resolve(options, q);
  check_inputs(b, p, q, k, &v, &out, lse, options);
  switch (b) {
    case Backend::cpu_reference: {
      Selection s = ref::select(p, q, k, config);
      ref::attend(p, q, k, v, s, out, lse);
      return s;
    }
#ifdef SAMPLEATTN_WITH_CUDA
    case Backend::cuda: {
      Selection s;
      cuda::sample_attention(p, q, k, v, out, lse, config, options.cuda_stream, &s);
      return s;
    }
#endif
    default: {
      Selection s = cpu::select(p, q, k, config, options.num_threads);
      cpu::attend(p, q, k, v, s, out, lse, options.num_threads);
      return s;
    }
  }
}

void dense_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                     float* lse, const AttnParams& params, const ExecOptions& options) {
  const Problem p = core::make_problem(q, k, &v, params);
  core::check_output(p, q, k, &v, out, lse);
  const Backend b = resolve(options, q);
  check_inputs(b, p, q, k, &v, &out, lse, options);
  switch (b) {
    case Backend::cpu_reference: ref::dense(p, q, k, v, out, lse); break;
#ifdef SAMPLEATTN_WITH_CUDA
    case Backend::cuda: cuda::dense(p, q, k, v, out, lse, options.cuda_stream); break;
#endif
    default: cpu::dense(p, q, k, v, out, lse, options.num_threads); break;
  }
}

namespace {

// The sequences of a packed batch, after every check of the packed views as one problem (shapes, dtypes, out
// and lse apart from the inputs, the backend's input checks): no sequence runs unless all of them can.
std::vector<core::PackedSequence> checked_sequences(const TensorView& q, const TensorView& k, const TensorView& v,
                                                    const std::vector<std::int64_t>& cu_seqlens_q,
                                                    const std::vector<std::int64_t>& cu_seqlens_k,
                                                    const TensorView& out, const float* lse, const AttnParams& params,
                                                    const ExecOptions& options) {
  std::vector<core::PackedSequence> seqs = core::packed_sequences(q, k, cu_seqlens_q, cu_seqlens_k);
  if (q.seq() == 0) return seqs;  // no sequence has queries: nothing runs, nothing is written
  const Problem p = core::make_problem(q, k, &v, params);
  core::check_output(p, q, k, &v, out, lse);
  check_inputs(resolve(options, q), p, q, k, &v, &out, lse, options);
  return seqs;
}

}  // namespace

std::vector<Selection> sample_attention_varlen(const TensorView& q, const TensorView& k, const TensorView& v,
                                               const std::vector<std::int64_t>& cu_seqlens_q,
                                               const std::vector<std::int64_t>& cu_seqlens_k, const TensorView& out,
                                               float* lse, const AttnParams& params, const SampleConfig& config,
                                               const ExecOptions& options) {
  core::check_config(config);
  const auto seqs = checked_sequences(q, k, v, cu_seqlens_q, cu_seqlens_k, out, lse, params, options);
  std::vector<Selection> result(seqs.size());
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    const core::PackedSequence& s = seqs[i];
    if (s.q_len == 0) continue;
    result[i] = sample_attention(core::row_range(q, s.q_begin, s.q_len), core::row_range(k, s.k_begin, s.k_len),
                                 core::row_range(v, s.k_begin, s.k_len), core::row_range(out, s.q_begin, s.q_len),
                                 lse != nullptr ? lse + q.heads() * s.q_begin : nullptr, params, config, options);
  }
  return result;
}

void dense_attention_varlen(const TensorView& q, const TensorView& k, const TensorView& v,
                            const std::vector<std::int64_t>& cu_seqlens_q, const std::vector<std::int64_t>& cu_seqlens_k,
                            const TensorView& out, float* lse, const AttnParams& params, const ExecOptions& options) {
  for (const core::PackedSequence& s : checked_sequences(q, k, v, cu_seqlens_q, cu_seqlens_k, out, lse, params,
                                                         options)) {
    if (s.q_len == 0) continue;
    dense_attention(core::row_range(q, s.q_begin, s.q_len), core::row_range(k, s.k_begin, s.k_len),
                    core::row_range(v, s.k_begin, s.k_len), core::row_range(out, s.q_begin, s.q_len),
                    lse != nullptr ? lse + q.heads() * s.q_begin : nullptr, params, options);
  }
}

std::vector<HeadMetrics> exact_metrics(const TensorView& q, const TensorView& k, const TensorView& v,
                                       const Selection& selection, const std::vector<std::int64_t>& rows,
                                       const AttnParams& params) {
  const Problem p = core::make_problem(q, k, &v, params);
  SA_CHECK(q.device == Device::cpu, "exact_metrics needs host tensors, but q.device is ", to_string(q.device));
  core::check_host_inputs(p, q, k, &v);
  check_selection(p, selection);
  SA_CHECK(!rows.empty(), "exact_metrics: rows is empty (metric_rows(seq_q, n) gives n of them)");
  for (std::int64_t r : rows) {
    SA_CHECK(r >= 0 && r < p.seq_q, "exact_metrics: row (", r, ") must be in [0, ", p.seq_q, ")");
  }
  return ref::metrics(p, q, k, v, selection, rows);
}

std::vector<std::int64_t> metric_rows(std::int64_t seq_q, std::int64_t n) {
  SA_CHECK(seq_q > 0 && n > 0, "metric_rows: seq_q (", seq_q, ") and n (", n, ") must be > 0");
  const std::int64_t count = std::min(n, seq_q);
  std::vector<std::int64_t> rows(static_cast<std::size_t>(count));
  // (i + 1) * seq_q / count - 1 without the product overflowing: seq_q = a * count + b.
  const std::int64_t a = seq_q / count, b = seq_q % count;
  for (std::int64_t i = 0; i < count; ++i) rows[i] = (i + 1) * a + (i + 1) * b / count - 1;
  return rows;
}

}  // namespace sampleattn
