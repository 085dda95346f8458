// The device coder's driver: encodes every stream of many chunks at once over flat arrays (codes
// feature-major per chunk, tables as views), one independent stream per work item, in three
// steps with two exclusive scans between them, done by the caller (torch, in Python):
//   1. flat_stream_bound: an upper bound of each stream's words;
//   2. flat_encode_stream: each stream into its own stretch of a word buffer (scan of 1.);
//   3. flat_write_stream: each stream's bytes at its place in the chunks' payloads (scan of the
//      sizes 2. found), its chunk's stream-length header included.
// Host/device code: the CUDA kernels (cuda/rans_codec.cu) run one thread per stream; the host
// build (bound in _C) loops over the streams, so the CPU's tests check the very driver the GPU
// runs against the CPU chunk coder, byte for byte.
#pragma once
#include <cstdint>

#include "codec/stream_codec.h"
#include "codec/tables.h"

namespace mdlsae::codec {

struct FlatEncodeArgs {
  TablesView t;
  EncoderView e;
  int64_t n_chunks = 0;
  int64_t chunk_rows = 0;  // rows of every chunk but the last
  int64_t total_rows = 0;
  int32_t n_streams = 1;   // per chunk
  int64_t per = 0;         // features per stream (d_sae for one stream per chunk)
  const int64_t* col_ptr = nullptr;  // [n_chunks * d_sae + 1]: chunk c's feature f at [col_ptr[c d + f], ... + 1)
  const int32_t* col_row = nullptr;  // chunk-local rows, increasing within each (chunk, feature)
  const int32_t* col_q = nullptr;
  int32_t* on = nullptr;   // scratch parallel to col_row, for children (nullptr without parents)
  int32_t* off = nullptr;

  MDLSAE_CODEC_HD int64_t streams() const { return n_chunks * n_streams; }
  MDLSAE_CODEC_HD ColumnsView columns(int64_t c) const {
    const int64_t r0 = c * chunk_rows, r1 = r0 + chunk_rows < total_rows ? r0 + chunk_rows : total_rows;
    return {col_ptr + c * t.d_sae, col_row, col_q, r1 - r0};
  }
  // Stream i's range of coding order.
  MDLSAE_CODEC_HD int64_t lo(int64_t i) const { return (i % n_streams) * per; }
  MDLSAE_CODEC_HD int64_t hi(int64_t i) const { return lo(i) + per < t.d_sae ? lo(i) + per : t.d_sae; }
};

// The Room of a buffer sized beforehand by flat_stream_bound: nothing to do.
struct PresizedWords {
  MDLSAE_CODEC_HD uint32_t* operator()(uint32_t* out, int64_t) const { return out; }
};

MDLSAE_CODEC_HD int64_t flat_stream_bound(const FlatEncodeArgs& a, int64_t i) {
  return stream_word_bound(a.t, a.columns(i / a.n_streams), a.lo(i), a.hi(i));
}

// Stream i into words (room for its bound); its final states to states[0, kStateWords) and the
// count of words emitted (the states excluded) to *n_words.
MDLSAE_STREAM_HD inline StreamStatus flat_encode_stream(const FlatEncodeArgs& a, int64_t i, uint32_t* words,
                                                        uint32_t* states, int64_t* n_words) {
  RansEncoder enc{words};
  PresizedWords room;
  const StreamStatus st = encode_stream(enc, room, a.t, a.e, a.columns(i / a.n_streams), a.lo(i), a.hi(i), a.on, a.off);
  enc.flush(states);
  *n_words = enc.out - words;
  return st;
}

// Stream i's bytes at out + byte_off[i]; a stream other than its chunk's last also writes its
// length in words into the chunk's header (the chunk begins 4 * (n_streams - 1) bytes before
// its first stream).
MDLSAE_CODEC_HD void flat_write_stream(const FlatEncodeArgs& a, int64_t i, const uint32_t* words,
                                       const uint32_t* states, int64_t n_words, const int64_t* byte_off,
                                       uint8_t* out) {
  write_stream(states, words, n_words, out + byte_off[i]);
  const int64_t s = i % a.n_streams;
  if (s + 1 < a.n_streams) {
    const int64_t chunk_begin = byte_off[i - s] - 4 * int64_t(a.n_streams - 1);
    put_u32(out + chunk_begin + 4 * s, uint32_t(kStateWords + n_words));
  }
}

// The three steps on the host, in parallel over streams (flat_codec.cpp); cuda/rans_codec.h
// has the same on the device. Arrays per stream: bound, n_words, status [streams()], word_off
// [streams() + 1] (exclusive scan of bound), states [kStateWords * streams()], byte_off.
void flat_stream_bounds(const FlatEncodeArgs& a, int64_t* bound);
void flat_encode_streams(const FlatEncodeArgs& a, const int64_t* word_off, uint32_t* words, uint32_t* states,
                         int64_t* n_words, StreamStatus* status);
void flat_write_streams(const FlatEncodeArgs& a, const int64_t* word_off, const uint32_t* words,
                        const uint32_t* states, const int64_t* n_words, const int64_t* byte_off, uint8_t* out);

}  // namespace mdlsae::codec
