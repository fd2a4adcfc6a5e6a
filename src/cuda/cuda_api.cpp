// The public no-allocation CUDA API (include/sampleattn/cuda.h): host-side validation, then the workspace
// sequence of workspace.h on the caller's stream.
#include "core/problem.h"
#include "cuda/backend.h"
#include "cuda/workspace.h"
#include "sampleattn/cuda.h"
#include "sampleattn/error.h"

namespace sampleattn::cuda {
namespace {

// Every check, before anything is enqueued (the workspace of a failed call stays as it was).
SelectPlan plan_for(const TensorView& q, const TensorView& k, const TensorView* v, const TensorView* out,
                    const AttnParams& params, const SampleConfig& config) {
  const core::Problem p = core::make_problem(q, k, v, params);
  core::check_config(config);
  SA_CHECK(q.device == Device::cuda, "q.device is ", to_string(q.device), ", sampleattn::cuda needs cuda tensors");
  if (out != nullptr) core::check_output(p, q, *out);
  check_device_inputs(p, q, k, v, out);
  return make_plan(p, config);
}

}  // namespace

std::size_t sample_attention_workspace_size(const TensorView& q, const TensorView& k, const AttnParams& params,
                                            const SampleConfig& config) {
  return workspace_layout(plan_for(q, k, nullptr, nullptr, params, config)).bytes;
}

void sample_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out, float* lse,
                      const AttnParams& params, const SampleConfig& config, void* workspace,
                      std::size_t workspace_bytes, void* stream) {
  const SelectPlan plan = plan_for(q, k, &v, &out, params, config);
  const Workspace ws = carve_workspace(workspace, workspace_bytes, workspace_layout(plan));
  run_selection(plan, q, k, ws, stream);
  run_sparse_attention(plan, q, k, v, out, lse, ws, stream);
}

void select_to_workspace(const TensorView& q, const TensorView& k, const AttnParams& params, const SampleConfig& config,
                         void* workspace, std::size_t workspace_bytes, void* stream) {
  const SelectPlan plan = plan_for(q, k, nullptr, nullptr, params, config);
  const Workspace ws = carve_workspace(workspace, workspace_bytes, workspace_layout(plan));
  run_selection(plan, q, k, ws, stream);
}

Selection selection_from_workspace(const TensorView& q, const TensorView& k, const AttnParams& params,
                                   const SampleConfig& config, const void* workspace, std::size_t workspace_bytes,
                                   void* stream) {
  const SelectPlan plan = plan_for(q, k, nullptr, nullptr, params, config);
  const Workspace ws = carve_workspace(const_cast<void*>(workspace), workspace_bytes, workspace_layout(plan));
  return download_selection(plan, ws, stream);
}

}  // namespace sampleattn::cuda
