// The fast CPU backend's thread fan-out (src/cpu/fast_parallel.h): a pool of worker threads kept between
// regions, with new threads for a region that finds the pool in use (nested or concurrent), and a new pool
// in a forked child. Every t of a region runs exactly once, exceptions reach the caller, nothing hangs.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "cpu/fast_parallel.h"

namespace sampleattn {
namespace {

using cpu::fast::parallel_for;
using cpu::fast::parallel_run;

// Runs a region of `threads` and returns whether each t ran exactly once.
bool each_once(int threads) {
  std::vector<std::atomic<int>> runs(static_cast<std::size_t>(threads));
  parallel_run(threads, [&](int t) { runs[static_cast<std::size_t>(t)].fetch_add(1); });
  for (const auto& r : runs)
    if (r.load() != 1) return false;
  return true;
}

TEST(CpuParallel, EveryThreadIndexRunsOnce) {
  for (int rep = 0; rep < 50; ++rep)
    for (const int threads : {1, 2, 3, 7, 16, 20}) ASSERT_TRUE(each_once(threads)) << threads << " threads";
  std::vector<std::atomic<int>> items(1000);
  parallel_for(1000, 6, [&](std::int64_t i, int) { items[static_cast<std::size_t>(i)].fetch_add(1); });
  for (const auto& n : items) ASSERT_EQ(n.load(), 1);
}

TEST(CpuParallel, ExceptionsReachTheCallerAndThePoolGoesOn) {
  for (const int thrower : {0, 3}) {
    std::atomic<int> ran{0};
    EXPECT_THROW(parallel_run(8,
                              [&](int t) {
                                ran.fetch_add(1);
                                if (t == thrower) throw std::runtime_error("boom");
                              }),
                 std::runtime_error);
    EXPECT_EQ(ran.load(), 8) << "every t still runs";
    EXPECT_TRUE(each_once(8));
  }
}

TEST(CpuParallel, NestedAndConcurrentRegions) {
  std::atomic<int> inner{0};
  parallel_run(4, [&](int) { parallel_run(3, [&](int) { inner.fetch_add(1); }); });
  EXPECT_EQ(inner.load(), 12);
  std::atomic<int> failures{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&] {
      for (int rep = 0; rep < 100; ++rep)
        if (!each_once(5)) failures.fetch_add(1);
    });
  for (std::thread& th : callers) th.join();
  EXPECT_EQ(failures.load(), 0);
}

// Whether another thread runs some t >= 1 while fn(0) waits (up to 10 s) for it: the pool has live workers.
bool workers_run_while_caller_waits() {
  const std::thread::id caller = std::this_thread::get_id();
  std::atomic<bool> other{false};
  parallel_run(4, [&](int t) {
    if (t != 0) {
      if (std::this_thread::get_id() != caller) other.store(true);
      return;
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!other.load() && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  });
  return other.load();
}

// After fork() only the forking thread exists in the child: the child must get workers of its own (with the
// parent's pool it would count workers that are not there and run every t on the caller), and its regions
// must not wait for the parent's.
TEST(CpuParallel, ForkedChildRunsRegions) {
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "ThreadSanitizer does not support threads started after a multi-threaded fork";
#endif
  ASSERT_TRUE(workers_run_while_caller_waits());  // the parent's pool has workers now
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    alarm(60);  // a hang ends the child with SIGALRM
    bool ok = workers_run_while_caller_waits();
    for (int rep = 0; rep < 10; ++rep) ok = ok && each_once(6);
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  EXPECT_TRUE(each_once(8));
}

}  // namespace
}  // namespace sampleattn
