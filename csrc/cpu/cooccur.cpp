// Exact pair counts per feature block and the candidate edges of parent discovery (see
// cooccur.h). Workers split the block's features, so each owns its rows of the count matrix
// and no counts are shared or merged.
#include "cpu/cooccur.h"

#include <algorithm>
#include <cmath>

#include "common/check.h"
#include "cpu/parallel.h"

namespace mdlsae {
namespace {

inline double xlog2x(double x) { return x > 0 ? x * std::log2(x) : 0.0; }

// A candidate partner, ordered by bits (larger first), then by index (smaller first): a total
// order, so the k best do not depend on how the work was split.
struct Partner {
  double bits;
  int32_t other;
};
inline bool better(const Partner& a, const Partner& b) {
  return a.bits > b.bits || (a.bits == b.bits && a.other < b.other);
}

// The k best partners seen so far, unordered; `worst` indexes the one to replace next.
struct Best {
  Partner* p;
  int32_t size = 0, worst = 0;
  void offer(const Partner& c, int32_t k) {
    if (size < k) {
      p[size] = c;
      if (size == 0 || better(p[worst], c)) worst = size;
      ++size;
      return;
    }
    if (!better(c, p[worst])) return;
    p[worst] = c;
    worst = 0;
    for (int32_t t = 1; t < k; ++t)
      if (better(p[worst], p[t])) worst = t;
  }
};

}  // namespace

PairCounter::PairCounter(int64_t d_sae, int64_t lo, int64_t hi) : d_(d_sae), lo_(lo), hi_(hi) {
  MDLSAE_CHECK_ARG(d_sae > 0 && d_sae < (int64_t(1) << 31), "d_sae must be in [1, 2^31), got ", d_sae);
  MDLSAE_CHECK_ARG(0 <= lo && lo <= hi && hi <= d_sae, "feature block [", lo, ", ", hi, ") is not inside [0, ",
                   d_sae, ")");
  counts_.assign(size_t(hi - lo) * size_t(d_sae), 0);
}

void PairCounter::add(const int64_t* row_ptr, int64_t rows, const int32_t* index, int64_t nnz) {
  MDLSAE_CHECK_ARG(rows >= 0 && row_ptr[0] == 0 && row_ptr[rows] == nnz, "row_ptr does not describe ", nnz,
                   " codes in ", rows, " rows");
  for (int64_t r = 0; r < rows; ++r) {
    MDLSAE_CHECK_ARG(row_ptr[r] <= row_ptr[r + 1], "row_ptr decreases at row ", r);
    for (int64_t e = row_ptr[r]; e < row_ptr[r + 1]; ++e)
      MDLSAE_CHECK_ARG(index[e] >= 0 && index[e] < d_ && (e == row_ptr[r] || index[e] > index[e - 1]),
                       "row ", r, " does not list increasing features in [0, ", d_, ")");
  }
  const int64_t width = hi_ - lo_;
  parallel_ranges(width, workers_for(width, 16), [&](int, int64_t b, int64_t e) {
    const int32_t fb = int32_t(lo_ + b), fe = int32_t(lo_ + e);
    for (int64_t r = 0; r < rows; ++r) {
      const int32_t *first = index + row_ptr[r], *last = index + row_ptr[r + 1];
      for (const int32_t* p = std::lower_bound(first, last, fb); p < last && *p < fe; ++p) {
        uint32_t* c = counts_.data() + size_t(*p - lo_) * size_t(d_);
        for (const int32_t* q = p + 1; q < last; ++q) ++c[*q];
      }
    }
  });
}

PairCounter::Edges PairCounter::top_edges(const int64_t* active, int64_t n_rows, int32_t k) const {
  MDLSAE_CHECK_ARG(k >= 1, "k must be >= 1, got ", k);
  MDLSAE_CHECK_ARG(n_rows >= 0 && n_rows < (int64_t(1) << 32), "pair counts hold up to 2^32 - 1 rows, got ", n_rows);
  for (int64_t f = 0; f < d_; ++f)
    MDLSAE_CHECK_ARG(active[f] >= 0 && active[f] <= n_rows, "feature ", f, " active in ", active[f], " of ", n_rows,
                     " rows");
  // N·I = Σ_ab f(n_ab) - Σ_a f(n_a) - Σ_b f(n_b) + f(N), f(x) = x log2 x: the marginal terms once
  // per feature, so a pair costs the logs of its four cells only (one when they never meet)
  std::vector<double> fa(static_cast<size_t>(d_)), marg(static_cast<size_t>(d_));
  for (int64_t f = 0; f < d_; ++f) {
    fa[f] = xlog2x(double(active[f]));
    marg[f] = fa[f] + xlog2x(double(n_rows - active[f]));
  }
  const double fn = xlog2x(double(n_rows));
  const auto bits_of = [&](int32_t i, int32_t j, uint32_t both) {
    const double ab = double(both), a = double(active[i]), b = double(active[j]);
    const double cells = both ? xlog2x(ab) + xlog2x(a - ab) + xlog2x(b - ab) : fa[i] + fa[j];
    return std::max(cells + xlog2x(double(n_rows) - a - b + ab) - marg[i] - marg[j] + fn, 0.0);
  };
  const int64_t width = hi_ - lo_;
  const int workers = std::max(workers_for(width, 16), 1);
  // per worker: the k best partners of every feature j among the worker's rows i < j
  std::vector<std::vector<Partner>> col_store(static_cast<size_t>(workers));
  std::vector<std::vector<int32_t>> col_size(static_cast<size_t>(workers));
  std::vector<Edges> part(static_cast<size_t>(workers));
  parallel_ranges(width, workers, [&](int w, int64_t b, int64_t e) {
    std::vector<Partner>& cs = col_store[w];
    std::vector<int32_t>& csz = col_size[w];
    cs.assign(size_t(d_) * size_t(k), Partner{0, 0});
    csz.assign(size_t(d_), 0);
    std::vector<int32_t> cworst(static_cast<size_t>(d_), 0);
    std::vector<Partner> row(static_cast<size_t>(k));
    for (int64_t li = b; li < e; ++li) {
      const int32_t i = int32_t(lo_ + li);
      const uint32_t* c = counts_.data() + size_t(li) * size_t(d_);
      Best best{row.data()};
      for (int32_t j = i + 1; j < d_; ++j) {
        const Partner pij{bits_of(i, j, c[j]), j};
        best.offer(pij, k);
        Best colj{cs.data() + size_t(j) * k, csz[j], cworst[j]};
        colj.offer(Partner{pij.bits, i}, k);
        csz[j] = colj.size;
        cworst[j] = colj.worst;
      }
      for (int32_t t = 0; t < best.size; ++t) {
        part[w].i.push_back(i);
        part[w].j.push_back(row[t].other);
      }
    }
  });
  // merge: row candidates, then the k best of each column over all workers
  std::vector<std::pair<int32_t, int32_t>> pairs;
  for (const Edges& p : part)
    for (size_t t = 0; t < p.i.size(); ++t) pairs.emplace_back(p.i[t], p.j[t]);
  std::vector<Partner> col;
  for (int64_t j = 0; j < d_; ++j) {
    col.clear();
    for (int w = 0; w < workers; ++w)
      for (int32_t t = 0; t < (col_size[w].empty() ? 0 : col_size[w][j]); ++t)
        col.push_back(col_store[w][size_t(j) * k + t]);
    const size_t keep = std::min(col.size(), size_t(k));
    std::partial_sort(col.begin(), col.begin() + keep, col.end(), better);
    for (size_t t = 0; t < keep; ++t) pairs.emplace_back(col[t].other, int32_t(j));
  }
  std::sort(pairs.begin(), pairs.end());
  pairs.erase(std::unique(pairs.begin(), pairs.end()), pairs.end());
  Edges out;
  for (const auto& [i, j] : pairs) {
    const int64_t both = counts_[size_t(i - lo_) * size_t(d_) + size_t(j)];
    out.i.push_back(i);
    out.j.push_back(j);
    out.both.push_back(both);
    out.bits.push_back(bits_of(i, j, uint32_t(both)));
  }
  return out;
}

ForestOut max_forest(int64_t d_sae, const int32_t* i, const int32_t* j, const double* gain, int64_t n_edges,
                     const int64_t* active) {
  MDLSAE_CHECK_ARG(d_sae > 0 && d_sae < (int64_t(1) << 31), "d_sae must be in [1, 2^31), got ", d_sae);
  for (int64_t e = 0; e < n_edges; ++e)
    MDLSAE_CHECK_ARG(i[e] >= 0 && i[e] < d_sae && j[e] >= 0 && j[e] < d_sae && i[e] != j[e], "edge ", e, " (", i[e],
                     ", ", j[e], ") is not between two features in [0, ", d_sae, ")");
  std::vector<int64_t> order;
  for (int64_t e = 0; e < n_edges; ++e)
    if (gain[e] > 0) order.push_back(e);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return gain[a] > gain[b]; });
  std::vector<int32_t> up(static_cast<size_t>(d_sae));
  for (int64_t f = 0; f < d_sae; ++f) up[f] = int32_t(f);
  const auto find = [&](int32_t f) {
    while (up[f] != f) f = up[f] = up[up[f]];
    return f;
  };
  std::vector<std::vector<int64_t>> adj(static_cast<size_t>(d_sae));  // kept edges at each feature
  for (int64_t e : order) {
    const int32_t a = find(i[e]), b = find(j[e]);
    if (a == b) continue;
    up[a] = b;
    adj[i[e]].push_back(e);
    adj[j[e]].push_back(e);
  }
  // roots: per tree the most active feature; then orient breadth-first from it
  std::vector<int32_t> root_of(static_cast<size_t>(d_sae), -1);
  for (int64_t f = 0; f < d_sae; ++f) {
    const int32_t t = find(int32_t(f));
    const int32_t r = root_of[t];
    if (r < 0 || active[f] > active[r]) root_of[t] = int32_t(f);
  }
  ForestOut out{std::vector<int64_t>(static_cast<size_t>(d_sae), -2),
                std::vector<int64_t>(static_cast<size_t>(d_sae), -1)};
  std::vector<int32_t> queue;
  for (int64_t f = 0; f < d_sae; ++f) {
    if (root_of[f] < 0) continue;
    const int32_t r = root_of[f];
    out.parent[r] = -1;
    queue.assign(1, r);
    for (size_t h = 0; h < queue.size(); ++h) {
      const int32_t p = queue[h];
      for (int64_t e : adj[p]) {
        const int32_t c = i[e] == p ? j[e] : i[e];
        if (out.parent[c] != -2) continue;
        out.parent[c] = p;
        out.edge[c] = e;
        queue.push_back(c);
      }
    }
  }
  return out;
}

}  // namespace mdlsae
