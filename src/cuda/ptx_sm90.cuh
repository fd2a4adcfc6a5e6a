// Thin wrappers over the sm_90a PTX of the Hopper kernels: wgmma (warpgroup matrix product, A from
// registers, B from shared memory through a matrix descriptor, fp32 accumulators) and the fences around it.
// Compiled only for sm_90a (the callers guard their bodies with SAMPLEATTN_SM90A, below).
//
// Fragments: with A in registers, warp w of the warpgroup holds rows 16 w .. 16 w + 15 of the m64 tile in
// the m16n8k16 A layout of mma.sync; the accumulator d[nt][e] of an m64nN tile is the m16n8 C layout of
// mma.sync for 8-column tile nt (rows lane / 4 and lane / 4 + 8 of the warp's 16, columns 8 nt + 2 (lane % 4)
// + {0, 1}). So the softmax and masks of the sm_80 kernels apply unchanged.
//
// Shared-memory operands use the 128-byte swizzle: a tile of 16-bit elements is stored as blocks of 64
// columns, each block row-major with 128-byte rows, 16-byte chunk c of row r at chunk c ^ (r % 8); blocks are
// 1024-byte aligned. sw128_offset gives an element's offset.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SAMPLEATTN_SM90A 1
#else
#define SAMPLEATTN_SM90A 0
#endif

namespace sampleattn::cuda::sm90 {

// Offset (in elements) of chunk `chunk` (8 elements) of row `row` in a [rows][cols] tile, cols % 64 == 0.
template <int kRows>
__device__ __forceinline__ int sw128_offset(int row, int chunk) {
  return (chunk >> 3) * (kRows * 64) + row * 64 + (((chunk & 7) ^ (row & 7)) << 3);
}

// Matrix descriptor of a 128-byte-swizzled operand at shared address `addr`: `lbo` = bytes between
// 64-element blocks along the leading (MN-major) dimension, `sbo` = bytes between groups of 8 rows.
// K-major operands ignore lbo (CUTLASS sets 1); MN-major ones (tnspB = 1) use both.
__device__ __forceinline__ std::uint64_t sw128_desc(std::uint32_t addr, std::uint32_t lbo, std::uint32_t sbo) {
  std::uint64_t d = 0;
  d |= static_cast<std::uint64_t>((addr & 0x3ffffu) >> 4);
  d |= static_cast<std::uint64_t>((lbo >> 4) & 0x3fffu) << 16;
  d |= static_cast<std::uint64_t>((sbo >> 4) & 0x3fffu) << 32;
  d |= 1ull << 62;  // 128-byte swizzle
  return d;
}

// base + a * b for 32-bit unsigned a, b (mad.wide.u32: one IMAD.WIDE.U32 when ptxas finds an aligned register
// pair for base, else a product and a 64-bit add; the C++ product of the zero-extended operands also adds
// the zero high word).
__device__ __forceinline__ const void* add_wide_product(const void* base, std::uint32_t a, std::uint32_t b) {
  std::uint64_t r;
  asm("mad.wide.u32 %0, %1, %2, %3;\n" : "=l"(r) : "r"(a), "r"(b), "l"(reinterpret_cast<std::uint64_t>(base)));
  return reinterpret_cast<const void*>(r);
}

// Orders the warpgroup's register writes before the next wgmma reads them (accumulators, A fragments).
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most kPending committed wgmma groups of this warpgroup are in flight.
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// wgmma_wait<kPending> that also takes `r` as operands, so that the compiler computes r before the wait
// and cannot sink that work below it (it would otherwise move register-only code across the volatile wait).
template <int kPending>
__device__ __forceinline__ void wgmma_wait_after(std::uint32_t (&r)[4][4]) {
  asm volatile("wgmma.wait_group.sync.aligned %16;\n"
               : "+r"(r[0][0]), "+r"(r[0][1]), "+r"(r[0][2]), "+r"(r[0][3]), "+r"(r[1][0]), "+r"(r[1][1]),
                 "+r"(r[1][2]), "+r"(r[1][3]), "+r"(r[2][0]), "+r"(r[2][1]), "+r"(r[2][2]), "+r"(r[2][3]),
                 "+r"(r[3][0]), "+r"(r[3][1]), "+r"(r[3][2]), "+r"(r[3][3])
               : "n"(kPending)
               : "memory");
}
// The same for P of a 128-key tile (eight k-steps): empty volatile statements that use each register keep
// the compiler from sinking their computation below the (volatile) wait.
template <int kPending>
__device__ __forceinline__ void wgmma_wait_after(std::uint32_t (&r)[8][4]) {
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(r[i][j])::"memory");
  wgmma_wait<kPending>();
}
// Orders generic-proxy shared-memory accesses (st.shared, cp.async) with the async proxy that wgmma reads
// through: the writer issues it after its copies landed, before the barrier; or, when the copies complete
// asynchronously (cp.async.mbarrier.arrive), the reader issues it after the barrier wait, before the wgmma.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Keeps the compiler from moving accesses of an accumulator across wgmma issue / wait points.
template <int kN>
__device__ __forceinline__ void fence_operand(float (&d)[kN][4]) {
#pragma unroll
  for (int i = 0; i < kN; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[i][e])::"memory");
}

