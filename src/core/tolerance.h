// The one tolerance table (STYLE.md rule 4): per input dtype, the largest allowed max-abs error of an
// attention output against the fp64 reference, relative to max |v| (outputs are convex combinations of v
// rows), and of the log-sum-exp. f32: fp32 accumulation over up to 4K keys; f16 / bf16: the output is
// rounded once to the 16-bit format (2^-11, 2^-8 relative) plus fp32 accumulation and the rounding of P
// before the P V product on GPUs. `rounding` is the format's unit roundoff u, for the sharper per-row check of
// the GPU tests (tests/support/row_check.h), whose allowance follows each row's own output and spread.
#pragma once

#include "sampleattn/tensor.h"

namespace sampleattn::core {

struct Tolerance {
  double out;       // max |out - ref| / max |v|
  double lse;       // max |lse - ref_lse|
  double rounding;  // unit roundoff u of the format: 2^-24 (f32), 2^-11 (f16), 2^-8 (bf16)
};

inline Tolerance tolerance(DType dtype) {
  switch (dtype) {
    case DType::f32: return {2e-5, 2e-5, 0x1p-24};
    case DType::f16: return {2e-3, 1e-4, 0x1p-11};
    case DType::bf16: return {1.6e-2, 1e-4, 0x1p-8};
  }
  return {0.0, 0.0, 0.0};
}

}  // namespace sampleattn::core
