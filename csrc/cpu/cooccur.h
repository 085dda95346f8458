// Pairwise co-activity of features, counted exactly one block of features at a time, and the
// mutual information between feature activities that parent discovery ranks edges by
// (DESIGN §2: coding child i given parent j's activity saves exactly N·I(a_i; a_j) bits).
// A block [lo, hi) holds counts[i - lo][j] = rows where i and j > i are both active: the
// caller sizes the block to its memory budget (4·d_sae bytes per feature of the block) and
// streams every batch of codes through it, so memory never grows with the number of rows.
#pragma once
#include <cstdint>
#include <vector>

namespace mdlsae {

class PairCounter {
 public:
  PairCounter(int64_t d_sae, int64_t lo, int64_t hi);

  // Row-major sparse codes of one batch: row_ptr[rows + 1], index (strictly increasing per row;
  // host memory, the layout select_quantize writes).
  void add(const int64_t* row_ptr, int64_t rows, const int32_t* index, int64_t nnz);

  // For every feature of the block, its `k` best partners j > i by mutual information, and for
  // every feature j its `k` best partners i in this block (i < j): the candidate edges of a
  // maximum spanning forest. active[d_sae]: rows where each feature is active; n_rows: all rows.
  // Returns (i, j, bits) triples, i < j, bits = N·I(a_i; a_j) in bits, without duplicates.
  struct Edges {
    std::vector<int32_t> i, j;
    std::vector<double> bits;
    std::vector<int64_t> both;  // rows where i and j are both active
  };
  Edges top_edges(const int64_t* active, int64_t n_rows, int32_t k) const;

  int64_t d_sae() const { return d_; }
  int64_t lo() const { return lo_; }
  int64_t hi() const { return hi_; }
  // The [hi - lo, d] counts themselves, e.g. to sum them with other processes' before top_edges.
  uint32_t* counts() { return counts_.data(); }

 private:
  int64_t d_, lo_, hi_;
  std::vector<uint32_t> counts_;  // [hi - lo, d]
};

// The maximum-weight spanning forest of the edges (i[e], j[e]) with gain[e] > 0 (Kruskal; ties
// by position), each tree rooted at its most active feature (ties: the lower index) and its
// edges pointing away from the root. parent[f] is -1 for roots; edge[f] is the index of the
// edge joining f to its parent (-1 for roots).
struct ForestOut {
  std::vector<int64_t> parent, edge;
};
ForestOut max_forest(int64_t d_sae, const int32_t* i, const int32_t* j, const double* gain, int64_t n_edges,
                     const int64_t* active);

}  // namespace mdlsae
