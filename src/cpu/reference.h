// CPU reference backend: plain loops, fp64 accumulation, exactly SPEC.md variant A (tie rule included).
// Written for reading, not for speed; every other backend is tested against it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
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
// Stage-1 column scores of (batch b, query head h) in fp64 (SPEC step 2): the sum over the sampled rows
// of each row's exact softmax probabilities.
std::vector<double> column_scores(const core::Problem& p, const TensorView& q, const TensorView& k,
                                  double sample_ratio, std::int64_t b, std::int64_t h);

// Empty when the columns `got` (sorted) may stand for the reference's `want`: equal, or differing only in
// columns whose fp64 score ties (within `rel` relative) a score at want's alpha cut, with a different count
// only where the running sum meets alpha * total within `rel`. Otherwise, what is wrong. Backends that sum
// scores in fp32 (rel ~1e-5) or in another order may legitimately break such ties differently.
std::string columns_agree_up_to_ties(std::span<const std::int32_t> got, std::span<const std::int32_t> want,
                                     const std::vector<double>& scores, double alpha, double rel);

std::vector<HeadMetrics> metrics(const core::Problem& p, const TensorView& q, const TensorView& k,
                                 const TensorView& v, const Selection& selection,
                                 const std::vector<std::int64_t>& rows);

}  // namespace sampleattn::ref
