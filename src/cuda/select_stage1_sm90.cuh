// Stage 1 of SampleAttention on Hopper (sm_90a): the two passes of select_stage1.cuh with the products on
// wgmma instead of mma.sync (pass 1: select_lse_sm90.cuh, pass 2: select_colsum_sm90.cuh). Same grid sizes
// (block orders differ, see each kernel), same partials, same per-row math.
// Several warpgroups per SM (two blocks of two) let one warpgroup's exp2 work (MUFU) run while another's
// product runs on the tensor cores: per score both cost about the same (256 FLOPs at 740 TFLOP/s against
// 1/16 clock per SM). Per tile the loops are a few instructions beyond the per-score FFMA, MUFU and FADD:
// whole-tile copies without row tests (pass 2: bulk copies by one thread), pass 1's B descriptors as a
// uniform base plus immediates (its tile loop is unrolled by the stage count), no max reduction, mask compares
// only on tiles that cross a row end. Measured
// slower and not kept (bench/NOTES.md): the next tile's product before this tile's exp2 inside a warpgroup
// (two accumulator sets), a half-tile ping-pong of the two warpgroups with a second block barrier per tile,
// several partial sums per row instead of one chain of adds, pass 2's tiles in two committed halves, three
// blocks per SM with the keys from shared memory, the query copies concentrated in two loader warps.
// Launched only on compute capability 9.0 with the sm_90a cubin (stage1_sm90_runnable); other targets
// compile an empty body.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/check.h"
#include "cuda/select_args.h"
#include "cuda/select_colsum_sm90.cuh"
#include "cuda/select_lse_sm90.cuh"
#include "cuda/sm90_check.h"

namespace sampleattn::cuda::sel {

// Whether the sm_90a kernels run here (compute capability 9.0, sm_90a code; see sm90_check.h).
template <typename T, int D>
bool stage1_sm90_runnable() {
  static Sm90Check check;
  return check.runnable(lse_kernel_sm90<T, D>, colsum_kernel_sm90<T, D, 1>, colsum_kernel_sm90<T, D, 2>);
}

// Pass 1 or pass 2 on `stream`: as many blocks as launch_stage1_instance (select_stage1.cuh), in the orders
// described at each kernel.
template <typename T, int D>
void launch_stage1_sm90_instance(const Stage1Args& a, int pass, cudaStream_t stream) {
  // Pass 1 decodes its blocks through a.pass1_order (launch_stage1 fills it for this grid).
  SA_CHECK(pass != 1 || (a.pass1_order.chunks == a.num_chunks &&
                         a.pass1_order.tiles == (a.num_sampled * a.group + kLseRows - 1) / kLseRows),
           "CUDA selection: pass 1 order of ", a.pass1_order.chunks, " chunks x ", a.pass1_order.tiles,
           " row tiles does not match the grid (", a.num_chunks, " chunks)");
  // Two blocks per SM need ~200 KiB of shared memory: the largest carveout.
  const char* family =
      pass == 1 ? "stage 1 pass 1 (sampled-row log-sum-exp, sm90)" : "stage 1 pass 2 (column scores, sm90)";
  if (colsum_heads_sm90(a.group) == 2) {
    launch_stage1_passes(lse_kernel_sm90<T, D>, colsum_kernel_sm90<T, D, 2>, kThreadsSm90, lse_smem_bytes_sm90<D>(),
                         colsum_smem_bytes_sm90<D, 2>(), true, a, pass, stream, family);
  } else {
    launch_stage1_passes(lse_kernel_sm90<T, D>, colsum_kernel_sm90<T, D, 1>, kThreadsSm90, lse_smem_bytes_sm90<D>(),
                         colsum_smem_bytes_sm90<D, 1>(), true, a, pass, stream, family);
  }
}

}  // namespace sampleattn::cuda::sel
