// Fused select + quantize + histogram on the CPU (see select_quantize.h). Rows are split into
// contiguous ranges, one per worker; each worker scans its rows in blocks, skipping a block
// with one vectorizable test when nothing in it can enter the selection.
#include "cpu/select_quantize.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "common/check.h"
#include "cpu/parallel.h"

namespace mdlsae {
namespace {

constexpr int kBlock = 64;
constexpr int64_t kSample = 512;       // sample size of the TopK threshold estimate
constexpr int64_t kSampledMinD = 1024;  // below this the heap scan is as fast

struct Candidate {
  float v;
  int32_t f;
};

// The selection order: larger value first, then lower feature index. As a heap comparator it
// keeps the lowest-ranked candidate at the root, the one to drop first.
inline bool ranks_higher(const Candidate& a, const Candidate& b) {
  return a.v > b.v || (a.v == b.v && a.f < b.f);
}

struct WorkerOut {
  std::vector<int64_t> row_nnz;
  std::vector<int32_t> index;
  std::vector<int32_t> q;
};

inline float step_of(const Steps& s, int32_t f) { return s.per_feature ? s.per_feature[f] : s.global; }

[[noreturn]] void too_fine(int64_t row, int32_t f, float v, float step) {
  throw std::invalid_argument(step_too_small_message(row, f, v, step));
}

inline void emit(WorkerOut& out, int64_t row, int32_t f, float v, const Steps& steps) {
  const int32_t q = quantize(v, step_of(steps, f));
  if (q < 0) too_fine(row, f, v, step_of(steps, f));
  if (q >= 1) {
    out.index.push_back(f);
    out.q.push_back(q);
  }
}

// Exact TopK over a heap, scanning in index order: an equal value later never displaces an
// earlier one. Used when the row is small or the sampled threshold below was too high.
void topk_heap(const float* x, int64_t d, int32_t k, std::vector<Candidate>& heap) {
  heap.clear();
  float thr = 0.0f;  // only positive values survive the ReLU
  for (int64_t j0 = 0; j0 < d; j0 += kBlock) {
    const int n = int(std::min<int64_t>(kBlock, d - j0));
    const float* b = x + j0;
    int any = 0;
    for (int t = 0; t < n; ++t) any |= int(b[t] > thr);
    if (!any) continue;
    for (int t = 0; t < n; ++t) {
      if (!(b[t] > thr)) continue;
      heap.push_back({b[t], int32_t(j0 + t)});
      std::push_heap(heap.begin(), heap.end(), ranks_higher);
      if (int32_t(heap.size()) > k) {
        std::pop_heap(heap.begin(), heap.end(), ranks_higher);
        heap.pop_back();
      }
      if (int32_t(heap.size()) == k) thr = heap.front().v;
    }
  }
}

// Writes every (x[j], j) with x[j] >= lo to out (capacity d), in index order; returns the count.
// Candidates are rare, so 16 entries are tested at once and only the set mask bits visited.
int64_t gather_at_least(const float* x, int64_t d, float lo, Candidate* out) {
  int64_t n = 0, j = 0;
#if defined(__SSE2__)
  const __m128 vlo = _mm_set1_ps(lo);
  for (; j + 16 <= d; j += 16) {
    unsigned mask = unsigned(_mm_movemask_ps(_mm_cmpge_ps(_mm_loadu_ps(x + j), vlo))) |
                    unsigned(_mm_movemask_ps(_mm_cmpge_ps(_mm_loadu_ps(x + j + 4), vlo))) << 4 |
                    unsigned(_mm_movemask_ps(_mm_cmpge_ps(_mm_loadu_ps(x + j + 8), vlo))) << 8 |
                    unsigned(_mm_movemask_ps(_mm_cmpge_ps(_mm_loadu_ps(x + j + 12), vlo))) << 12;
    while (mask) {
      const int i = __builtin_ctz(mask);
      out[n++] = {x[j + i], int32_t(j + i)};
      mask &= mask - 1;
    }
  }
#endif
  for (; j < d; ++j)
    if (x[j] >= lo) out[n++] = {x[j], int32_t(j)};
  return n;
}

// TopK through a sampled threshold: estimate from a sample a value t exceeded by a
// little more than k entries, gather every entry >= t in one vectorizable pass, and select
// exactly among those few. If fewer than k entries reach t the result could be wrong, so the
// exact heap scan runs instead (rare: t sits several standard deviations below the k-th).
// Returns the number of candidates left at the front of `buf` (k, or fewer when fewer than k
// values are positive), or -1 when the exact scan must run.
int64_t topk_sampled(const float* x, int64_t d, int32_t k, std::vector<float>& sample,
                     std::vector<Candidate>& buf) {
  // Runs of 16 contiguous entries spread over the row: few cache lines, little position bias.
  const int64_t runs = std::min<int64_t>(kSample / 16, d / 16);
  sample.clear();
  for (int64_t c = 0; c < runs; ++c) {
    const float* run = x + (d / 16) / runs * c * 16;
    for (int i = 0; i < 16; ++i)
      if (run[i] == run[i]) sample.push_back(run[i]);  // NaN never ranks
  }
  const double m = double(k) * double(sample.size()) / double(d);
  const size_t r = std::min(sample.size(), size_t(std::ceil(m + 3.0 * std::sqrt(m) + 3.0)));
  if (r == 0) return -1;
  std::nth_element(sample.begin(), sample.begin() + (r - 1), sample.end(), std::greater<float>());
  const float t = sample[r - 1];
  // Only positive values survive the ReLU; x >= smallest subnormal is x > 0.
  const bool all_positive = !(t > 0.0f);
  const float lo = all_positive ? std::numeric_limits<float>::denorm_min() : t;
  if (buf.size() < size_t(d)) buf.resize(size_t(d));  // grown once per worker, never cleared
  int64_t n_cand = gather_at_least(x, d, lo, buf.data());
  if (n_cand < k && !all_positive) return -1;
  if (n_cand > k) {
    std::nth_element(buf.begin(), buf.begin() + (k - 1), buf.begin() + n_cand, ranks_higher);
    n_cand = k;
  }
  return n_cand;
}

// The row's TopK at the front of cand (capacity d), in no particular order; returns its size.
int64_t topk_row(const float* x, int64_t d, int32_t k, std::vector<float>& sample,
                 std::vector<Candidate>& heap, std::vector<Candidate>& cand) {
  int64_t n = (d >= kSampledMinD && d >= 8 * int64_t(k)) ? topk_sampled(x, d, k, sample, cand) : -1;
  if (n < 0) {
    topk_heap(x, d, k, heap);
    std::copy(heap.begin(), heap.end(), cand.begin());
    n = int64_t(heap.size());
  }
  return n;
}

// The children of every latent, as CSR (ascending within a parent), and the bias that hides
// every non-root from the TopK (-inf) while it selects the roots.
struct Forest {
  std::vector<int64_t> ptr;
  std::vector<int32_t> kids;
  std::vector<float> root_bias;

