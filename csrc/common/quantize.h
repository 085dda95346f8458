// Scalar math shared by the CPU and CUDA kernels: half/bfloat16 widening, the threshold
// selection and the DESIGN §2 quantizer q = rint(z / step). Only IEEE-exact operations (one float
// division, round half to even) are used, so the host and the device produce the same q for
// every input bit pattern.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "common/check.h"

#if defined(__CUDACC__)
#define MDLSAE_HD __host__ __device__ __forceinline__
#else
#define MDLSAE_HD inline
#endif

namespace mdlsae {

// Element types of pre-activation buffers, numbered as in the Python layer.
enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };

// Largest quantized value a code may carry; larger ones mean the step is far too fine.
constexpr int32_t kMaxQ = 1 << 24;

MDLSAE_HD float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

MDLSAE_HD float bf16_to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }

// Exact IEEE binary16 -> binary32 widening, subnormals, infinities and NaN included.
MDLSAE_HD float f16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    const float mag = float(mant) * 5.9604644775390625e-08f;  // mant * 2^-24, exact
    return sign ? -mag : mag;
  }
  if (exp == 31) return bits_to_float(sign | 0x7f800000u | (mant << 13));
  return bits_to_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

template <DType T>
MDLSAE_HD float load_as_float(const void* base, int64_t i) {
  if constexpr (T == DType::F32) {
    return static_cast<const float*>(base)[i];
  } else if constexpr (T == DType::F16) {
    return f16_to_float(static_cast<const uint16_t*>(base)[i]);
  } else {
    return bf16_to_float(static_cast<const uint16_t*>(base)[i]);
  }
}

// q = rint(z / step), round half to even. Returns 0 for z <= 0 (inactive) and -1 when the
// quotient reaches kMaxQ (the caller reports "step too small").
MDLSAE_HD int32_t quantize(float z, float step) {
  if (!(z > 0.0f)) return 0;
  const float r = z / step;
  if (!(r < float(kMaxQ))) return -1;
  return int32_t(rintf(r));
}

// The selection of threshold mode (DESIGN §2): z = pre where pre > thr[f] and pre > 0
// (ReLU); thr == nullptr means plain ReLU. NaN never passes.
MDLSAE_HD bool passes_threshold(float v, const float* thr, int64_t f) {
  return v > 0.0f && (!thr || v > thr[f]);
}

// The message of the error raised when quantize() returns -1, the same on every path.
inline std::string step_too_small_message(int64_t row, int64_t f, float v, float step) {
  return concat("step too small: row ", row, ", feature ", f, ": value ", v, " / step ", step,
                " reaches the limit of ", kMaxQ, " quantization levels");
}

}  // namespace mdlsae
