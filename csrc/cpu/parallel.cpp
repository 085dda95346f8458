// Process-wide worker count for the CPU kernels.
#include "cpu/parallel.h"

#include <atomic>

namespace mdlsae {

static std::atomic<int> g_threads{0};

int num_threads() {
  const int n = g_threads.load();
  if (n > 0) return n;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw ? int(hw) : 1;
}

void set_num_threads(int n) { g_threads.store(n > 0 ? n : 0); }

}  // namespace mdlsae
