// The GPU rANS coder: the steps of codec/flat_codec.h (encode, and decode by level) as CUDA kernels, one thread per
// independent stream, every pointer a device pointer on the current device (the caller, torch in
// Python, allocates and runs the scans between the steps on the same stream). The kernels only
// index: the coding is codec/stream_codec.h's, the very code the CPU coder runs.
#pragma once
#include <cuda_runtime.h>

#include "codec/flat_codec.h"

namespace mdlsae::cuda {

using codec::DecodeState;
using codec::FlatDecodeArgs;
using codec::FlatEncodeArgs;
using codec::StreamStatus;

void flat_place_siblings_all(const FlatEncodeArgs& a, StreamStatus* status, cudaStream_t stream);  // one thread per chunk
void flat_stream_bounds(const FlatEncodeArgs& a, int64_t* bound, cudaStream_t stream);
void flat_encode_streams(const FlatEncodeArgs& a, const int64_t* word_off, uint32_t* words, uint32_t* states,
                         int64_t* n_words, StreamStatus* status, cudaStream_t stream);
void flat_write_streams(const FlatEncodeArgs& a, const int64_t* word_off, const uint32_t* words,
                        const uint32_t* states, const int64_t* n_words, const int64_t* byte_off, uint8_t* out,
                        cudaStream_t stream);
void flat_decode_begins(const FlatDecodeArgs& a, DecodeState* st, cudaStream_t stream);
void flat_decode_levels(const FlatDecodeArgs& a, int32_t level, bool write, DecodeState* st, cudaStream_t stream);
void flat_decode_ends(const FlatDecodeArgs& a, const DecodeState* st, StreamStatus* status, cudaStream_t stream);

}  // namespace mdlsae::cuda
