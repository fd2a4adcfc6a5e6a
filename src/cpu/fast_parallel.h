// Threads for the fast CPU backend: plain std::thread fan-out per parallel region (a region is one batch
// and KV head's worth of tiles, so the ~50 us thread start is noise), with static or dynamic work splits.
#pragma once

#include <cstdint>
#include <functional>

namespace sampleattn::cpu::fast {

// 0 means every hardware thread; at least 1.
int resolve_threads(int requested);

// Runs fn(t) exactly once for each t in [0, threads): fn(0) on the caller, the rest on new threads. Waits
// for all, then rethrows the first exception. Where a thread cannot be started, its fn(t) runs on the
// caller afterwards, so a static split of work by t stays complete.
void parallel_run(int threads, const std::function<void(int t)>& fn);

// fn(item, t) for every item in [0, n), handed out one at a time (largest-cost items should come first).
void parallel_for(std::int64_t n, int threads, const std::function<void(std::int64_t item, int t)>& fn);

}  // namespace sampleattn::cpu::fast
