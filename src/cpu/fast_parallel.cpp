// Thread fan-out for the fast CPU backend (fast_parallel.h).
#include "cpu/fast_parallel.h"

#include <algorithm>
#include <atomic>
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

void parallel_run(int threads, const std::function<void(int)>& fn) {
  if (threads <= 1) {
    const FlushSubnormals mode;
    fn(0);
    return;
  }
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

void parallel_for(std::int64_t n, int threads, const std::function<void(std::int64_t, int)>& fn) {
  std::atomic<std::int64_t> next{0};
  const int used = static_cast<int>(std::min<std::int64_t>(threads, std::max<std::int64_t>(n, 1)));
  parallel_run(used, [&](int t) {
    for (std::int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(i, t);
  });
}

}  // namespace sampleattn::cpu::fast