  Forest(const int32_t* parent, const float* bias, int64_t d) : ptr(size_t(d) + 1, 0), root_bias(size_t(d)) {
    for (int64_t f = 0; f < d; ++f) {
      MDLSAE_CHECK_ARG(parent[f] >= -1 && parent[f] < d && parent[f] != f, "parent[", f, "] = ", parent[f],
                       ": expected -1 or another latent's index in [0, ", d, ")");
      if (parent[f] >= 0) ++ptr[size_t(parent[f]) + 1];
      root_bias[f] = parent[f] < 0 ? (bias ? bias[f] : 0.0f) : -std::numeric_limits<float>::infinity();
    }
    for (int64_t f = 0; f < d; ++f) ptr[f + 1] += ptr[f];
    kids.resize(size_t(ptr[d]));
    std::vector<int64_t> at(ptr.begin(), ptr.end() - 1);
    for (int64_t f = 0; f < d; ++f)
      if (parent[f] >= 0) kids[size_t(at[parent[f]]++)] = int32_t(f);
  }
};

// Appends below the n kept candidates (which may grow) each one's strongest child when it is
// positive and above its threshold (thr: [d] or nullptr); pre_of(f) gives a latent's
// pre-activation. Each latent has one parent, so nothing is visited twice and a cyclic `parent`
// (never reachable from a root) is never visited at all.
template <typename PreOf>
int64_t grow_tree(const Forest& forest, const float* thr, int64_t n, std::vector<Candidate>& cand, PreOf pre_of) {
  for (int64_t i = 0; i < n; ++i) {
    const int32_t f = cand[size_t(i)].f;
    float best = -std::numeric_limits<float>::infinity();
    int32_t best_c = -1;
    for (int64_t j = forest.ptr[f]; j < forest.ptr[f + 1]; ++j) {
      const int32_t c = forest.kids[size_t(j)];
      const float v = pre_of(c);
      if (v != v) {  // a NaN sibling: no child, as the reference's max (which propagates NaN) decides
        best_c = -1;
        break;
      }
      if (v > best) best = v, best_c = c;
    }
    if (best_c >= 0 && passes_threshold(best, thr, best_c)) cand[size_t(n++)] = {best, best_c};
  }
  return n;
}

void threshold_row(const float* x, int64_t d, const float* thr, int64_t row, const Steps& steps,
                   WorkerOut& out) {
  for (int64_t j0 = 0; j0 < d; j0 += kBlock) {
    const int n = int(std::min<int64_t>(kBlock, d - j0));
    const float* b = x + j0;
    int any = 0;
    if (thr) {
      for (int t = 0; t < n; ++t) any |= int(b[t] > thr[j0 + t]) & int(b[t] > 0.0f);
    } else {
      for (int t = 0; t < n; ++t) any |= int(b[t] > 0.0f);
    }
    if (!any) continue;
    for (int t = 0; t < n; ++t) {
      const float v = b[t];
      if (passes_threshold(v, thr, j0 + t)) emit(out, row, int32_t(j0 + t), v, steps);
    }
  }
}

template <DType T>
void run_rows(const void* pre, int64_t begin, int64_t end, int64_t d, int64_t stride,
              const Selection& sel, const Forest* forest, const Steps& steps, WorkerOut& out) {
  // a tree selects its roots on a copy whose non-roots are -inf
  const float* bias = forest ? forest->root_bias.data() : sel.bias;
  std::vector<float> widened(T == DType::F32 && !bias ? 0 : size_t(d));
  std::vector<Candidate> heap, cand(sel.k > 0 || forest ? size_t(d) : 0);
  std::vector<float> sample;
  for (int64_t r = begin; r < end; ++r) {
    const float* x;
    if constexpr (T == DType::F32) {
      x = static_cast<const float*>(pre) + r * stride;
      if (bias) {  // the row is in cache: adding here is nearly free
        for (int64_t j = 0; j < d; ++j) widened[j] = x[j] + bias[j];
        x = widened.data();
      }
    } else {
      const uint16_t* src = static_cast<const uint16_t*>(pre) + r * stride;
      if (bias) {
        for (int64_t j = 0; j < d; ++j) widened[j] = load_as_float<T>(src, j) + bias[j];
      } else {
        for (int64_t j = 0; j < d; ++j) widened[j] = load_as_float<T>(src, j);
      }
      x = widened.data();
    }
    const size_t before = out.index.size();
    if (sel.k > 0 || forest) {
      int64_t n = 0;
      if (sel.k > 0) {
        n = topk_row(x, d, sel.k, sample, heap, cand);
      } else {  // the roots above their thresholds (the others are -inf here)
        for (int64_t j = 0; j < d; ++j)
          if (passes_threshold(x[j], sel.threshold, j)) cand[size_t(n++)] = {x[j], int32_t(j)};
      }
      if (forest) {
        const auto* row = static_cast<const std::conditional_t<T == DType::F32, float, uint16_t>*>(pre) + r * stride;
        n = grow_tree(*forest, sel.k > 0 ? nullptr : sel.threshold, n, cand, [&](int32_t c) {
          float v;
          if constexpr (T == DType::F32) v = row[c]; else v = load_as_float<T>(row, c);
          return sel.bias ? v + sel.bias[c] : v;
        });
      }
      std::sort(cand.begin(), cand.begin() + n, [](const Candidate& a, const Candidate& b) { return a.f < b.f; });
      for (int64_t i = 0; i < n; ++i) emit(out, r, cand[i].f, cand[i].v, steps);
    } else {
      threshold_row(x, d, sel.threshold, r, steps, out);
    }
    out.row_nnz.push_back(int64_t(out.index.size() - before));
  }
}

}  // namespace

SparseCodes select_quantize(const void* pre, DType dtype, int64_t rows, int64_t d_sae,
                            int64_t row_stride, const Selection& sel, const Steps& steps,
                            Histogram* hist) {
  MDLSAE_CHECK_ARG(rows >= 0, "rows must be >= 0, got ", rows);
  MDLSAE_CHECK_ARG(d_sae > 0 && d_sae < (int64_t(1) << 31), "d_sae must be in [1, 2^31), got ",
                   d_sae);
  MDLSAE_CHECK_ARG(row_stride >= d_sae, "row_stride ", row_stride, " < d_sae ", d_sae);
  MDLSAE_CHECK_ARG(sel.k >= 0 && sel.k <= d_sae, "k must be in [0, d_sae = ", d_sae, "], got ",
                   sel.k);
  MDLSAE_CHECK_ARG(rows == 0 || pre != nullptr, "null pre-activation buffer");
  if (steps.per_feature) {
    for (int64_t f = 0; f < d_sae; ++f)
      MDLSAE_CHECK_ARG(steps.per_feature[f] > 0.0f && std::isfinite(steps.per_feature[f]),
                       "step of feature ", f, " must be a positive finite number, got ",
                       steps.per_feature[f]);
  } else {
    MDLSAE_CHECK_ARG(steps.global > 0.0f && std::isfinite(steps.global),
                     "step must be a positive finite number, got ", steps.global);
  }
  if (hist)
    MDLSAE_CHECK_ARG(hist->d_sae() == d_sae, "histogram has d_sae ", hist->d_sae(),
                     " but the pre-activations have ", d_sae);

  std::optional<Forest> forest;
  if (sel.parent) forest.emplace(sel.parent, sel.bias, d_sae);
  const int workers = workers_for(rows, 64);
  std::vector<WorkerOut> outs(size_t(std::max(workers, 1)));
  parallel_ranges(rows, workers, [&](int w, int64_t b, int64_t e) {
    WorkerOut& out = outs[w];
    out.row_nnz.reserve(size_t(e - b));
    if (sel.k > 0) {
      out.index.reserve(size_t((e - b) * sel.k));
      out.q.reserve(size_t((e - b) * sel.k));
    }
    const Forest* f = forest ? &*forest : nullptr;
    switch (dtype) {
      case DType::F32: run_rows<DType::F32>(pre, b, e, d_sae, row_stride, sel, f, steps, out); break;
      case DType::F16: run_rows<DType::F16>(pre, b, e, d_sae, row_stride, sel, f, steps, out); break;
      case DType::BF16: run_rows<DType::BF16>(pre, b, e, d_sae, row_stride, sel, f, steps, out); break;
      default: throw std::invalid_argument(concat("unknown dtype code ", int(dtype)));
    }
  });

  SparseCodes codes;
  codes.row_ptr.resize(size_t(rows) + 1);
  codes.row_ptr[0] = 0;
  size_t nnz = 0;
  for (const auto& o : outs) nnz += o.index.size();
  codes.index.reserve(nnz);
  codes.q.reserve(nnz);
  int64_t r = 0;
  for (auto& o : outs) {
    for (int64_t n : o.row_nnz) {
      codes.row_ptr[r + 1] = codes.row_ptr[r] + n;
      ++r;
    }
    codes.index.insert(codes.index.end(), o.index.begin(), o.index.end());
    codes.q.insert(codes.q.end(), o.q.begin(), o.q.end());
  }
  if (hist) hist->count_valid(codes.index.data(), codes.q.data(), int64_t(nnz), rows);
  return codes;
}

}  // namespace mdlsae
