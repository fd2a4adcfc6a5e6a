// Fast CPU backend: all cores, tiled, vectorized, fp32 accumulation; bf16/fp16/f32 inputs.
// Sparse cost follows the kept entries. Same contract as the reference (reference.h).
#pragma once

#include "core/problem.h"
#include "sampleattn/selection.h"

namespace sampleattn::cpu {

Selection select(const core::Problem& p, const TensorView& q, const TensorView& k, const SampleConfig& config,
                 int num_threads);
void attend(const core::Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
            const Selection& selection, const TensorView& out, float* lse, int num_threads);
void dense(const core::Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
           const TensorView& out, float* lse, int num_threads);
// Throws sampleattn::Error when SAMPLEATTN_CPU_KERNELS names no kernel set (see fast_kernels.h); called with
// the other input checks, before anything is written.
void check_kernel_choice();

}  // namespace sampleattn::cpu
