// What the two sm_90a stage 1 passes (select_lse_sm90.cuh, select_colsum_sm90.cuh) share: a block is two
// warpgroups (256 threads), every warp owns 16 MMA rows, swizzled tiles start on 1024-byte boundaries, and
// the stages of a tile pipeline meet through per-stage "full" and "empty" mbarriers (pipeline_sm90.cuh); pass 1
// fills its stages with every thread's cp.async (init_stage_barriers, arrive_full), pass 2 by bulk copies.
#pragma once

#include <cstdint>

#include "cuda/pipeline_sm90.cuh"
#include "cuda/ptx_sm90.cuh"
#include "cuda/select_stage1.cuh"

namespace sampleattn::cuda::sel {

constexpr int kThreadsSm90 = 256;  // two warpgroups
// Blocks per SM the kernels' registers must allow: two up to head_dim 128; at 256 the tiles take ~195 KiB of
// shared memory, so one block runs per SM and its threads may take twice the registers.
template <int D>
constexpr int min_blocks_sm90() {
  return D <= 128 ? 2 : 1;
}

// Columns a row has in the sm_90a stage 1 tiles and in the image of the sampled rows (Stage1Args::qs_image):
// whole 64-column blocks of the 128-byte swizzle, so head_dim 96 is stored 128 wide. Columns from D on are
// neither copied nor read (the products run D / 16 k-steps).
template <int D>
constexpr int stored_dim_sm90() {
  return (D + 63) / 64 * 64;
}

// Shared memory from the first 1024-byte boundary: the 128-byte swizzle is a function of address bits 4..9.
__device__ __forceinline__ unsigned char* align_1024(unsigned char* p) {
  return p + ((1024u - (smem_addr(p) & 1023u)) & 1023u);
}

// The stages' "full" barriers (2 arrivals per thread: arrive_full) and "empty" ones (1 per thread), then a
// block barrier so that no thread arrives before they are initialised.
template <int kStages>
__device__ __forceinline__ void init_stage_barriers(std::uint64_t* full, std::uint64_t* empty) {
#if SAMPLEATTN_SM90A
  if (threadIdx.x == 0) {
#pragma unroll
    for (int st = 0; st < kStages; ++st) {
      sm90::mbar_init(smem_addr(&full[st]), 2 * kThreadsSm90);
      sm90::mbar_init(smem_addr(&empty[st]), kThreadsSm90);
    }
  }
  __syncthreads();
#endif
}

// A thread's two arrivals on a stage's "full" mbarrier (initialised to 2 per thread) once it has issued its
// copies of the stage: one when its cp.async copies land, one with release semantics for its plain shared
// stores (copy_chunk's path for unaligned inputs).
__device__ __forceinline__ void arrive_full(std::uint64_t* bar) {
#if SAMPLEATTN_SM90A
  sm90::cp_async_arrive(smem_addr(bar));
  sm90::mbar_arrive(smem_addr(bar));
#endif
}

}  // namespace sampleattn::cuda::sel
