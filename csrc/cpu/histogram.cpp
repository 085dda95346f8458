// Exact per-feature histograms of quantized values (see histogram.h).
#include "cpu/histogram.h"

#include <algorithm>

#include "common/check.h"

namespace mdlsae {

Histogram::Histogram(int64_t d_sae, int32_t dense_cap) : d_sae_(d_sae), cap_(dense_cap) {
  MDLSAE_CHECK_ARG(d_sae > 0 && d_sae < (int64_t(1) << 31), "d_sae must be in [1, 2^31), got ",
                   d_sae);
  MDLSAE_CHECK_ARG(dense_cap >= 2 && dense_cap <= 4096, "dense_cap must be in [2, 4096], got ",
                   dense_cap);
  dense_.assign(size_t(d_sae) * cap_, 0);
}

void Histogram::merge(const Histogram& other) {
  MDLSAE_CHECK_ARG(other.d_sae_ == d_sae_ && other.cap_ == cap_,
                   "cannot merge histograms of different shapes: d_sae ", other.d_sae_, " vs ",
                   d_sae_, ", cap ", other.cap_, " vs ", cap_);
  for (size_t i = 0; i < dense_.size(); ++i) dense_[i] += other.dense_[i];
  for (const auto& kv : other.overflow_) overflow_[kv.first] += kv.second;
  rows_ += other.rows_;
}

void Histogram::add_codes(const int32_t* index, const int32_t* q, int64_t nnz, int64_t rows) {
  for (int64_t i = 0; i < nnz; ++i) {
    MDLSAE_CHECK_ARG(index[i] >= 0 && index[i] < d_sae_, "code ", i, " has feature ", index[i],
                     ", outside [0, ", d_sae_, ")");
    MDLSAE_CHECK_ARG(q[i] >= 1, "code ", i, " has q = ", q[i], "; active codes need q >= 1");
  }
  count_valid(index, q, nnz, rows);
}

void Histogram::count_valid(const int32_t* index, const int32_t* q, int64_t nnz, int64_t rows) {
  for (int64_t i = 0; i < nnz; ++i) {
    if (q[i] < cap_)
      ++dense_[size_t(index[i]) * cap_ + q[i]];
    else
      ++overflow_[(uint64_t(uint32_t(index[i])) << 32) | uint32_t(q[i])];
  }
  rows_ += rows;
}

void Histogram::add_dense_counts(const uint32_t* counts, int64_t size, int64_t rows) {
  MDLSAE_CHECK_ARG(size == int64_t(dense_.size()), "dense counts have ", size,
                   " entries; this histogram needs d_sae * dense_cap = ", dense_.size());
  MDLSAE_CHECK_ARG(rows >= 0, "rows must be >= 0, got ", rows);
  for (int64_t f = 0; f < d_sae_; ++f)
    MDLSAE_CHECK_ARG(counts[f * cap_] == 0, "feature ", f, " has ", counts[f * cap_],
                     " counts of q = 0; active codes need q >= 1");
  for (size_t i = 0; i < dense_.size(); ++i) dense_[i] += counts[i];
  rows_ += rows;
}

HistogramCSR Histogram::to_csr() const {
  std::vector<uint64_t> keys;
  keys.reserve(overflow_.size());
  for (const auto& kv : overflow_) keys.push_back(kv.first);
  std::sort(keys.begin(), keys.end());

  HistogramCSR out;
  out.ptr.assign(size_t(d_sae_) + 1, 0);
  size_t k = 0;
  for (int64_t f = 0; f < d_sae_; ++f) {
    const uint64_t* row = dense_.data() + size_t(f) * cap_;
    for (int32_t v = 1; v < cap_; ++v) {
      if (row[v]) {
        out.q.push_back(v);
        out.count.push_back(int64_t(row[v]));
      }
    }
    for (; k < keys.size() && int64_t(keys[k] >> 32) == f; ++k) {
      out.q.push_back(int32_t(uint32_t(keys[k])));
      out.count.push_back(int64_t(overflow_.at(keys[k])));
    }
    out.ptr[f + 1] = int64_t(out.q.size());
  }
  return out;
}

std::vector<int64_t> Histogram::active_counts() const {
  std::vector<int64_t> n(size_t(d_sae_), 0);
  for (int64_t f = 0; f < d_sae_; ++f) {
    const uint64_t* row = dense_.data() + size_t(f) * cap_;
    for (int32_t v = 1; v < cap_; ++v) n[f] += int64_t(row[v]);
  }
  for (const auto& kv : overflow_) n[kv.first >> 32] += int64_t(kv.second);
  return n;
}

}  // namespace mdlsae
