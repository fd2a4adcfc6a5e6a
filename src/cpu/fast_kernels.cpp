// Run-time choice of the fast CPU backend's kernel set (fast_kernels.h).
#include <atomic>

#include "cpu/fast_kernels.h"

namespace sampleattn::cpu::fast {
namespace {
std::atomic<bool> g_force_portable{false};
}  // namespace

const Kernels& kernels() {
  const Kernels* avx2 = avx2_kernels();
  if (avx2 != nullptr && !g_force_portable.load(std::memory_order_relaxed)) return *avx2;
  return portable_kernels();
}

void force_portable_kernels(bool on) { g_force_portable.store(on, std::memory_order_relaxed); }

}  // namespace sampleattn::cpu::fast
