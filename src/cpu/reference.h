// CPU reference backend: plain loops, fp64 accumulation, exactly SPEC.md variant A (tie rule included).
// Written for reading, not for speed; every other backend is tested against it.
#pragma once

#include <cstdint>
#include <vector>

#include "core/problem.h"
#include "sampleattn/api.h"
#include "sampleattn/selection.h"

namespace sampleattn::ref {

Selection select(const core::Problem& p, const TensorView& q, const TensorView& k, const SampleConfig& config);
void attend(const core::Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
            const Selection& selection, const TensorView& out, float* lse);
void dense(const core::Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
           const TensorView& out, float* lse);
std::vector<HeadMetrics> metrics(const core::Problem& p, const TensorView& q, const TensorView& k,
                                 const TensorView& v, const Selection& selection,
                                 const std::vector<std::int64_t>& rows);

}  // namespace sampleattn::ref
