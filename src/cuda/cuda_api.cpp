// The public no-allocation CUDA API (include/sampleattn/cuda.h): host-side validation, then the workspace
// sequence of workspace.h on the caller's stream.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

#include "core/problem.h"
#include "core/varlen.h"
#include "cuda/backend.h"
#include "cuda/workspace.h"
#include "sampleattn/cuda.h"
#include "sampleattn/error.h"

namespace sampleattn::cuda {
namespace {

// Every argument check, before anything is enqueued.
SelectPlan plan_for(const TensorView& q, const TensorView& k, const TensorView* v, const TensorView* out,
                    const float* lse, const AttnParams& params, const SampleConfig& config) {
  const core::Problem p = core::make_problem(q, k, v, params);
  core::check_config(config);
  SA_CHECK(q.device == Device::cuda, "q.device is ", to_string(q.device), ", sampleattn::cuda needs cuda tensors");
  if (out != nullptr) core::check_output(p, q, k, v, *out, lse);
  check_device_inputs(p, q, k, v, out, lse);
  return make_plan(p, config);
}

// The workspace and the stream must belong to the call's device.
void check_workspace_and_stream(const void* workspace, void* stream) {
  SA_CHECK(workspace != nullptr, "workspace is null");
  check_device_memory(workspace, "workspace");
  check_stream(stream);
}

// The workspace is written by every stage: it must not overlap a tensor the call reads or writes.
void check_workspace_apart(const void* workspace, std::size_t bytes, const core::Problem& p,
                           std::initializer_list<std::pair<const char*, const TensorView*>> views, const float* lse) {
  const auto lo = reinterpret_cast<std::uintptr_t>(workspace), hi = lo + bytes;
  auto apart = [&](const char* name, const TensorView& t) {
    const core::ByteSpan s = core::byte_span(t);
    SA_CHECK(s.hi <= lo || hi <= s.lo, "workspace (", workspace, ", ", bytes, " bytes) overlaps ", name, " (",
             t.data, ")");
  };
  for (const auto& [name, t] : views) {
    if (t != nullptr) apart(name, *t);
  }
  if (lse != nullptr) apart("lse", core::lse_view(p, lse, Device::cuda));
}

}  // namespace

std::size_t sample_attention_workspace_size(const TensorView& q, const TensorView& k, const AttnParams& params,
                                            const SampleConfig& config) {
  return workspace_layout(plan_for(q, k, nullptr, nullptr, nullptr, params, config)).bytes;
}

void sample_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out, float* lse,
                      const AttnParams& params, const SampleConfig& config, void* workspace,
                      std::size_t workspace_bytes, void* stream) {
  const SelectPlan plan = plan_for(q, k, &v, &out, lse, params, config);
  check_workspace_and_stream(workspace, stream);
  const Workspace ws = carve_workspace(workspace, workspace_bytes, workspace_layout(plan));
  check_workspace_apart(workspace, workspace_bytes, plan.problem, {{"q", &q}, {"k", &k}, {"v", &v}, {"out", &out}},
                        lse);
  run_selection(plan, q, k, ws, stream);
  run_sparse_attention(plan, q, k, v, out, lse, ws, stream);
}

void select_to_workspace(const TensorView& q, const TensorView& k, const AttnParams& params, const SampleConfig& config,
                         void* workspace, std::size_t workspace_bytes, void* stream) {
  const SelectPlan plan = plan_for(q, k, nullptr, nullptr, nullptr, params, config);
  check_workspace_and_stream(workspace, stream);
  const Workspace ws = carve_workspace(workspace, workspace_bytes, workspace_layout(plan));
  check_workspace_apart(workspace, workspace_bytes, plan.problem, {{"q", &q}, {"k", &k}}, nullptr);
  run_selection(plan, q, k, ws, stream);
}

