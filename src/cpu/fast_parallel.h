// Threads for the fast CPU backend: parallel regions with static or dynamic work splits, run by a pool of
// worker threads kept between regions (fast_parallel.cpp: starting 15 threads costs ~0.4 ms, as much as a
// region of stage 1 at 4K tokens). Idle workers exit after 1 s: a program that unloads the library (dlclose)
// must wait that long after its last call.
#pragma once

#include <cstdint>
#include <functional>

namespace sampleattn::cpu::fast {

// 0 means every hardware thread; at least 1.
int resolve_threads(int requested);

// Runs fn(t) exactly once for each t in [0, threads): fn(0) on the caller, the others on pooled workers, on
// new threads (a nested or concurrent region, which finds the pool in use), or on the caller after fn(0)
// (workers slow to wake, or a thread that cannot start). So a static split of work by t stays complete,
// but fn must not wait for another t to run. Waits for all, then rethrows the first exception.
void parallel_run(int threads, const std::function<void(int t)>& fn);

// fn(item, t) for every item in [0, n), handed out one at a time (largest-cost items should come first).
void parallel_for(std::int64_t n, int threads, const std::function<void(std::int64_t item, int t)>& fn);

}  // namespace sampleattn::cpu::fast
