// Thread fan-out for the fast CPU backend (fast_parallel.h).
#include "cpu/fast_parallel.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>
#define SA_HAVE_MXCSR 1
#endif

namespace sampleattn::cpu::fast {
namespace {

// Subnormal floats are flushed to zero while the backend's work runs: probabilities far below the row max
// times v (or a running output times a tiny rescale) would otherwise produce subnormals, which cost tens
// of cycles per operation on x86 and are far below the fp32 rounding of any output. The caller's floating-
// point mode is restored afterwards.
class FlushSubnormals {
 public:
#ifdef SA_HAVE_MXCSR
  FlushSubnormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFtz | kDaz); }
  ~FlushSubnormals() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned kFtz = 0x8000u, kDaz = 0x0040u;
  unsigned saved_;
#endif
};

}  // namespace

int resolve_threads(int requested) {
  if (requested > 0) return requested;
  return std::max(1u, std::thread::hardware_concurrency());
}

namespace {

// One region's work: fn(t) for t in [0, threads), claimed one t at a time by the caller and the workers.
struct Region {
  const std::function<void(int)>* fn = nullptr;
  int threads = 0;
  int next = 1;     // the next t to claim (t = 0 is the caller's)
  int pending = 0;  // claimed or unclaimed t in [1, threads) not yet finished
  std::exception_ptr error;
};

void run_one(Region& r, int t, std::mutex& m) {
  const FlushSubnormals mode;
  try {
    (*r.fn)(t);
  } catch (...) {
    const std::lock_guard<std::mutex> lock(m);
    if (!r.error) r.error = std::current_exception();
  }
}

// Worker threads kept between regions: starting 15 threads costs ~0.4 ms, as much as a whole region of
// stage 1 at 4K tokens. One region at a time uses them (a nested or concurrent region starts its own
// threads instead); a worker idle for kIdle exits, so none outlive a burst of calls by long (a program that
// unloads the library must wait that long after its last call). After fork() the child gets a new, empty
// pool (the parent's workers do not exist there). Pools are never freed: a worker may still be waking up.
class Pool;
std::atomic<Pool*> g_pool{nullptr};

class Pool {
 public:
  static Pool& get() {
    static const bool created = [] {
      g_pool.store(new Pool(), std::memory_order_release);
      pthread_atfork(nullptr, nullptr, [] { g_pool.store(new Pool(), std::memory_order_release); });
      return true;
    }();
    (void)created;
    return *g_pool.load(std::memory_order_acquire);
  }

  // Runs fn over threads on the pool; false (nothing run) when another region holds it.
  bool run(int threads, const std::function<void(int)>& fn) {
    bool expected = false;
    if (!busy_.compare_exchange_strong(expected, true, std::memory_order_acquire)) return false;
    Region r;
    r.fn = &fn;
    r.threads = threads;
    r.pending = threads - 1;
    {
      std::unique_lock<std::mutex> lock(m_);
      try {
        while (live_ < threads - 1) {
          std::thread(&Pool::work, this, generation_).detach();
          ++live_;
        }
      } catch (const std::system_error&) {
      }  // fewer workers: the caller claims what they do not
      region_ = &r;
      ++generation_;
    }
    work_cv_.notify_all();
    run_one(r, 0, m_);
    std::unique_lock<std::mutex> lock(m_);
    while (r.next < r.threads) {
      const int t = r.next++;
      lock.unlock();
      run_one(r, t, m_);
      lock.lock();
      --r.pending;
    }
    done_cv_.wait(lock, [&] { return r.pending == 0; });
    region_ = nullptr;
    lock.unlock();
    busy_.store(false, std::memory_order_release);
    if (r.error) std::rethrow_exception(r.error);
    return true;
  }

 private:
  static constexpr std::chrono::milliseconds kIdle{1000};

  // seen: the generation before the region that started this worker, so that it joins that region.
  void work(std::uint64_t seen) {
    std::unique_lock<std::mutex> lock(m_);
    for (;;) {
      if (!work_cv_.wait_for(lock, kIdle, [&] { return generation_ != seen; })) {
        --live_;
        return;
      }
      seen = generation_;
      Region* r = region_;
      while (r != nullptr && r->next < r->threads) {
        const int t = r->next++;
        lock.unlock();
        run_one(*r, t, m_);
        lock.lock();
        if (--r->pending == 0) done_cv_.notify_all();
      }
    }
  }

  std::atomic<bool> busy_{false};
  std::mutex m_;
  std::condition_variable work_cv_, done_cv_;
  Region* region_ = nullptr;
  std::uint64_t generation_ = 0;
  int live_ = 0;
};

// Without the pool: new threads for t >= 1; where one cannot start, its t runs on the caller afterwards.
void run_spawned(int threads, const std::function<void(int)>& fn) {
  std::exception_ptr error;
  std::mutex mutex;
  auto body = [&](int t) {
    const FlushSubnormals mode;
    try {
      fn(t);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex);
      if (!error) error = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  std::vector<int> not_started;
  pool.reserve(static_cast<std::size_t>(threads - 1));
  for (int t = 1; t < threads; ++t) {
    try {
      pool.emplace_back(body, t);
    } catch (const std::system_error&) {
      not_started.push_back(t);
    }
  }
  body(0);
  for (int t : not_started) body(t);
  for (std::thread& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace

void parallel_run(int threads, const std::function<void(int)>& fn) {
  if (threads <= 1) {
    const FlushSubnormals mode;
    fn(0);
    return;
  }
  if (!Pool::get().run(threads, fn)) run_spawned(threads, fn);
}

void parallel_for(std::int64_t n, int threads, const std::function<void(std::int64_t, int)>& fn) {
  std::atomic<std::int64_t> next{0};
  const int used = static_cast<int>(std::min<std::int64_t>(threads, std::max<std::int64_t>(n, 1)));
  parallel_run(used, [&](int t) {
    for (std::int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(i, t);
  });
}

}  // namespace sampleattn::cpu::fast
