// Per-feature histograms of quantized values q >= 1, accumulated exactly over any number of
// batches, counted serially from finished codes (a batch has ~rows·L0 codes: cheaper than
// per-worker [d_sae, cap] tables to zero and merge at D = 262k). Small q (the common case) are
// counted in a dense [d_sae, cap] table; larger q go to a sparse overflow map, so memory stays
// bounded for any step while counts stay exact.
#pragma once
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace mdlsae {

// Histogram in compressed-sparse-row form: feature f owns entries [ptr[f], ptr[f+1]),
// with q strictly increasing inside a feature.
struct HistogramCSR {
  std::vector<int64_t> ptr;
  std::vector<int32_t> q;
  std::vector<int64_t> count;
};

class Histogram {
 public:
  explicit Histogram(int64_t d_sae, int32_t dense_cap = 64);

  int64_t d_sae() const { return d_sae_; }
  int32_t dense_cap() const { return cap_; }
  int64_t rows() const { return rows_; }

  // Adds sparse codes produced elsewhere (a decoded file, the GPU path); checks them first.
  void add_codes(const int32_t* index, const int32_t* q, int64_t nnz, int64_t rows);
  // The same for codes known valid (features in range, q >= 1): the fused kernel's output.
  void count_valid(const int32_t* index, const int32_t* q, int64_t nnz, int64_t rows);
  // Adds a dense [d_sae, dense_cap] table of counts of q < dense_cap (the GPU path's; its q = 0
  // column must be zero). Codes with q >= dense_cap go through add_codes.
  void add_dense_counts(const uint32_t* counts, int64_t size, int64_t rows);
  void merge(const Histogram& other);

  HistogramCSR to_csr() const;
  std::vector<int64_t> active_counts() const;  // rows in which each feature is active

 private:
  int64_t d_sae_;
  int32_t cap_;
  int64_t rows_ = 0;
  std::vector<uint64_t> dense_;
  std::unordered_map<uint64_t, uint64_t> overflow_;  // key: feature << 32 | q
};

}  // namespace mdlsae
