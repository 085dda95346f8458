// The device coder's driver: codes every stream of many chunks at once over flat arrays (codes
// feature-major per chunk, tables as views), one independent stream per work item. Encoding is
// three steps with two exclusive scans between them, done by the caller (torch, in Python):
//   1. flat_stream_bound: an upper bound of each stream's words;
//   2. flat_encode_stream: each stream into its own stretch of a word buffer (scan of 1.);
//   3. flat_write_stream: each stream's bytes at its place in the chunks' payloads (scan of the
//      sizes 2. found), its chunk's stream-length header included.
// Decoding is two passes over the streams, each by depth level (a child's gaps run over its
// parent's rows, decoded at the level before, maybe in another stream; with exclusive siblings
// by (depth, rank) level, as its earlier siblings' rows come first): one that counts each
// chunk's features, then, once the caller has laid out the columns, one that writes them.
// Encoding exclusive siblings first places every chunk's children in their contexts
// (flat_place_siblings, one work item per chunk).
// Host/device code: the CUDA kernels (cuda/rans_codec.cu) run one thread per stream; the host
// build (bound in _C) loops over the streams, so the CPU's tests check the very driver the GPU
// runs against the CPU chunk coder, byte for byte.
#pragma once
#include <cstdint>

#include "codec/stream_codec.h"
#include "codec/tables.h"

namespace mdlsae::codec {

// Chunks and streams: stream i is stream i % n_streams of chunk i / n_streams.
struct FlatLayout {
  int64_t d_sae = 0;
  int64_t n_chunks = 0;
  int64_t chunk_rows = 0;  // rows of every chunk but the last
  int64_t total_rows = 0;
  int32_t n_streams = 1;   // per chunk
  int64_t per = 0;         // features per stream (d_sae for one stream per chunk)

  MDLSAE_CODEC_HD int64_t streams() const { return n_chunks * n_streams; }
  MDLSAE_CODEC_HD int64_t rows(int64_t c) const {
    const int64_t r0 = c * chunk_rows;
    return (r0 + chunk_rows < total_rows ? r0 + chunk_rows : total_rows) - r0;
  }
  // Stream i's range of coding order.
  MDLSAE_CODEC_HD int64_t lo(int64_t i) const { return (i % n_streams) * per; }
  MDLSAE_CODEC_HD int64_t hi(int64_t i) const { return lo(i) + per < d_sae ? lo(i) + per : d_sae; }
};

struct FlatEncodeArgs : FlatLayout {
  TablesView t;
  EncoderView e;
  const int64_t* col_ptr = nullptr;  // [n_chunks * d_sae + 1]: chunk c's feature f at [col_ptr[c d + f], ... + 1)
  const int32_t* col_row = nullptr;  // chunk-local rows, increasing within each (chunk, feature)
  const int32_t* col_q = nullptr;
  int32_t* on = nullptr;   // scratch parallel to col_row, for children (nullptr without parents)
  int32_t* off = nullptr;
  // exclusive siblings (t.kid_ptr), else nullptr: place_siblings' scratch and results per chunk,
  // taken parallel to col_row and held [n_chunks * d_sae] zeroed, place [n_chunks * 2 d_sae]
  int32_t* taken = nullptr;
  int64_t* held = nullptr;
  int64_t* place = nullptr;

