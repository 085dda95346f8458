// A minimal fork-join helper for the CPU kernels: split [0, n) into contiguous ranges, one per
// worker thread, and run them concurrently. Kernels give each worker its own output buffers and
// merge afterwards, so the result never depends on the thread count.
#pragma once
#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace mdlsae {

// Worker count used by every CPU kernel (0 means "all hardware threads").
int num_threads();
void set_num_threads(int n);

// Number of workers a range of n items will use, given a minimum grain per worker.
inline int workers_for(int64_t n, int64_t grain) {
  const int64_t by_grain = std::max<int64_t>(1, n / std::max<int64_t>(1, grain));
  return int(std::min<int64_t>(num_threads(), by_grain));
}

// Calls fn(worker, begin, end) for `workers` contiguous ranges covering [0, n). Exceptions
// thrown by a worker are re-thrown in the caller after all workers joined.
template <typename Fn>
void parallel_ranges(int64_t n, int workers, Fn&& fn) {
  if (workers <= 1 || n <= 1) {
    fn(0, int64_t(0), n);
    return;
  }
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(workers);
  for (int w = 0; w < workers; ++w) {
    const int64_t b = n * w / workers, e = n * (w + 1) / workers;
    pool.emplace_back([&, w, b, e] {
      try {
        fn(w, b, e);
      } catch (...) {
        errors[w] = std::current_exception();
      }
    });
  }
  for (auto& t : pool) t.join();
  for (auto& err : errors)
    if (err) std::rethrow_exception(err);
}

}  // namespace mdlsae
