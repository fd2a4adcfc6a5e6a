// What the x86 kernel sets of the fast CPU backend share (fast_kernels_avx2.cpp, fast_kernels_avx512.cpp): the
// exp2 polynomial, so that both compute 2^x with the same operations, and the 8-vector horizontal sum.
// Include only where the compiler targets x86 with GCC-style target attributes.
#pragma once

#include <immintrin.h>

namespace sampleattn::cpu::fast {

// 2^f for |f| <= 1/2: the degree-6 Taylor polynomial's coefficients, highest degree first, evaluated by Horner
// steps (relative error < 3e-7, measured). The exp2 kernels take x = n + f, n = round(x), and write n + 127
// into the exponent field for 2^n.
inline constexpr float kExp2Poly[7] = {1.5403530393381606e-4f, 1.3333558146428443e-3f, 9.6181291076284772e-3f,
                                       5.5504108664821580e-2f, 2.4022650695910071e-1f, 6.9314718055994531e-1f,
                                       1.0f};

// Sums of each of 8 vectors, as one vector: result[k] = sum of the lanes of x[k].
__attribute__((target("avx2,fma"))) inline __m256 hsum8(const __m256* x) {
  const __m256 t0 = _mm256_hadd_ps(x[0], x[1]);
  const __m256 t1 = _mm256_hadd_ps(x[2], x[3]);
  const __m256 t2 = _mm256_hadd_ps(x[4], x[5]);
  const __m256 t3 = _mm256_hadd_ps(x[6], x[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1);  // lanes: x0..x3 low halves | x0..x3 high halves
  const __m256 u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

}  // namespace sampleattn::cpu::fast