Selection selection_from_workspace(const TensorView& q, const TensorView& k, const AttnParams& params,
                                   const SampleConfig& config, const void* workspace, std::size_t workspace_bytes,
                                   void* stream) {
  const SelectPlan plan = plan_for(q, k, nullptr, nullptr, nullptr, params, config);
  check_workspace_and_stream(workspace, stream);
  const Workspace ws = carve_workspace(const_cast<void*>(workspace), workspace_bytes, workspace_layout(plan));
  return download_selection(plan, ws, stream);
}

std::size_t sample_attention_varlen_workspace_size(const TensorView& q, const TensorView& k,
                                                   const std::vector<std::int64_t>& cu_seqlens_q,
                                                   const std::vector<std::int64_t>& cu_seqlens_k,
                                                   const AttnParams& params, const SampleConfig& config) {
  const std::vector<core::PackedSequence> seqs = core::packed_sequences(q, k, cu_seqlens_q, cu_seqlens_k);
  if (q.seq() == 0) return 0;
  core::make_problem(q, k, nullptr, params);  // the packed views are valid before any row range is formed
  core::check_config(config);
  std::size_t bytes = 0;
  for (const core::PackedSequence& s : seqs) {
    if (s.q_len == 0) continue;
    bytes = std::max(bytes, sample_attention_workspace_size(core::row_range(q, s.q_begin, s.q_len),
                                                            core::row_range(k, s.k_begin, s.k_len), params, config));
  }
  return bytes;
}

void sample_attention_varlen(const TensorView& q, const TensorView& k, const TensorView& v,
                             const std::vector<std::int64_t>& cu_seqlens_q,
                             const std::vector<std::int64_t>& cu_seqlens_k, const TensorView& out, float* lse,
                             const AttnParams& params, const SampleConfig& config, void* workspace,
                             std::size_t workspace_bytes, void* stream) {
  const std::vector<core::PackedSequence> seqs = core::packed_sequences(q, k, cu_seqlens_q, cu_seqlens_k);
  if (q.seq() == 0) return;  // no sequence has queries
  // The packed views as one problem (shapes, dtypes, out and lse apart from the inputs, device pointers), the
  // workspace apart from all of them, then every sequence's plan and workspace fit: nothing is enqueued unless
  // every sequence can run.
  const core::Problem p = core::make_problem(q, k, &v, params);
  core::check_config(config);
  SA_CHECK(q.device == Device::cuda, "q.device is ", to_string(q.device), ", sampleattn::cuda needs cuda tensors");
  core::check_output(p, q, k, &v, out, lse);
  check_device_inputs(p, q, k, &v, &out, lse);
  check_workspace_and_stream(workspace, stream);
  check_workspace_apart(workspace, workspace_bytes, p, {{"q", &q}, {"k", &k}, {"v", &v}, {"out", &out}}, lse);
  struct Run {
    TensorView q, k, v, out;
    float* lse;
    SelectPlan plan;
    Workspace ws;
  };
  std::vector<Run> runs;
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    const core::PackedSequence& s = seqs[i];
    if (s.q_len == 0) continue;
    Run r{core::row_range(q, s.q_begin, s.q_len), core::row_range(k, s.k_begin, s.k_len),
          core::row_range(v, s.k_begin, s.k_len), core::row_range(out, s.q_begin, s.q_len),
          lse != nullptr ? lse + q.heads() * s.q_begin : nullptr, {}, {}};
    r.plan = plan_for(r.q, r.k, &r.v, &r.out, r.lse, params, config);
    const WorkspaceLayout layout = workspace_layout(r.plan);
    SA_CHECK(layout.bytes <= workspace_bytes, "sequence ", i, " needs ", layout.bytes, " bytes of workspace, but ",
             workspace_bytes, " were given (sample_attention_varlen_workspace_size)");
    r.ws = carve_workspace(workspace, workspace_bytes, layout);
    runs.push_back(r);
  }
  for (const Run& r : runs) {
    run_selection(r.plan, r.q, r.k, r.ws, stream);
    run_sparse_attention(r.plan, r.q, r.k, r.v, r.out, r.lse, r.ws, stream);
  }
}

}  // namespace sampleattn::cuda
