// Checks of CUDA runtime calls in host code. A failure throws std::runtime_error naming the
// failing expression, the CUDA error and the place (faiss FaissAssert style), so a broken
// launch or a device fault surfaces in Python as one readable RuntimeError.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>

#include "common/check.h"

#define MDLSAE_CUDA_CHECK(expr)                                                             \
  do {                                                                                      \
    const cudaError_t mdlsae_err_ = (expr);                                                 \
    if (mdlsae_err_ != cudaSuccess)                                                         \
      throw std::runtime_error(::mdlsae::concat("CUDA call '", #expr, "' failed: ",        \
                                                cudaGetErrorName(mdlsae_err_), " (",        \
                                                cudaGetErrorString(mdlsae_err_), ") at ",   \
                                                __FILE__, ":", __LINE__));                  \
  } while (0)
