// Microbenchmark (issue 3): rans_put as in csrc/codec/rans.h (hardware 64-bit div) vs ryg_rans
// rans64-style reciprocal multiplication, on the same 31-bit-probability binary ops; checks that
// both produce identical words. Standalone, not part of the package build:
//   g++ -O3 -std=c++17 bench/micro_rans_reciprocal.cpp -o /tmp/rcp && /tmp/rcp
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>
using u64 = uint64_t; using u32 = uint32_t;
constexpr int PB = 31; constexpr u64 L = u64(1) << 31;
struct Op { u32 start, freq; };
struct RcpOp { u64 rcp; u32 start, freq, cmpl, shift; };
static inline u64 mulhi(u64 a, u64 b) { return u64((unsigned __int128)a * b >> 64); }
RcpOp make(u32 start, u32 freq) {  // ryg_rans Rans64EncSymbolInit
  RcpOp s; s.start = start; s.freq = freq; s.cmpl = u32((u64(1) << PB) - freq);
  if (freq < 2) { s.rcp = ~u64(0); s.shift = 0; s.start = start + (1u << PB) - 1; }
  else { u32 shift = 0; while (freq > (1u << shift)) shift++;
    // rcp = ceil(2^(shift+63) / freq), via 128-bit arithmetic
    unsigned __int128 num = ((unsigned __int128)1 << (shift + 63)) + freq - 1;
    s.rcp = u64(num / freq); s.shift = shift - 1; }
  return s;
}
int main() {
  std::mt19937_64 g(1); const size_t n = 5000000;
  std::vector<Op> ops(n); std::vector<RcpOp> rops(n);
  for (size_t i = 0; i < n; ++i) {
    u32 f1 = u32((0.3 + 0.4 * (g() % 1000) / 1000.0) * (1u << 31)); bool one = g() % 2;
    u32 s0 = u32((u64(1) << 31) - f1);
    ops[i] = one ? Op{s0, f1} : Op{0, s0}; rops[i] = make(ops[i].start, ops[i].freq);
  }
  std::vector<u32> w1, w2; w1.reserve(n); w2.reserve(n);
  for (int rep = 0; rep < 3; ++rep) {
    w1.clear(); w2.clear();
    auto t0 = std::chrono::steady_clock::now();
    u64 x = L;
    for (size_t i = n; i-- > 0;) { const Op& o = ops[i]; u64 xmax = ((L >> PB) << 32) * o.freq;
      if (x >= xmax) { w1.push_back(u32(x)); x >>= 32; } x = ((x / o.freq) << PB) + (x % o.freq) + o.start; }
    auto t1 = std::chrono::steady_clock::now();
    u64 y = L;
    for (size_t i = n; i-- > 0;) { const RcpOp& o = rops[i]; u64 xmax = ((L >> PB) << 32) * o.freq;
      if (y >= xmax) { w2.push_back(u32(y)); y >>= 32; } u64 q = mulhi(y, o.rcp) >> o.shift; y = y + o.start + q * o.cmpl; }
    auto t2 = std::chrono::steady_clock::now();
    double a = std::chrono::duration<double>(t1 - t0).count(), b = std::chrono::duration<double>(t2 - t1).count();
    printf("div %.1f Msym/s, reciprocal %.1f Msym/s (%.2fx), identical %d\n", n / a / 1e6, n / b / 1e6, a / b, int(x == y && w1 == w2));
  }
}