// d[64 x N] (+)= a[64 x 16] * B[16 x N]: B K-major (kTransB = 0: B^T rows are N, 16 contiguous K) or MN-major
// (kTransB = 1: rows are K, N contiguous). accumulate = 0 overwrites d.
template <typename Elem, int kTransB>
__device__ __forceinline__ void wgmma_m64n64k16_rs(float (&d)[8][4], const std::uint32_t (&a)[4],
                                                 std::uint64_t desc_b, int accumulate);
// N = 128: the P V product at head_dim 128 (MN-major) and stage 1 pass 2 with two heads per tile (K-major).
template <typename Elem, int kTransB>
__device__ __forceinline__ void wgmma_m64n128k16_rs(float (&d)[16][4], const std::uint32_t (&a)[4],
                                                  std::uint64_t desc_b, int accumulate);
// N = 256: the P V product at head_dim 256 (MN-major).
template <typename Elem, int kTransB>
__device__ __forceinline__ void wgmma_m64n256k16_rs(float (&d)[32][4], const std::uint32_t (&a)[4],
                                                  std::uint64_t desc_b, int accumulate);
// d[64 x 64] (+)= A[64 x 16] * B[16 x 64], both K-major in shared memory (descriptors).
template <typename Elem>
__device__ __forceinline__ void wgmma_m64n64k16_ss(float (&d)[8][4], std::uint64_t desc_a, std::uint64_t desc_b,
                                                 int accumulate);
template <typename Elem>
__device__ __forceinline__ void wgmma_m64n128k16_ss(float (&d)[16][4], std::uint64_t desc_a, std::uint64_t desc_b,
                                                  int accumulate);

// The instances, written once by macro: the accumulator operands of an m64nN tile are %0 .. %(N/2 - 1),
// followed by A (four registers or a descriptor), B's descriptor and the accumulate flag.
#define SA_WGMMA_ACC4(d, i) "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])
#define SA_WGMMA_ACC_N64(d)                                                                                     \
  SA_WGMMA_ACC4(d, 0), SA_WGMMA_ACC4(d, 1), SA_WGMMA_ACC4(d, 2), SA_WGMMA_ACC4(d, 3), SA_WGMMA_ACC4(d, 4),    \
      SA_WGMMA_ACC4(d, 5), SA_WGMMA_ACC4(d, 6), SA_WGMMA_ACC4(d, 7)
#define SA_WGMMA_ACC_N128(d)                                                                                    \
  SA_WGMMA_ACC_N64(d), SA_WGMMA_ACC4(d, 8), SA_WGMMA_ACC4(d, 9), SA_WGMMA_ACC4(d, 10), SA_WGMMA_ACC4(d, 11),   \
      SA_WGMMA_ACC4(d, 12), SA_WGMMA_ACC4(d, 13), SA_WGMMA_ACC4(d, 14), SA_WGMMA_ACC4(d, 15)
#define SA_WGMMA_ACC_N256(d)                                                                                    \
  SA_WGMMA_ACC_N128(d), SA_WGMMA_ACC4(d, 16), SA_WGMMA_ACC4(d, 17), SA_WGMMA_ACC4(d, 18), SA_WGMMA_ACC4(d, 19), \
      SA_WGMMA_ACC4(d, 20), SA_WGMMA_ACC4(d, 21), SA_WGMMA_ACC4(d, 22), SA_WGMMA_ACC4(d, 23), SA_WGMMA_ACC4(d, 24), \
      SA_WGMMA_ACC4(d, 25), SA_WGMMA_ACC4(d, 26), SA_WGMMA_ACC4(d, 27), SA_WGMMA_ACC4(d, 28), SA_WGMMA_ACC4(d, 29), \
      SA_WGMMA_ACC4(d, 30), SA_WGMMA_ACC4(d, 31)
#define SA_WGMMA_REGS_N64 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define SA_WGMMA_REGS_N128 SA_WGMMA_REGS_N64 ", %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"

