// The fused CUDA kernel of DESIGN §2, the GPU twin of cpu/select_quantize.h: from encoder
// pre-activations already on the device, select (TopK or threshold), quantize and count, and
// write the same sparse CSR codes as the CPU kernel, bit for bit. The caller allocates every
// buffer (torch, in Python) and runs the three steps on one stream with a single host sync
// between them (to learn nnz): select_quantize_rows, an exclusive prefix sum of the row counts,
// write_codes. Every pointer is a device pointer on the current device.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/quantize.h"

namespace mdlsae::cuda {

// The largest k of the GPU TopK: each row's selection lives in shared memory.
constexpr int32_t kMaxTopK = 256;

struct SelectQuantizeArgs {
  const void* pre = nullptr;  // device, element (r, f) at r * row_stride + f, of `dtype`
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t d_sae = 0;
  int64_t row_stride = 0;  // in elements, >= d_sae
  // k > 0: keep the k largest pre-activations of a row (ties: lower feature first), then ReLU;
  // k == 0: keep pre > threshold[f] and pre > 0 (threshold == nullptr: plain ReLU).
  int32_t k = 0;
  const float* threshold = nullptr;  // device [d_sae] or nullptr
  const float* bias = nullptr;       // device [d_sae] or nullptr: added (float32) to every row as it is read
  float step = 1.0f;                 // the global step, used when steps == nullptr
  const float* steps = nullptr;      // device [d_sae], positive and finite, or nullptr
  // Dense histogram: counts[f * dense_cap + q] += codes (f, q) with 1 <= q < dense_cap.
  // Codes with larger q are left to the host, which has them in the CSR output anyway.
  uint32_t* counts = nullptr;  // device [d_sae * dense_cap] or nullptr
  int32_t dense_cap = 64;
};

// Step 1: selection, quantization and the dense histogram, one pass over the pre-activations.
// row_nnz: device [rows], the number of codes (q >= 1) of each row.
// slot_index, slot_q: device [rows * k] each (TopK only, else nullptr): row r's codes in its
//   first row_nnz[r] slots, features increasing.
// first_error: device [1], set to INT64_MAX by the caller; lowered to r * d_sae + f for each
//   selected element whose quantization reaches kMaxQ, so it ends at the first in row order.
void select_quantize_rows(const SelectQuantizeArgs& a, int64_t* row_nnz, int32_t* slot_index,
                          int32_t* slot_q, int64_t* first_error, cudaStream_t stream);

// Step 3: the CSR codes. row_ptr: device [rows + 1], the exclusive prefix sum of row_nnz;
// index, q: device [row_ptr[rows]] each; slot_index, slot_q as given to step 1.
void write_codes(const SelectQuantizeArgs& a, const int64_t* row_ptr, const int32_t* slot_index,
                 const int32_t* slot_q, int32_t* index, int32_t* q, cudaStream_t stream);

// Throws the CPU kernel's "step too small" std::invalid_argument for the element that step 1
// recorded in first_error (read back from the device: synchronizes the stream).
[[noreturn]] void throw_step_too_small(const SelectQuantizeArgs& a, int64_t first_error,
                                       cudaStream_t stream);

}  // namespace mdlsae::cuda
