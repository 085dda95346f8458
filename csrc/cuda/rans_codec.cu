// CUDA kernels of the GPU rANS coder (see rans_codec.h): thin loops, one thread per stream, over
// the host/device functions of codec/flat_codec.h. Streams differ in length, so small blocks
// (64 threads) keep an SM's warps from waiting on one long stream.
#include "cuda/cuda_check.h"
#include "cuda/rans_codec.h"

namespace mdlsae::cuda {
namespace {

constexpr int kThreads = 64;

__global__ void place_kernel(FlatEncodeArgs a, StreamStatus* status) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < a.n_chunks) status[c] = codec::flat_place_siblings(a, c);
}

__global__ void bounds_kernel(FlatEncodeArgs a, int64_t* bound) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < a.streams()) bound[i] = codec::flat_stream_bound(a, i);
}

__global__ void encode_kernel(FlatEncodeArgs a, const int64_t* word_off, uint32_t* words, uint32_t* states,
                              int64_t* n_words, StreamStatus* status) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < a.streams())
    status[i] = codec::flat_encode_stream(a, i, words + word_off[i], states + codec::kStateWords * i, n_words + i);
}

__global__ void write_kernel(FlatEncodeArgs a, const int64_t* word_off, const uint32_t* words,
                             const uint32_t* states, const int64_t* n_words, const int64_t* byte_off, uint8_t* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < a.streams())
    codec::flat_write_stream(a, i, words + word_off[i], states + codec::kStateWords * i, n_words[i], byte_off, out);
}

__global__ void decode_begin_kernel(FlatDecodeArgs a, DecodeState* st) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < a.streams()) codec::flat_decode_begin(a, i, st + i);
}

__global__ void decode_level_kernel(FlatDecodeArgs a, int32_t level, bool write, DecodeState* st) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < a.streams()) codec::flat_decode_level(a, i, level, write, st + i);
}

__global__ void decode_end_kernel(FlatDecodeArgs a, const DecodeState* st, StreamStatus* status) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < a.streams()) codec::flat_decode_end(a, i, st + i, status + i);
}

unsigned blocks_for(const codec::FlatLayout& a) { return unsigned((a.streams() + kThreads - 1) / kThreads); }

}  // namespace

void flat_place_siblings_all(const FlatEncodeArgs& a, StreamStatus* status, cudaStream_t stream) {
  if (a.n_chunks == 0) return;
  place_kernel<<<unsigned((a.n_chunks + kThreads - 1) / kThreads), kThreads, 0, stream>>>(a, status);
  MDLSAE_CUDA_CHECK(cudaGetLastError());
}

void flat_stream_bounds(const FlatEncodeArgs& a, int64_t* bound, cudaStream_t stream) {
  if (a.streams() == 0) return;
  bounds_kernel<<<blocks_for(a), kThreads, 0, stream>>>(a, bound);
  MDLSAE_CUDA_CHECK(cudaGetLastError());
}

void flat_encode_streams(const FlatEncodeArgs& a, const int64_t* word_off, uint32_t* words, uint32_t* states,
                         int64_t* n_words, StreamStatus* status, cudaStream_t stream) {
  if (a.streams() == 0) return;
  encode_kernel<<<blocks_for(a), kThreads, 0, stream>>>(a, word_off, words, states, n_words, status);
  MDLSAE_CUDA_CHECK(cudaGetLastError());
}

void flat_write_streams(const FlatEncodeArgs& a, const int64_t* word_off, const uint32_t* words,
                        const uint32_t* states, const int64_t* n_words, const int64_t* byte_off, uint8_t* out,
                        cudaStream_t stream) {
  if (a.streams() == 0) return;
  write_kernel<<<blocks_for(a), kThreads, 0, stream>>>(a, word_off, words, states, n_words, byte_off, out);
  MDLSAE_CUDA_CHECK(cudaGetLastError());
}

void flat_decode_begins(const FlatDecodeArgs& a, DecodeState* st, cudaStream_t stream) {
  if (a.streams() == 0) return;
  decode_begin_kernel<<<blocks_for(a), kThreads, 0, stream>>>(a, st);
  MDLSAE_CUDA_CHECK(cudaGetLastError());
}

void flat_decode_levels(const FlatDecodeArgs& a, int32_t level, bool write, DecodeState* st, cudaStream_t stream) {
  if (a.streams() == 0) return;
  decode_level_kernel<<<blocks_for(a), kThreads, 0, stream>>>(a, level, write, st);
  MDLSAE_CUDA_CHECK(cudaGetLastError());
}

void flat_decode_ends(const FlatDecodeArgs& a, const DecodeState* st, StreamStatus* status, cudaStream_t stream) {
  if (a.streams() == 0) return;
  decode_end_kernel<<<blocks_for(a), kThreads, 0, stream>>>(a, st, status);
  MDLSAE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace mdlsae::cuda
