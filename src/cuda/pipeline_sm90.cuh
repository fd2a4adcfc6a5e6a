// Synchronisation primitives of the warp-specialised sm_90a kernels: mbarriers in shared memory (a producer
// fills pipeline stages, consumer warpgroups wait for them and hand them back), register
// reallocation between warpgroups (setmaxnreg) and named barriers. Compiled only for sm_90a (the callers guard
// their bodies with SAMPLEATTN_SM90A).
//
// An mbarrier completes a phase when `count` arrivals have happened; waiters name the parity of the phase they
// wait for. A stage used for the n-th time (n = 0, 1, ...) is full when phase n of its "full" barrier has
// completed (parity n & 1), and free when phase n - 1 of its "empty" barrier has (parity (n & 1) ^ 1: a fresh
// barrier counts as having completed the phase before phase 0, so the first wait passes).
#pragma once

#include <cstdint>

namespace sampleattn::cuda::sm90 {

__device__ __forceinline__ void mbar_init(std::uint32_t bar, std::uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}

// Arrive with release semantics: this thread's earlier shared-memory writes are visible to the threads that
// see the phase complete.
__device__ __forceinline__ void mbar_arrive(std::uint32_t bar) {
  asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}

// An arrival that happens when every cp.async this thread issued before has landed (the barrier's count must
// include it: .noinc). The consumer that waits for the phase fences the async proxy before reading the data
// with wgmma (the copies write through the generic proxy).
__device__ __forceinline__ void cp_async_arrive(std::uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}

// The producer's arrival for a stage filled by bulk copies: the phase completes once this arrival and
// `bytes` bytes of copies (bulk_copy's complete_tx) have both happened.
__device__ __forceinline__ void mbar_arrive_expect_tx(std::uint32_t bar, std::uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}

// Makes the initialised barriers visible to the async proxy (the bulk copies' transaction counts).
__device__ __forceinline__ void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// Bulk copy (the TMA unit, async proxy) of `bytes` (a multiple of 16) from global `src` to shared `dst`, both
// 16-byte aligned; the bytes count towards `bar`'s transaction count when they land.
__device__ __forceinline__ void bulk_copy(std::uint32_t dst, const void* src, std::uint32_t bytes, std::uint32_t bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
}

// Blocks until the phase of parity `parity` has completed (acquire).
__device__ __forceinline__ void mbar_wait(std::uint32_t bar, std::uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.acquire.cta.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

// Register reallocation: every warp of the warpgroup executes the same one.
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

// Named barrier `id` (1..15; 0 is __syncthreads) over `threads` threads (a multiple of 32).
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

}  // namespace sampleattn::cuda::sm90