#define SA_WGMMA_REGS_N256 SA_WGMMA_REGS_N128 ", %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"

// RS: A = {A0 .. A0 + 3} registers, then DESC (B) and FLAG (accumulate) operand numbers.
#define SA_WGMMA_RS(N, ELEM, TYPE, TRANS, A, DESC, FLAG)                                                        \
  template <>                                                                                                  \
  __device__ __forceinline__ void wgmma_m64n##N##k16_rs<ELEM, TRANS>(                                          \
      float(&d)[N / 8][4], const std::uint32_t(&a)[4], std::uint64_t desc_b, int accumulate) {                \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " FLAG ", 0;\nwgmma.mma_async.sync.aligned.m64n" #N          \
                 "k16.f32." TYPE "." TYPE " {" SA_WGMMA_REGS_N##N "}, {" A "}, " DESC ", p, 1, 1, " #TRANS       \
                 ";\n}\n"                                                                                       \
                 : SA_WGMMA_ACC_N##N(d)                                                                         \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate));                  \
  }
#define SA_WGMMA_RS_N64(ELEM, TYPE, TRANS) SA_WGMMA_RS(64, ELEM, TYPE, TRANS, "%32, %33, %34, %35", "%36", "%37")
#define SA_WGMMA_RS_N128(ELEM, TYPE, TRANS) SA_WGMMA_RS(128, ELEM, TYPE, TRANS, "%64, %65, %66, %67", "%68", "%69")
#define SA_WGMMA_RS_N256(ELEM, TYPE, TRANS) SA_WGMMA_RS(256, ELEM, TYPE, TRANS, "%128, %129, %130, %131", "%132", "%133")

SA_WGMMA_RS_N64(__nv_bfloat16, "bf16", 0)
SA_WGMMA_RS_N64(__nv_bfloat16, "bf16", 1)
SA_WGMMA_RS_N64(__half, "f16", 0)
SA_WGMMA_RS_N64(__half, "f16", 1)
SA_WGMMA_RS_N128(__nv_bfloat16, "bf16", 0)
SA_WGMMA_RS_N128(__nv_bfloat16, "bf16", 1)
SA_WGMMA_RS_N128(__half, "f16", 0)
SA_WGMMA_RS_N128(__half, "f16", 1)
SA_WGMMA_RS_N256(__nv_bfloat16, "bf16", 1)
SA_WGMMA_RS_N256(__half, "f16", 1)

// SS: A and B descriptors, then the accumulate flag (operand numbers DESCS, FLAG); both operands K-major.
#define SA_WGMMA_SS(N, ELEM, TYPE, DESCS, FLAG)                                                                  \
  template <>                                                                                                  \
  __device__ __forceinline__ void wgmma_m64n##N##k16_ss<ELEM>(float(&d)[N / 8][4], std::uint64_t desc_a,       \
                                                              std::uint64_t desc_b, int accumulate) {          \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " FLAG ", 0;\nwgmma.mma_async.sync.aligned.m64n" #N          \
                 "k16.f32." TYPE "." TYPE " {" SA_WGMMA_REGS_N##N "}, " DESCS ", p, 1, 1, 0, 0;\n}\n"           \
                 : SA_WGMMA_ACC_N##N(d)                                                                         \
                 : "l"(desc_a), "l"(desc_b), "r"(accumulate));                                                  \
  }
#define SA_WGMMA_SS_N64(ELEM, TYPE) SA_WGMMA_SS(64, ELEM, TYPE, "%32, %33", "%34")
#define SA_WGMMA_SS_N128(ELEM, TYPE) SA_WGMMA_SS(128, ELEM, TYPE, "%64, %65", "%66")
SA_WGMMA_SS_N64(__nv_bfloat16, "bf16")
SA_WGMMA_SS_N64(__half, "f16")
SA_WGMMA_SS_N128(__nv_bfloat16, "bf16")
SA_WGMMA_SS_N128(__half, "f16")

#undef SA_WGMMA_SS_N128
#undef SA_WGMMA_SS_N64
#undef SA_WGMMA_SS
#undef SA_WGMMA_RS_N256
#undef SA_WGMMA_RS_N128
#undef SA_WGMMA_RS_N64
#undef SA_WGMMA_RS
#undef SA_WGMMA_REGS_N256
#undef SA_WGMMA_REGS_N128
#undef SA_WGMMA_REGS_N64
#undef SA_WGMMA_ACC_N256
#undef SA_WGMMA_ACC_N128
#undef SA_WGMMA_ACC_N64
#undef SA_WGMMA_ACC4

}  // namespace sampleattn::cuda::sm90