  MDLSAE_CODEC_HD ColumnsView columns(int64_t c) const { return {col_ptr + c * d_sae, col_row, col_q, rows(c)}; }
};

// Exclusive siblings, before encoding: chunk c's children placed in their contexts (place_siblings).
MDLSAE_CODEC_HD StreamStatus flat_place_siblings(const FlatEncodeArgs& a, int64_t c) {
  return place_siblings(a.t, a.columns(c), a.on, a.off, a.taken, a.held + c * a.d_sae, a.place + 2 * c * a.d_sae);
}

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
  const int64_t c = i / a.n_streams;
  const StreamStatus st = encode_stream(enc, room, a.t, a.e, a.columns(c), a.lo(i), a.hi(i), a.on, a.off,
                                        a.place ? a.place + 2 * c * a.d_sae : nullptr);
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

struct FlatDecodeArgs : FlatLayout {
  TablesView t;
  DecoderView dv;
  const uint8_t* data = nullptr;         // the chunks' payloads back to back (sizes multiples of 4)
  const int64_t* chunk_off = nullptr;    // [n_chunks + 1]: chunk c at data[chunk_off[c], chunk_off[c + 1])
  const int64_t* level_start = nullptr;  // [levels + 1]: where each depth (and rank, when exclusive) begins in coding order
  int64_t* count = nullptr;              // [n_chunks * d_sae], zeroed: the counting pass's output
  const int64_t* col_ptr = nullptr;      // [n_chunks * d_sae + 1]: the writing pass's layout (scan of count)
  int32_t* col_row = nullptr;            // chunk-local rows, increasing within each (chunk, feature)
  int32_t* col_q = nullptr;
  int32_t* on = nullptr;                 // scratch parallel to col_row, for children
  int32_t* off = nullptr;
  // exclusive siblings: held [n_chunks * d_sae], zeroed before each pass (the rows each parent's
  // decoded children hold), and for the writing pass taken, parallel to col_row, zeroed (TakenRows)
  int64_t* held = nullptr;
  int32_t* taken = nullptr;
};

// A stream's decoder between the passes' level launches.
struct DecodeState {
  RansDecoder dec;
  StreamStatus status;
};

// Stream i's decoder on its words, after checking the chunk's framing as decode_chunk does.
MDLSAE_CODEC_HD void flat_decode_begin(const FlatDecodeArgs& a, int64_t i, DecodeState* st) {
  *st = DecodeState();
  const int64_t c = i / a.n_streams, s = i % a.n_streams;
  const uint8_t* base = a.data + a.chunk_off[c];
  const int64_t size = a.chunk_off[c + 1] - a.chunk_off[c];
  int64_t at = 4 * int64_t(a.n_streams - 1);
  st->status = {StreamStatus::kBadFraming, int32_t(s), 0};
  if (size < at || size % 4) return;
  for (int64_t k = 0;; ++k) {
    const int64_t nw = k + 1 < a.n_streams ? int64_t(get_u32(base + 4 * k)) : (size - at) / 4;
    if (nw < kStateWords || nw > (size - at) / 4) return;
    if (k == s) {
      // little-endian words in place (x86-64 and CUDA devices); the CPU decoder copies them
      st->dec.init(reinterpret_cast<const uint32_t*>(base + at), uint32_t(nw));
      st->status = StreamStatus();
      return;
    }
    at += 4 * nw;
  }
}

// The features of depth `level` in stream i: counted (write == false) or written to the columns.
MDLSAE_STREAM_HD inline void flat_decode_level(const FlatDecodeArgs& a, int64_t i, int32_t level, bool write,
                                               DecodeState* st) {
  if (st->status.error) return;
  RansDecoder dec = st->dec;
  const int64_t c = i / a.n_streams, rows = a.rows(c), d = a.d_sae;
  const int64_t lo = a.lo(i) > a.level_start[level] ? a.lo(i) : a.level_start[level];
  const int64_t hi = a.hi(i) < a.level_start[level + 1] ? a.hi(i) : a.level_start[level + 1];
  int64_t* count = a.count + c * d;
  const int64_t* ptr = a.col_ptr + c * d;
  for (int64_t oi = lo; oi < hi && !dec.failed; ++oi) {
    const int32_t f = a.t.order[oi], p = a.t.parent[f];
    const uint32_t* main_groups = a.dv.gap_groups_of(f, 0);
    int64_t n;
    if (p >= 0 && a.t.kid_ptr) {  // over the parent's rows its earlier siblings left (TakenRows)
      int64_t* held = a.held + c * d;
      const int64_t np = count[p], b = write ? ptr[f] : 0;
      const int64_t n_on = write ? get_gaps(dec, a.on + b, np - held[p], a.t.main[f], main_groups)
                                 : get_gaps(dec, Discard(), np - held[p], a.t.main[f], main_groups);
      if (write) {
        TakenRows::of(a.taken + ptr[p], np).from_context(a.on + b, n_on);
        const int64_t n_off = get_gaps(dec, a.off + b, rows - np, a.t.off[f], a.dv.gap_groups_of(f, 1));
        merge_child_rows(a.col_row + ptr[p], np, a.on + b, n_on, a.off + b, n_off, a.col_row + b);
        n = n_on + n_off;
      } else {
        n = n_on + get_gaps(dec, Discard(), rows - np, a.t.off[f], a.dv.gap_groups_of(f, 1));
        count[f] = n;
      }
      held[p] += n_on;
    } else if (!write) {
      n = p < 0 ? get_gaps(dec, Discard(), rows, a.t.main[f], main_groups)
                : get_gaps(dec, Discard(), count[p], a.t.main[f], main_groups) +
                      get_gaps(dec, Discard(), rows - count[p], a.t.off[f], a.dv.gap_groups_of(f, 1));
      count[f] = n;
    } else if (p < 0) {
      n = get_gaps(dec, a.col_row + ptr[f], rows, a.t.main[f], main_groups);
    } else {
      const int64_t b = ptr[f], np = count[p];
      const int64_t n_on = get_gaps(dec, a.on + b, np, a.t.main[f], main_groups);
      const int64_t n_off = get_gaps(dec, a.off + b, rows - np, a.t.off[f], a.dv.gap_groups_of(f, 1));
      merge_child_rows(a.col_row + ptr[p], np, a.on + b, n_on, a.off + b, n_off, a.col_row + b);
      n = n_on + n_off;
    }
    if (n > 0 && a.t.vptr[f + 1] == a.t.vptr[f]) {
      st->status = {StreamStatus::kDamagedValues, f, 0};
      break;
    }
    if (write)
      get_values(dec, a.t, a.dv, f, a.col_q + ptr[f], n);
    else
      get_values(dec, a.t, a.dv, f, Discard(), n);
  }
  st->dec = dec;
}

// Stream i's verdict: the decoder must end exactly on the encoder's initial states.
MDLSAE_CODEC_HD void flat_decode_end(const FlatDecodeArgs& a, int64_t i, const DecodeState* st,
                                     StreamStatus* status) {
  *status = st->status;
  if (!status->error && !st->dec.finished_cleanly()) *status = {StreamStatus::kUncleanEnd, int32_t(i % a.n_streams), 0};
}

// The three steps on the host, in parallel over streams (flat_codec.cpp); cuda/rans_codec.h
// has the same on the device. Arrays per stream: bound, n_words, status [streams()], word_off
// [streams() + 1] (exclusive scan of bound), states [kStateWords * streams()], byte_off; for decoding,
// st [streams()].
void flat_stream_bounds(const FlatEncodeArgs& a, int64_t* bound);
void flat_place_siblings_all(const FlatEncodeArgs& a, StreamStatus* status);  // status [n_chunks]
void flat_encode_streams(const FlatEncodeArgs& a, const int64_t* word_off, uint32_t* words, uint32_t* states,
                         int64_t* n_words, StreamStatus* status);
void flat_write_streams(const FlatEncodeArgs& a, const int64_t* word_off, const uint32_t* words,
                        const uint32_t* states, const int64_t* n_words, const int64_t* byte_off, uint8_t* out);
void flat_decode_begins(const FlatDecodeArgs& a, DecodeState* st);
void flat_decode_levels(const FlatDecodeArgs& a, int32_t level, bool write, DecodeState* st);
void flat_decode_ends(const FlatDecodeArgs& a, const DecodeState* st, StreamStatus* status);

}  // namespace mdlsae::codec
