// AMX tile state shared by the AMX kernel set (fast_kernels_amx.cpp) and bench/amx_peak.cpp: the tile
// configuration they load (palette 1, all eight tiles 16 rows of 64 bytes) and Linux's per-process grant
// of the tile data state.
#pragma once

#include <cstdint>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace sampleattn::cpu::amx {

struct alignas(64) TileConfig {
  std::uint8_t palette = 1;
  std::uint8_t start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  std::uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

// Asks the kernel for the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); false where
// it is refused (no AMX, an older kernel) or not Linux.
inline bool request_tile_state() {
#if defined(__linux__) && defined(SYS_arch_prctl)
  constexpr long kReqXcompPerm = 0x1023, kXfeatureTileData = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureTileData) == 0;
#else
  return false;
#endif
}

}  // namespace sampleattn::cpu::amx
