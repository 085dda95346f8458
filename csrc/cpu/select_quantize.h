// The fused CPU kernel of DESIGN §2: from SAE encoder pre-activations, select the active
// latents (TopK or a per-feature threshold), quantize them (q = rint(z / step), active iff
// q >= 1) and count the quantized values per feature, in one pass over the rows.
#pragma once
#include <cstdint>
#include <vector>

#include "common/quantize.h"
#include "cpu/histogram.h"

namespace mdlsae {

// k > 0: keep the k largest pre-activations of a row (ties: lower feature index first), then
// ReLU. k == 0: keep pre > threshold[f] (threshold == nullptr means 0, i.e. plain ReLU).
// bias (optional) is added to every row first, in float32: pre = gemm + bias in this pass, so the
// encoder's bias never costs a separate pass over [rows, d_sae] in memory.
// parent (a strict-tree SAE): the roots (parent == -1) are selected alone, the k largest
// (k > 0) or those above their threshold (k == 0); below each kept latent, its child with the
// largest pre-activation (ties: lower index) is kept when > 0 and (k == 0) above its own
// threshold, level by level (python/mdlsae/models/tree.py, the reference).
struct Selection {
  int32_t k = 0;
  const float* threshold = nullptr;  // host, [d_sae] or nullptr
  const float* bias = nullptr;       // host, [d_sae] or nullptr
  const int32_t* parent = nullptr;   // host, [d_sae] or nullptr: -1 or a parent index
};

// One global step, or one per feature when per_feature != nullptr.
struct Steps {
  float global = 1.0f;
  const float* per_feature = nullptr;  // host, [d_sae] or nullptr
};

// Row-major sparse codes: row r owns entries [row_ptr[r], row_ptr[r+1]), feature indices
// strictly increasing inside a row, every q >= 1.
struct SparseCodes {
  std::vector<int64_t> row_ptr;
  std::vector<int32_t> index;
  std::vector<int32_t> q;
};

// pre: host buffer of `rows` rows of d_sae elements of `dtype`, row r starting at element
// r * row_stride. hist (optional) receives the counts of this call's codes and rows.
SparseCodes select_quantize(const void* pre, DType dtype, int64_t rows, int64_t d_sae,
                            int64_t row_stride, const Selection& sel, const Steps& steps,
                            Histogram* hist);

}  // namespace mdlsae
