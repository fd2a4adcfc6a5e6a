// The AMX bf16 peak of this machine: tdpbf16ps into 4 independent accumulator tiles with the operands held
// in tiles, on 1 thread, then on several at once. The floor of the CPU backend's AMX set (bench/NOTES.md).
// Usage: build/bench/sampleattn_amx_peak [threads ...]   (Linux on x86-64; exits 1 without AMX)
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "cpu/amx_config.h"

namespace {

constexpr long kIters = 2000000;
constexpr double kFlopPerIter = 4.0 * 16 * 16 * 32 * 2;  // 4 tile products of 16 x 16 x 32 multiply-adds

__attribute__((target("amx-tile,amx-bf16"))) void products(long iters) {
  static const sampleattn::cpu::amx::TileConfig config;
  alignas(64) static const std::uint16_t zeros[16 * 32] = {};
  alignas(64) float out[16 * 16];
  _tile_loadconfig(&config);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, zeros, 64);
  _tile_loadd(5, zeros, 64);
  _tile_loadd(6, zeros, 64);
  _tile_loadd(7, zeros, 64);
  for (long i = 0; i < iters; ++i) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, out, 64);
  _tile_release();
}

}  // namespace

int main(int argc, char** argv) {
  if (!sampleattn::cpu::amx::request_tile_state()) {
    std::printf("no AMX tile state on this CPU or OS\n");
    return 1;
  }
  std::vector<int> counts = {1};
  for (int i = 1; i < argc; ++i) counts.push_back(std::atoi(argv[i]));
  if (argc == 1) counts.push_back(static_cast<int>(std::thread::hardware_concurrency()));
  for (const int n : counts) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int t = 1; t < n; ++t) threads.emplace_back(products, kIters);
    products(kIters);
    for (std::thread& th : threads) th.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%d thread(s): %.0f GFLOP/s\n", n, n * kIters * kFlopPerIter / s / 1e9);
  }
  return 0;
}
