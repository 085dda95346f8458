// Fused select + quantize + histogram on the GPU (see select_quantize.h). One thread block per
// row. TopK is a radix select over 64-bit keys that make every element distinct (value bits,
// then the complemented feature index), so "the k largest keys" is exactly the CPU kernel's
// choice, ties included, with no tie-breaking pass. The row is read from global memory once per
// 11-bit digit until the keys sharing the decided prefix fit in shared memory; one more read
// gathers them (and the keys already known to be chosen), and the remaining digits run in
// shared memory. A row of up to 4096 features is thus read once, a wider one usually twice,
// more only under heavy ties. The chosen (at most k) keys are quantized and ranked by feature
// into a fixed slot of k codes per row; after the prefix sum, a copy compacts the slots to CSR.
// Threshold mode counts per row, and after the prefix sum writes each row in index order.
#include "cuda/select_quantize.h"

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "common/check.h"
#include "cuda/cuda_check.h"

namespace mdlsae::cuda {
namespace {

constexpr int kTopkThreads = 512;
constexpr int kDigitBits = 11;
constexpr int kBins = 1 << kDigitBits;
constexpr int kBinsPerThread = kBins / kTopkThreads;
// Keys under the decided prefix that are moved to shared memory (8 bytes each). 4096 keeps the
// block's shared memory under the 48 KiB static limit; a bin is rarely that full after the first
// digit (exponent + 3 mantissa bits), and when it is, one more digit runs from global memory.
constexpr int kCandCap = 4096;
constexpr int kRowThreads = 256;  // threshold mode
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // larger row counts loop inside the blocks

static_assert(kBins % kTopkThreads == 0, "bins are split evenly over the threads");
static_assert(kMaxTopK <= kTopkThreads, "one chosen key per thread in the final step");
static_assert(kMaxTopK <= kCandCap, "a finished selection always fits the buffer");

using Args = SelectQuantizeArgs;

__device__ float step_of(const Args& a, int64_t f) { return a.steps ? a.steps[f] : a.step; }

// Pre-activation (row at base, feature f) in float32, the bias added as the CPU kernel adds it.
template <DType T>
__device__ float pre_at(const Args& a, int64_t base, int64_t f) {
  const float v = load_as_float<T>(a.pre, base + f);
  return a.bias ? v + a.bias[f] : v;
}

// quantize(), recording an element whose step is too small (the host turns it into the error).
__device__ int32_t code_of(const Args& a, int64_t row, int64_t f, float v,
                           unsigned long long* first_error) {
  const int32_t q = quantize(v, step_of(a, f));
  if (q < 0) atomicMin(first_error, static_cast<unsigned long long>(row * a.d_sae + f));
  return q;
}

// Counts a code (q >= 1) in the dense histogram. Each (f, q) cell gets at most one count per
// row, and the launchers check rows < 2^32, so uint32 cells cannot wrap.
__device__ void count_code(const Args& a, int64_t f, int32_t q) {
  if (a.counts && q < a.dense_cap) atomicAdd(&a.counts[f * a.dense_cap + q], 1u);
}

// ---------------------------------------------------------------------------------------------
// TopK

// Index bits of the key: enough for d_sae - 1.
struct KeyLayout {
  int index_bits;
  uint64_t index_mask;
};

// Key of a TopK candidate; 0 = not a candidate. As in the CPU kernel only pre > 0 can enter
// (NaN and zeros never do), and for positive floats the IEEE bits (< 2^31) order like the
// values. The complemented index below them makes the lower feature win a tie.
__device__ uint64_t topk_key(float v, int64_t f, KeyLayout L) {
  if (!(v > 0.0f)) return 0;
  return (uint64_t(__float_as_uint(v)) << L.index_bits) | (L.index_mask - uint64_t(f));
}

struct TopkShared {
  uint32_t hist[kBins];
  uint64_t cand[kCandCap];
  uint64_t chosen[kMaxTopK];
  int32_t chosen_q[kMaxTopK];
  typename cub::BlockScan<uint32_t, kTopkThreads>::TempStorage scan;
  int n_cand, n_chosen;
  uint32_t bin, above, bin_count;  // result of the last digit
};

// Radix-select state, identical in every thread of the block. The keys with
// (key >> shift) == prefix hold the krem largest not yet chosen; all keys with
// (key >> shift) > prefix are chosen. done: every key under the prefix is chosen too.
struct Radix {
  uint64_t prefix;
  int shift;
  uint32_t krem;
  bool done;
};

// Calls fn(key) for every candidate key of a row, reading it from global memory.
template <DType T, class Fn>
__device__ void for_each_row_key(const Args& a, int64_t row, KeyLayout L, Fn fn) {
  const int64_t base = row * a.row_stride;
  for (int64_t f = threadIdx.x; f < a.d_sae; f += kTopkThreads) {
    const uint64_t key = topk_key(pre_at<T>(a, base, f), f, L);
    if (key) fn(key);
  }
}

// Calls fn(key) for every key gathered in shared memory.
template <class Fn>
__device__ void for_each_cand_key(const TopkShared& s, Fn fn) {
  for (int i = threadIdx.x; i < s.n_cand; i += kTopkThreads) fn(s.cand[i]);
}

// One digit: histogram the next bits of the keys under the prefix and descend into the bin
// that holds the krem-th largest. Returns the number of keys in that bin.
template <class ForEachKey>
__device__ uint32_t radix_digit(TopkShared& s, Radix& r, ForEachKey for_each_key) {
  const int nb = min(kDigitBits, r.shift);
  const int below = r.shift - nb;
  const uint32_t digit_mask = (1u << nb) - 1;
  for (int i = threadIdx.x; i < kBins; i += kTopkThreads) s.hist[i] = 0;
  __syncthreads();
  for_each_key([&](uint64_t key) {
    if ((key >> r.shift) == r.prefix) atomicAdd(&s.hist[uint32_t(key >> below) & digit_mask], 1u);
  });
  __syncthreads();
  // Thread t owns bins kBins-1-t*B ... kBins-B-t*B (largest first), so an exclusive scan gives
  // the number of keys above each thread's bins.
  uint32_t local[kBinsPerThread];
  uint32_t sum = 0;
  for (int c = 0; c < kBinsPerThread; ++c) {
    local[c] = s.hist[kBins - 1 - (threadIdx.x * kBinsPerThread + c)];
    sum += local[c];
  }
  uint32_t above, total;
  cub::BlockScan<uint32_t, kTopkThreads>(s.scan).ExclusiveSum(sum, above, total);
  if (total <= r.krem) {  // fewer candidates than k (first digit only): all are chosen
    r.done = true;
    return total;
  }
  for (int c = 0; c < kBinsPerThread; ++c) {
    if (above < r.krem && r.krem <= above + local[c]) {  // exactly one thread, one bin
      s.bin = uint32_t(kBins - 1 - (threadIdx.x * kBinsPerThread + c));
      s.above = above;
      s.bin_count = local[c];
    }
    above += local[c];
  }
  __syncthreads();
  r.krem -= s.above;
  r.prefix = (r.prefix << nb) | s.bin;
  r.shift = below;
  r.done = s.bin_count == r.krem;  // always true once shift == 0: the keys are distinct
  return s.bin_count;
}

// Moves the keys above the prefix to `chosen` and those under it to `cand`.
template <DType T>
__device__ void gather(TopkShared& s, const Radix& r, const Args& a, int64_t row, KeyLayout L) {
  if (threadIdx.x == 0) s.n_cand = s.n_chosen = 0;
  __syncthreads();
  for_each_row_key<T>(a, row, L, [&](uint64_t key) {
    const uint64_t hi = key >> r.shift;
    if (hi > r.prefix)
      s.chosen[atomicAdd(&s.n_chosen, 1)] = key;  // fewer than k of them
    else if (hi == r.prefix)
      s.cand[atomicAdd(&s.n_cand, 1)] = key;  // at most kCandCap: see topk_kernel
  });
  __syncthreads();
}

template <DType T>
__global__ void __launch_bounds__(kTopkThreads)
    topk_kernel(Args a, KeyLayout L, int64_t* row_nnz, int32_t* slot_index, int32_t* slot_q,
                unsigned long long* first_error) {
  __shared__ TopkShared s;
  for (int64_t row = blockIdx.x; row < a.rows; row += gridDim.x) {
    Radix r{0, 31 + L.index_bits, uint32_t(a.k), false};
    // Upper bound of the keys under the prefix; a row that fits is gathered at once.
    uint32_t under = a.d_sae <= kCandCap ? uint32_t(a.d_sae) : 0xffffffffu;
    bool gathered = false;
    for (;;) {
      // When done, at most k keys are under the prefix, so the gather fits in either case.
      if (!gathered && (r.done || under <= kCandCap)) {
        gather<T>(s, r, a, row, L);
        gathered = true;
      }
      if (r.done) break;
      under = gathered ? radix_digit(s, r, [&](auto fn) { for_each_cand_key(s, fn); })
                       : radix_digit(s, r, [&](auto fn) { for_each_row_key<T>(a, row, L, fn); });
    }
    // The chosen keys among the gathered ones complete the selection: min(k, candidates) keys.
    for_each_cand_key(s, [&](uint64_t key) {
      if ((key >> r.shift) >= r.prefix) s.chosen[atomicAdd(&s.n_chosen, 1)] = key;
    });
    __syncthreads();

    const int i = threadIdx.x;
    const bool mine = i < s.n_chosen;
    const uint64_t key = mine ? s.chosen[i] : 0;
    const int64_t f = int64_t(L.index_mask - (key & L.index_mask));
    int32_t q = 0;
    if (mine) {
      q = code_of(a, row, f, __uint_as_float(uint32_t(key >> L.index_bits)), first_error);
      if (q >= 1) count_code(a, f, q);
      s.chosen_q[i] = q;
    }
    __syncthreads();
    if (mine && q >= 1) {
      // Slot = number of kept codes with a lower feature, i.e. a larger index field.
      int rank = 0;
      for (int j = 0; j < s.n_chosen; ++j)
        rank += int(s.chosen_q[j] >= 1 && (s.chosen[j] & L.index_mask) > (key & L.index_mask));
      slot_index[row * a.k + rank] = int32_t(f);
      slot_q[row * a.k + rank] = q;
    }
    const int nnz = __syncthreads_count(mine && q >= 1);  // also fences the shared state
    if (threadIdx.x == 0) row_nnz[row] = nnz;
  }
}

__global__ void compact_slots_kernel(int64_t rows, int32_t k, const int64_t* row_ptr,
                                     const int32_t* slot_index, const int32_t* slot_q,
                                     int32_t* index, int32_t* q) {
  const int64_t n = rows * k;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = e / k, i = e - row * k;
    if (i < row_ptr[row + 1] - row_ptr[row]) {
      index[row_ptr[row] + i] = slot_index[e];
      q[row_ptr[row] + i] = slot_q[e];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Threshold selection

template <DType T>
__global__ void __launch_bounds__(kRowThreads)
    threshold_count_kernel(Args a, int64_t* row_nnz, unsigned long long* first_error) {
  __shared__ typename cub::BlockReduce<int, kRowThreads>::TempStorage tmp;
  for (int64_t row = blockIdx.x; row < a.rows; row += gridDim.x) {
    const int64_t base = row * a.row_stride;
    int n = 0;
    for (int64_t f = threadIdx.x; f < a.d_sae; f += kRowThreads) {
      const float v = pre_at<T>(a, base, f);
      if (!passes_threshold(v, a.threshold, f)) continue;
      const int32_t q = code_of(a, row, f, v, first_error);
      if (q >= 1) {
        ++n;
        count_code(a, f, q);
      }
    }
    n = cub::BlockReduce<int, kRowThreads>(tmp).Sum(n);
    if (threadIdx.x == 0) row_nnz[row] = n;
    __syncthreads();  // tmp is reused by the next row
  }
}

// Recomputes each row's codes (same inputs, same arithmetic, same q as the count pass) and
// writes them in index order: a block-wide scan per chunk of kRowThreads features.
template <DType T>
__global__ void __launch_bounds__(kRowThreads)
    threshold_write_kernel(Args a, const int64_t* row_ptr, int32_t* index, int32_t* q_out) {
  __shared__ typename cub::BlockScan<int, kRowThreads>::TempStorage tmp;
  for (int64_t row = blockIdx.x; row < a.rows; row += gridDim.x) {
    const int64_t base = row * a.row_stride;
    int64_t out = row_ptr[row];
    for (int64_t f0 = 0; f0 < a.d_sae; f0 += kRowThreads) {
      const int64_t f = f0 + threadIdx.x;
      int32_t q = 0;
      if (f < a.d_sae) {
        const float v = pre_at<T>(a, base, f);
        if (passes_threshold(v, a.threshold, f)) q = quantize(v, step_of(a, f));
      }
      int pos, chunk;
      cub::BlockScan<int, kRowThreads>(tmp).ExclusiveSum(int(q >= 1), pos, chunk);
      if (q >= 1) {
        index[out + pos] = int32_t(f);
        q_out[out + pos] = q;
      }
      out += chunk;
      __syncthreads();  // tmp is reused by the next chunk
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Host side

void check_args(const Args& a) {
  MDLSAE_CHECK_ARG(a.rows >= 0, "rows must be >= 0, got ", a.rows);
  MDLSAE_CHECK_ARG(a.d_sae > 0 && a.d_sae < (int64_t(1) << 31), "d_sae must be in [1, 2^31), got ",
                   a.d_sae);
  MDLSAE_CHECK_ARG(a.row_stride >= a.d_sae, "row_stride ", a.row_stride, " < d_sae ", a.d_sae);
  MDLSAE_CHECK_ARG(a.k >= 0 && a.k <= a.d_sae && a.k <= kMaxTopK, "k must be in [0, d_sae = ",
                   a.d_sae, "] and at most ", kMaxTopK, " on the GPU, got ", a.k);
  MDLSAE_CHECK_ARG(a.rows == 0 || a.pre != nullptr, "null pre-activation buffer");
  MDLSAE_CHECK_ARG(int(a.dtype) >= 0 && int(a.dtype) <= 2,
                   "dtype code must be 0 (f32), 1 (f16) or 2 (bf16), got ", int(a.dtype));
  if (!a.steps)
    MDLSAE_CHECK_ARG(a.step > 0.0f && std::isfinite(a.step),
                     "step must be a positive finite number, got ", a.step);
  if (a.counts) {
    MDLSAE_CHECK_ARG(a.dense_cap >= 2 && a.dense_cap <= 4096, "dense_cap must be in [2, 4096], got ",
                     a.dense_cap);
    MDLSAE_CHECK_ARG(a.rows < (int64_t(1) << 32), "at most 2^32 - 1 rows per call with a histogram, got ",
                     a.rows);
  }
}

template <class Fn>
void dispatch_dtype(DType t, Fn&& fn) {
  switch (t) {
    case DType::F32: fn(std::integral_constant<DType, DType::F32>{}); break;
    case DType::F16: fn(std::integral_constant<DType, DType::F16>{}); break;
    case DType::BF16: fn(std::integral_constant<DType, DType::BF16>{}); break;
  }
}

unsigned grid_for(int64_t blocks) { return unsigned(std::min(std::max<int64_t>(blocks, 1), kMaxBlocks)); }

KeyLayout key_layout(int64_t d_sae) {
  int bits = 0;
  while ((int64_t(1) << bits) < d_sae) ++bits;
  return {bits, (uint64_t(1) << bits) - 1};
}

}  // namespace

void select_quantize_rows(const SelectQuantizeArgs& a, int64_t* row_nnz, int32_t* slot_index,
                          int32_t* slot_q, int64_t* first_error, cudaStream_t stream) {
  check_args(a);
  MDLSAE_CHECK_ARG(a.rows == 0 || (row_nnz && first_error), "null row_nnz or first_error buffer");
  MDLSAE_CHECK_ARG(a.k == 0 || a.rows == 0 || (slot_index && slot_q), "TopK needs slot buffers");
  if (a.rows == 0) return;
  auto* err = reinterpret_cast<unsigned long long*>(first_error);
  dispatch_dtype(a.dtype, [&](auto tag) {
    constexpr DType T = decltype(tag)::value;
    if (a.k > 0)
      topk_kernel<T><<<grid_for(a.rows), kTopkThreads, 0, stream>>>(a, key_layout(a.d_sae), row_nnz,
                                                                    slot_index, slot_q, err);
    else
      threshold_count_kernel<T><<<grid_for(a.rows), kRowThreads, 0, stream>>>(a, row_nnz, err);
  });
  MDLSAE_CUDA_CHECK(cudaGetLastError());
}

void write_codes(const SelectQuantizeArgs& a, const int64_t* row_ptr, const int32_t* slot_index,
                 const int32_t* slot_q, int32_t* index, int32_t* q, cudaStream_t stream) {
  check_args(a);
  MDLSAE_CHECK_ARG(a.rows == 0 || row_ptr, "null row_ptr buffer");
  if (a.rows == 0) return;
  if (a.k > 0) {
    constexpr int threads = 256;
    compact_slots_kernel<<<grid_for((a.rows * a.k + threads - 1) / threads), threads, 0, stream>>>(
        a.rows, a.k, row_ptr, slot_index, slot_q, index, q);
  } else {
    dispatch_dtype(a.dtype, [&](auto tag) {
      threshold_write_kernel<decltype(tag)::value>
          <<<grid_for(a.rows), kRowThreads, 0, stream>>>(a, row_ptr, index, q);
    });
  }
  MDLSAE_CUDA_CHECK(cudaGetLastError());
}

void throw_step_too_small(const SelectQuantizeArgs& a, int64_t first_error, cudaStream_t stream) {
  check_args(a);
  MDLSAE_CHECK_ARG(first_error >= 0 && first_error / a.d_sae < a.rows,
                   "no element ", first_error, " in ", a.rows, " x ", a.d_sae, " pre-activations");
  const int64_t row = first_error / a.d_sae, f = first_error % a.d_sae;
  const int64_t at = row * a.row_stride + f;
  float value = 0.0f, step = a.step;
  uint16_t half = 0;
  if (a.dtype == DType::F32)
    MDLSAE_CUDA_CHECK(cudaMemcpyAsync(&value, static_cast<const float*>(a.pre) + at, sizeof value,
                                      cudaMemcpyDeviceToHost, stream));
  else
    MDLSAE_CUDA_CHECK(cudaMemcpyAsync(&half, static_cast<const uint16_t*>(a.pre) + at, sizeof half,
                                      cudaMemcpyDeviceToHost, stream));
  if (a.steps)
    MDLSAE_CUDA_CHECK(cudaMemcpyAsync(&step, a.steps + f, sizeof step, cudaMemcpyDeviceToHost, stream));
  MDLSAE_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (a.dtype == DType::F16) value = f16_to_float(half);
  if (a.dtype == DType::BF16) value = bf16_to_float(half);
  if (a.bias) {
    float b = 0.0f;
    MDLSAE_CUDA_CHECK(cudaMemcpy(&b, a.bias + f, sizeof b, cudaMemcpyDeviceToHost));
    value += b;
  }
  throw std::invalid_argument(step_too_small_message(row, f, value, step));
}

}  // namespace mdlsae::cuda
