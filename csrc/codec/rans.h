// A 64-bit-state rANS coder with 32-bit words and 28-bit probabilities (after ryg_rans's
// rans64), shared by the CPU and the CUDA coders. Symbols are (start, freq) intervals out of
// 2^28. The encoder runs over its symbols in reverse; the decoder reads forward and reports
// damage (running out of words, a final state that is not the initial one) instead of crashing.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define MDLSAE_CODEC_HD __host__ __device__ __forceinline__
#else
#define MDLSAE_CODEC_HD inline
#endif

namespace mdlsae::codec {

constexpr int kProbBits = 28;  // 31 would let the state fall to ~freq and lose ~0.0014 bit/symbol
constexpr uint64_t kProbScale = uint64_t(1) << kProbBits;
constexpr uint64_t kRansL = uint64_t(1) << 31;  // state lives in [L, L << 32)

// One coding step of the encoder; emits at most one 32-bit word through `emit`.
template <typename Emit>
MDLSAE_CODEC_HD void rans_put(uint64_t& x, uint32_t start, uint32_t freq, Emit&& emit) {
  const uint64_t x_max = ((kRansL >> kProbBits) << 32) * freq;
  if (x >= x_max) {
    emit(uint32_t(x));
    x >>= 32;
  }
  x = ((x / freq) << kProbBits) + (x % freq) + start;
}

// Forward decoder over words[0, n). All reads are bounds-checked; `failed` becomes true on any
// inconsistency and stays true.
struct RansDecoder {
  const uint32_t* words = nullptr;
  uint32_t n = 0, pos = 0;
  uint64_t x = 0;
  bool failed = false;

  MDLSAE_CODEC_HD void init(const uint32_t* w, uint32_t count) {
    words = w;
    n = count;
    pos = 2;
    if (count < 2) {
      failed = true;
      x = kRansL;
      return;
    }
    x = uint64_t(w[0]) | (uint64_t(w[1]) << 32);
    if (x < kRansL) failed = true;
  }
  MDLSAE_CODEC_HD uint32_t slot() const { return uint32_t(x & (kProbScale - 1)); }
  MDLSAE_CODEC_HD void advance(uint32_t start, uint32_t freq) {
    x = uint64_t(freq) * (x >> kProbBits) + slot() - start;
    if (x < kRansL) {
      if (pos < n) {
        x = (x << 32) | words[pos++];
      } else {
        failed = true;
        x = kRansL;
      }
    }
  }
  // Binary decision with P(1) = f1 / 2^28: ones own the top f1 slots.
  MDLSAE_CODEC_HD bool get_bit(uint32_t f1) {
    const uint32_t s0 = uint32_t(kProbScale - f1);
    const bool one = slot() >= s0;
    advance(one ? s0 : 0, one ? f1 : s0);
    return one;
  }
  // A clean end: every word consumed and the encoder's initial state recovered.
  MDLSAE_CODEC_HD bool finished_cleanly() const { return !failed && pos == n && x == kRansL; }
};

}  // namespace mdlsae::codec
