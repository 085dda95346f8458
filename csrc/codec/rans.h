// A 64-bit-state rANS coder with 32-bit words and 28-bit probabilities (after ryg_rans's
// rans64). Symbols are (start, freq) intervals out of 2^28. Four states ("lanes") take turns,
// symbol i going to lane i % 4 over one shared word stream: their update chains are
// independent, so a CPU overlaps them. The encoder runs over its symbols in reverse with
// precomputed reciprocals instead of a division, and renormalizes without a branch (a word is
// emitted after ~1 symbol in 8: a branch on it is mispredicted too often). Lanes start from
// state 1, not L: the first symbols coded fill the state instead of leaving ~31 idle bits per
// lane in the flushed state, and the decoder simply stops reading words once the stream is
// used up. The decoder reports damage (final states other than the initial ones, words left
// over) instead of crashing. Also the split of an interval by a binary probability, which
// builds the multi-bit gap symbols of tables.h identically for the encoder, the decoder and
// the Python reference.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define MDLSAE_CODEC_HD __host__ __device__ __forceinline__
#else
#define MDLSAE_CODEC_HD inline __attribute__((always_inline))
#endif

namespace mdlsae::codec {

constexpr int kProbBits = 28;  // 31 would let the state fall to ~freq and lose ~0.0014 bit/symbol
constexpr uint64_t kProbScale = uint64_t(1) << kProbBits;
constexpr uint64_t kRansL = uint64_t(1) << 31;  // once grown, a state lives in [L, L << 32)
constexpr uint64_t kRansInit = 1;  // not 0: the reciprocal of freq = 1 needs x >= 1
constexpr int kLanes = 4;
constexpr int kStateWords = 2 * kLanes;  // the flushed states that open every stream

MDLSAE_CODEC_HD uint64_t mul_hi64(uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(a, b);
#else
  return uint64_t((unsigned __int128)a * b >> 64);
#endif
}

// One symbol prepared for the encoder, 16 bytes: x -> (x / freq) * 2^28 + x % freq + start
// computed as x + bias + q * (2^28 - freq) with q = floor(x / freq) = mul_hi64(x, rcp) >> shift,
// exact for x < 2^63 (Alverson's reciprocals; freq = 1 takes rcp = 2^64 - 1, q = x - 1). The
// shift (< 28) rides in the spare top bits of bias (< 2^29) and freq (<= 2^28): deriving it per
// symbol instead (no LZCNT in baseline x86-64) took half the encoder's time, and storing it apart
// made wide dictionaries' tables half as large again.
struct EncSymbol {
  uint64_t rcp;
  uint32_t bias_hi, freq_hi;  // bias | (shift & 7) << 29, freq | (shift >> 3) << 29

  MDLSAE_CODEC_HD uint32_t bias() const { return bias_hi & ((1u << 29) - 1); }
  MDLSAE_CODEC_HD uint32_t freq() const { return freq_hi & ((1u << 29) - 1); }
  MDLSAE_CODEC_HD uint32_t shift() const { return bias_hi >> 29 | (freq_hi >> 29) << 3; }
};

inline EncSymbol make_enc_symbol(uint32_t start, uint32_t freq) {
  uint64_t rcp = ~uint64_t(0);
  uint32_t bias = start + uint32_t(kProbScale) - 1, shift = 0;
  if (freq >= 2) {
    const uint32_t bits = 32 - __builtin_clz(freq - 1);  // ceil(log2 freq)
    const unsigned __int128 num = (unsigned __int128)1 << (63 + bits);
    rcp = uint64_t((num + freq - 1) / freq);
    bias = start;
    shift = bits - 1;
  }
  return {rcp, bias | (shift & 7) << 29, freq | (shift >> 3) << 29};
}

// The encoder writes words forward at `out`; the caller guarantees room for one word per symbol
// put (see chunk_codec.cpp). Symbols are put in reverse coding order; the stream is flush()'s
// states, then the words in reverse order of emission.
struct RansEncoder {
  uint32_t* out;
  uint64_t x0 = kRansInit, x1 = kRansInit, x2 = kRansInit, x3 = kRansInit;  // x0: the next symbol's lane

