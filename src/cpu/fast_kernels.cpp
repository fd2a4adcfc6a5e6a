// Run-time choice of the fast CPU backend's kernel set (fast_kernels.h).
#include <atomic>
#include <cstdlib>
#include <string_view>

#include "cpu/fast.h"
#include "cpu/fast_kernels.h"
#include "sampleattn/error.h"

namespace sampleattn::cpu::fast {
namespace {
std::atomic<const Kernels*> g_forced{nullptr};

// The widest set allowed: SAMPLEATTN_CPU_KERNELS's (4 = AMX, 3 = AVX-512 with BF16 dot products, 2 = AVX-512,
// 1 = AVX2, 0 = portable; -1 for an unknown value), or where unset 4 if the CPU has AMX, else 3 if the bf16
// set is preferred here, else 2.
int kernel_cap() {
  static const int cap = [] {
    const char* v = std::getenv("SAMPLEATTN_CPU_KERNELS");
    if (v == nullptr || *v == '\0') return amx_kernels() != nullptr ? 4 : bf16_dot_preferred() ? 3 : 2;
    const std::string_view n(v);
    return n == "amx"          ? 4
           : n == "avx512bf16" ? 3
           : n == "avx512"     ? 2
           : n == "avx2"       ? 1
           : n == "portable"   ? 0
                               : -1;
  }();
  return cap;
}

}  // namespace

const Kernels& kernels() {
  if (const Kernels* forced = g_forced.load(std::memory_order_acquire)) return *forced;
  const int cap = kernel_cap();
  SA_CHECK(cap >= 0, "SAMPLEATTN_CPU_KERNELS (", std::getenv("SAMPLEATTN_CPU_KERNELS"),
           ") must be amx, avx512bf16, avx512, avx2 or portable (the CPU backend's kernel set), or unset");
  // The cap first: asking for AMX changes the process (Linux grants the tile state for good).
  if (cap >= 4)
    if (const Kernels* k = amx_kernels()) return *k;
  if (const Kernels* k = avx512_bf16_kernels(); k != nullptr && cap >= 3) return *k;
  if (const Kernels* k = avx512_kernels(); k != nullptr && cap >= 2) return *k;
  if (const Kernels* k = avx2_kernels(); k != nullptr && cap >= 1) return *k;
  return portable_kernels();
}

bool force_kernels(const char* name) {
  if (name == nullptr) {
    g_forced.store(nullptr, std::memory_order_release);
    return true;
  }
  const std::string_view n(name);
  const Kernels* k = n == "amx"          ? amx_kernels()
                     : n == "avx512bf16" ? avx512_bf16_kernels()
                     : n == "avx512"   ? avx512_kernels()
                     : n == "avx2"     ? avx2_kernels()
                     : n == "portable" ? &portable_kernels()
                                       : nullptr;
  if (k == nullptr) return false;
  g_forced.store(k, std::memory_order_release);
  return true;
}

}  // namespace sampleattn::cpu::fast

namespace sampleattn::cpu {

void check_kernel_choice() { fast::kernels(); }

}  // namespace sampleattn::cpu
