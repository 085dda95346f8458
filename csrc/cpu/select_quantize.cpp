// Fused select + quantize + histogram on the CPU (see select_quantize.h). Rows are split into
// contiguous ranges, one per worker; each worker scans its rows in blocks, skipping a block
// with one vectorizable test when nothing in it can enter the selection.
#include "cpu/select_quantize.h"

#include <algorithm>
#include <optional>

#include "common/check.h"
#include "cpu/parallel.h"

namespace mdlsae {
namespace {

constexpr int kBlock = 64;

struct Candidate {
  float v;
  int32_t f;
};

// Heap order: the root is the candidate to drop first (smallest value, then largest index).
inline bool drop_first(const Candidate& a, const Candidate& b) {
  return a.v > b.v || (a.v == b.v && a.f < b.f);
}

struct WorkerOut {
  std::vector<int64_t> row_nnz;
  std::vector<int32_t> index;
  std::vector<int32_t> q;
  std::optional<HistogramShard> shard;
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
    if (out.shard) out.shard->add(f, q);
  }
}

void topk_row(const float* x, int64_t d, int32_t k, int64_t row, const Steps& steps,
              std::vector<Candidate>& heap, WorkerOut& out) {
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
      // Scanning in index order: an equal value later never displaces an earlier one.
      heap.push_back({b[t], int32_t(j0 + t)});
      std::push_heap(heap.begin(), heap.end(), drop_first);
      if (int32_t(heap.size()) > k) {
        std::pop_heap(heap.begin(), heap.end(), drop_first);
        heap.pop_back();
      }
      if (int32_t(heap.size()) == k) thr = heap.front().v;
    }
  }
  std::sort(heap.begin(), heap.end(), [](const Candidate& a, const Candidate& b) { return a.f < b.f; });
  for (const Candidate& c : heap) emit(out, row, c.f, c.v, steps);
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
              const Selection& sel, const Steps& steps, WorkerOut& out) {
  std::vector<float> widened(T == DType::F32 ? 0 : size_t(d));
  std::vector<Candidate> heap;
  heap.reserve(size_t(sel.k) + 1);
  for (int64_t r = begin; r < end; ++r) {
    const float* x;
    if constexpr (T == DType::F32) {
      x = static_cast<const float*>(pre) + r * stride;
    } else {
      const uint16_t* src = static_cast<const uint16_t*>(pre) + r * stride;
      for (int64_t j = 0; j < d; ++j) widened[j] = load_as_float<T>(src, j);
      x = widened.data();
    }
    const size_t before = out.index.size();
    if (sel.k > 0)
      topk_row(x, d, sel.k, r, steps, heap, out);
    else
      threshold_row(x, d, sel.threshold, r, steps, out);
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

  const int workers = workers_for(rows, 64);
  std::vector<WorkerOut> outs(size_t(std::max(workers, 1)));
  parallel_ranges(rows, workers, [&](int w, int64_t b, int64_t e) {
    WorkerOut& out = outs[w];
    out.row_nnz.reserve(size_t(e - b));
    if (sel.k > 0) {
      out.index.reserve(size_t((e - b) * sel.k));
      out.q.reserve(size_t((e - b) * sel.k));
    }
    if (hist) out.shard.emplace(hist->make_shard());
    switch (dtype) {
      case DType::F32: run_rows<DType::F32>(pre, b, e, d_sae, row_stride, sel, steps, out); break;
      case DType::F16: run_rows<DType::F16>(pre, b, e, d_sae, row_stride, sel, steps, out); break;
      case DType::BF16: run_rows<DType::BF16>(pre, b, e, d_sae, row_stride, sel, steps, out); break;
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
    if (hist && o.shard) hist->merge(*o.shard);
  }
  if (hist) hist->add_rows(rows);
  return codes;
}

}  // namespace mdlsae
