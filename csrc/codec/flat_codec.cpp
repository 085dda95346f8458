// The host build of the device coder's driver (flat_codec.h): each step a loop over the streams,
// split between threads. It exists so that the driver the GPU runs is tested, here, against the
// CPU chunk coder; the CPU encoder itself is chunk_codec.cpp.
#include "codec/flat_codec.h"

#include "cpu/parallel.h"

namespace mdlsae::codec {
namespace {

template <class F>
void for_streams(const FlatLayout& a, F&& f) {
  const int64_t n = a.streams();
  parallel_ranges(n, workers_for(n, 1), [&](int, int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) f(i);
  });
}

}  // namespace

void flat_place_siblings_all(const FlatEncodeArgs& a, StreamStatus* status) {
  parallel_ranges(a.n_chunks, workers_for(a.n_chunks, 1), [&](int, int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) status[c] = flat_place_siblings(a, c);
  });
}

void flat_stream_bounds(const FlatEncodeArgs& a, int64_t* bound) {
  for_streams(a, [&](int64_t i) { bound[i] = flat_stream_bound(a, i); });
}

void flat_encode_streams(const FlatEncodeArgs& a, const int64_t* word_off, uint32_t* words, uint32_t* states,
                         int64_t* n_words, StreamStatus* status) {
  for_streams(a, [&](int64_t i) {
    status[i] = flat_encode_stream(a, i, words + word_off[i], states + kStateWords * i, n_words + i);
  });
}

void flat_write_streams(const FlatEncodeArgs& a, const int64_t* word_off, const uint32_t* words,
                        const uint32_t* states, const int64_t* n_words, const int64_t* byte_off, uint8_t* out) {
  for_streams(a, [&](int64_t i) {
    flat_write_stream(a, i, words + word_off[i], states + kStateWords * i, n_words[i], byte_off, out);
  });
}

void flat_decode_begins(const FlatDecodeArgs& a, DecodeState* st) {
  for_streams(a, [&](int64_t i) { flat_decode_begin(a, i, st + i); });
}

void flat_decode_levels(const FlatDecodeArgs& a, int32_t level, bool write, DecodeState* st) {
  for_streams(a, [&](int64_t i) { flat_decode_level(a, i, level, write, st + i); });
}

void flat_decode_ends(const FlatDecodeArgs& a, const DecodeState* st, StreamStatus* status) {
  for_streams(a, [&](int64_t i) { flat_decode_end(a, i, st + i, status + i); });
}

}  // namespace mdlsae::codec
