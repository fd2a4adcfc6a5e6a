// The per-row rounding check of a GPU attention output against the fp64 reference. A row's output
// o = sum_j p_j v_j / sum_j p_j carries two roundings in a 16-bit kernel: its own (at most u |o| per element)
// and that of P before the P V product (p_j (1 + d_j), |d_j| <= u, nearly independent of v), whose effect
// is at most u max|v| and typically u max|v| ||p||_2 / ||p||_1: the row's spread, 1 for a single key and
// 1 / sqrt(n) for n equal keys. The allowance per element is
//     u |ref| + 6 u max|v| spread + 1e-6 max|v|,
// which bounds the worst case wherever spread >= 1/6 and is ~10 standard deviations of the sum otherwise.
// The spread comes from two reference runs: lse at the scale s and lse2 at 2 s give
// spread = exp(lse2 / 2 - lse). Unlike a max-abs tolerance over max|v|, this follows the row: a uniform row
// over 4K keys (|o| ~ 0.02) is checked to ~1e-3 of max|v|, not to its whole size.
#pragma once

#include <vector>

#include "support/host_tensor.h"

namespace sampleattn::test {

// max over elements of |out - ref| / allowance (<= 1 passes); rows whose lse is -inf (nothing kept) are
// skipped here (their zero output is checked by max_abs_diff); +inf if out or ref holds a NaN or Inf. lse and lse2: contiguous [batch, heads, seq], the reference's at scale and 2 x scale.
double rounding_error_ratio(const HostTensor& out, const HostTensor& ref, const std::vector<float>& lse,
                            const std::vector<float>& lse2, double unit_roundoff, double vmax);

}  // namespace sampleattn::test