  MDLSAE_CODEC_HD void put(const EncSymbol& s) {
    uint64_t x = x0;
    const uint32_t freq = s.freq();
    const bool emit = x >= ((kRansL >> kProbBits) << 32) * freq;
    *out = uint32_t(x);
    out += emit;
    x >>= emit ? 32 : 0;
    x += s.bias() + (mul_hi64(x, s.rcp) >> s.shift()) * (uint32_t(kProbScale) - freq);
    x0 = x1;
    x1 = x2;
    x2 = x3;
    x3 = x;
  }
  // The same for a symbol used too rarely to prepare: one division instead of a reciprocal
  // (whose own computation, a 128-bit division, costs more than this).
  MDLSAE_CODEC_HD void put_exact(uint32_t start, uint32_t freq) {
    uint64_t x = x0;
    const bool emit = x >= ((kRansL >> kProbBits) << 32) * freq;
    *out = uint32_t(x);
    out += emit;
    x >>= emit ? 32 : 0;
    x = ((x / freq) << kProbBits) + x % freq + start;
    x0 = x1;
    x1 = x2;
    x2 = x3;
    x3 = x;
  }
  // The stream's opening words: lane states in decoding order, the first symbol's (put last) first.
  MDLSAE_CODEC_HD void flush(uint32_t w[kStateWords]) const {
    const uint64_t lanes[kLanes] = {x3, x2, x1, x0};
    for (int i = 0; i < kLanes; ++i) {
      w[2 * i] = uint32_t(lanes[i]);
      w[2 * i + 1] = uint32_t(lanes[i] >> 32);
    }
  }
};

// Forward decoder over words[0, n). All reads are bounds-checked; `failed` marks a stream too
// short to hold the lane states, or states no encoder makes.
struct RansDecoder {
  const uint32_t* words = nullptr;
  uint32_t n = 0, pos = 0;
  uint64_t x0 = kRansInit, x1 = kRansInit, x2 = kRansInit, x3 = kRansInit;  // x0: the next symbol's lane
  bool failed = false;

  MDLSAE_CODEC_HD void init(const uint32_t* w, uint32_t count) {
    words = w;
    n = count;
    pos = kStateWords;
    if (count < kStateWords) {
      failed = true;
      return;
    }
    x0 = uint64_t(w[0]) | (uint64_t(w[1]) << 32);
    x1 = uint64_t(w[2]) | (uint64_t(w[3]) << 32);
    x2 = uint64_t(w[4]) | (uint64_t(w[5]) << 32);
    x3 = uint64_t(w[6]) | (uint64_t(w[7]) << 32);
    if (x0 == 0 || x1 == 0 || x2 == 0 || x3 == 0 || (x0 | x1 | x2 | x3) >> 63) failed = true;
  }
  MDLSAE_CODEC_HD uint32_t slot() const { return uint32_t(x0 & (kProbScale - 1)); }
  MDLSAE_CODEC_HD void advance(uint32_t start, uint32_t freq) {
    uint64_t x = uint64_t(freq) * (x0 >> kProbBits) + slot() - start;
    // branch-free: a word is read after ~1 symbol in 8, which no predictor guesses
    if (x < kRansL && pos < n) x = (x << 32) | words[pos++];
    x0 = x1;
    x1 = x2;
    x2 = x3;
    x3 = x;
  }
  // Binary decision with P(1) = f1 / 2^28: ones own the top f1 slots. Branch-free, since the
  // decisions are close to fair coins that no predictor guesses.
  struct BitSplit {
    uint32_t s0, f1, dz;  // 2^28 - f1, f1 and s0 - f1 (mod 2^32), precomputed by hot loops
    static MDLSAE_CODEC_HD BitSplit of(uint32_t f1) {
      const uint32_t s0 = uint32_t(kProbScale - f1);
      return {s0, f1, s0 - f1};
    }
  };
  MDLSAE_CODEC_HD uint32_t get_bit(BitSplit b) {
    const uint32_t zero = 0u - uint32_t(slot() < b.s0);  // all ones for a 0 (a cmp and sbb)
    advance(b.s0 & ~zero, b.f1 + (b.dz & zero));
    return zero + 1;
  }
  // A clean end: every word consumed and the encoder's initial states recovered.
  MDLSAE_CODEC_HD bool finished_cleanly() const {
    return !failed && pos == n && x0 == kRansInit && x1 == kRansInit && x2 == kRansInit && x3 == kRansInit;
  }
};

// The share of an interval of width w >= 2 given to a binary decision's 1 (P(1) = f1 / 2^28):
// floor(w * f1 / 2^28), kept in [1, w - 1]; the 1 takes the top of the interval, the 0 the rest.
// At w = 2^28 it is f1 itself, the plain binary decision of RansDecoder::get_bit.
MDLSAE_CODEC_HD uint32_t split_one(uint32_t w, uint32_t f1) {
  const uint32_t w1 = uint32_t((uint64_t(w) * f1) >> kProbBits);
  return w1 < 1 ? 1 : (w1 > w - 1 ? w - 1 : w1);
}

}  // namespace mdlsae::codec
