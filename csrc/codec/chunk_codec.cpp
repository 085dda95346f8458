// The chunk coder (see chunk_codec.h). Chunk payload: for every stream but the last, its length
// in 32-bit words (u32); then the streams' words (little-endian), the last one running to the
// end of the chunk. A stream opens with the encoder's final lane states; the decoder must end
// exactly on the initial states, which catches damage that slipped past the checksum. The
// per-stream coding is stream_codec.h's (shared with the GPU); this file frames and transposes.
#include "codec/chunk_codec.h"

#include <algorithm>
#include <climits>

#include "codec/rans.h"
#include "codec/stream_codec.h"
#include "common/check.h"
#include "cpu/parallel.h"

namespace mdlsae::codec {
namespace {

// Room for `puts` more entries (each put writes at most one) in a growing buffer. Takes and
// returns the write position by value: the encoder's states must never have their address
// taken, or they leave the registers.
template <class T>
__attribute__((noinline)) T* grow(std::vector<T>& v, T* out, int64_t puts) {
  const size_t used = size_t(out - v.data());
  v.resize(std::max(used + size_t(puts), 2 * v.size()));
  return v.data() + used;
}

// The CPU's Room (see stream_codec.h): the buffer grows as needed.
template <class T>
struct Growing {
  std::vector<T>& v;
  T* operator()(T* out, int64_t puts) { return out + puts <= v.data() + v.size() ? out : grow(v, out, puts); }
};

// The CPU codes a stream in two passes: stream_codec.h's walk over the gaps and values queues
// each symbol (a pointer to its prepared form, or a partial block's rare binary decision by
// value, tagged by the low bit), then one tight loop codes the queue. Fused, the walk's state
// and the four lanes compete for registers: the encoder ran at half this speed.
// Entries are typed as pointers so that their stores cannot alias the tables' integers (the
// walk would reload its per-feature fields after every store).
static_assert(alignof(EncSymbol) >= 2 && sizeof(uintptr_t) == 8 && kProbBits < 29,
              "the queue tags by-value entries of a 29-bit start and frequency");
using QueueEntry = const EncSymbol*;
struct SymbolQueue {
  QueueEntry* out;
  void put(const EncSymbol& s) { *out++ = &s; }
  void put_exact(uint32_t start, uint32_t freq) {
    *out++ = reinterpret_cast<QueueEntry>((uintptr_t(start) << 29 | freq) << 1 | 1);
  }
};
constexpr ptrdiff_t kQueueDrain = 4096;  // entries: the queue stays in L1/L2 between passes

void drain(RansEncoder& enc_io, Growing<uint32_t>& room, const QueueEntry* q, const QueueEntry* end) {
  enc_io.out = room(enc_io.out, end - q);
  RansEncoder enc = enc_io;
  for (; q < end; ++q) {
    const uintptr_t v = reinterpret_cast<uintptr_t>(*q);
    if (v & 1)
      enc.put_exact(uint32_t(v >> 30), uint32_t(v >> 1) & ((1u << 29) - 1));
    else
      enc.put(**q);
  }
  enc_io = enc;
}

// Transposing scatters write each entry as one 8-byte (low, high) pair, then split the pairs
// sequentially: half the random stores of writing two arrays.
inline uint64_t pack_pair(uint32_t lo, uint32_t hi) { return uint64_t(lo) | uint64_t(hi) << 32; }

void unpack_pairs(const Buffer<uint64_t>& pair, int32_t* lo, int32_t* hi) {
  for (size_t a = 0; a < pair.size(); ++a) {
    lo[a] = int32_t(uint32_t(pair[a]));
    hi[a] = int32_t(uint32_t(pair[a] >> 32));
  }
}

// Column (feature-major) view of a chunk's codes: chunk-local rows and values per feature.
struct Columns {
  std::vector<int64_t> ptr;
  Buffer<int32_t> row;
  Buffer<int32_t> q;
};

Columns to_columns(const CodesView& c, int64_t d) {
  Columns col;
  const int64_t base = c.row_ptr[0], nnz = c.row_ptr[c.rows] - base;
  col.ptr.assign(size_t(d) + 1, 0);
  for (int64_t e = 0; e < nnz; ++e) {
    const int32_t f = c.index[base + e];
    MDLSAE_CHECK_ARG(f >= 0 && f < d, "code has feature ", f, " outside [0, ", d, ")");
    ++col.ptr[f + 1];
  }
  for (int64_t f = 0; f < d; ++f) col.ptr[f + 1] += col.ptr[f];
  Buffer<uint64_t> pair(static_cast<size_t>(nnz));
  std::vector<int64_t> cur(col.ptr.begin(), col.ptr.end() - 1);
  for (int64_t r = 0; r < c.rows; ++r)
    for (int64_t e = c.row_ptr[r]; e < c.row_ptr[r + 1]; ++e) pair[cur[c.index[e]]++] = pack_pair(uint32_t(r), c.q[e]);
  col.row.resize(size_t(nnz));
  col.q.resize(size_t(nnz));
  unpack_pairs(pair, col.row.data(), col.q.data());
  return col;
}

// The inverse: appends to rows the child's rows (see codec::merge_child_rows; off is overwritten).
void append_child_rows(Buffer<int32_t>& rows, int64_t pb, int64_t np, const int32_t* on, int64_t n_on, int32_t* off,
                       int64_t n_off) {
  const size_t base = rows.size();
  rows.resize(base + size_t(n_on + n_off));  // before taking pointers into it
  merge_child_rows(rows.data() + pb, np, on, n_on, off, n_off, rows.data() + base);
}

int32_t streams_of(int64_t d, int32_t fps) { return fps <= 0 ? 1 : int32_t((d + fps - 1) / fps); }

// One chunk's payload: per stream, the features of its range walked in reverse coding order.
std::vector<uint8_t> encode_chunk(const TablesView& t, const EncoderView& e, bool any_child, const CodesView& codes,
                                  int32_t fps) {
  const int64_t d = t.d_sae;
  MDLSAE_CHECK_ARG(codes.rows <= kMaxChunkRows, "a chunk holds ", codes.rows, " rows, more than ", kMaxChunkRows);
  const Columns col = to_columns(codes, d);
  const ColumnsView cv{col.ptr.data(), col.row.data(), col.q.data(), codes.rows};
  const int32_t n_streams = streams_of(d, fps);
  const int64_t per = fps <= 0 ? d : fps;
  std::vector<uint8_t> out(4 * size_t(n_streams - 1), 0);
  Buffer<int32_t> on(any_child ? col.row.size() : 0), off(on.size());
  std::vector<int64_t> place;
  if (t.kid_ptr) {
    std::vector<int32_t> taken(col.row.size(), 0);
    std::vector<int64_t> held(size_t(d), 0);
    place.resize(2 * size_t(d));
    check_stream(place_siblings(t, cv, on.data(), off.data(), taken.data(), held.data(), place.data()));
  }
  std::vector<uint32_t> words(col.row.size() + 64);
  std::vector<QueueEntry> queue(size_t(kQueueDrain) + 64);
  Growing<uint32_t> room{words};
  Growing<QueueEntry> queue_room{queue};
  for (int32_t s = 0; s < n_streams; ++s) {
    RansEncoder enc{words.data()};
    SymbolQueue sq{queue.data()};
    for (int64_t oi = std::min(d, (s + 1) * per) - 1; oi >= s * per; --oi) {  // reverse coding order
      check_stream(encode_stream(sq, queue_room, t, e, cv, oi, oi + 1, on.data(), off.data(),
                                 place.empty() ? nullptr : place.data()));
      if (sq.out - queue.data() >= kQueueDrain) {
        drain(enc, room, queue.data(), sq.out);
        sq.out = queue.data();
      }
    }
    drain(enc, room, queue.data(), sq.out);
    const size_t n_words = size_t(enc.out - words.data());
    const size_t at = out.size(), nw = kStateWords + n_words;
    MDLSAE_CHECK_ARG(nw < UINT32_MAX, "a stream of ", nw, " words is too long; use smaller chunks");
    out.resize(at + 4 * nw);
    uint32_t states[kStateWords];
    enc.flush(states);
    write_stream(states, words.data(), int64_t(n_words), &out[at]);
    if (s + 1 < n_streams) put_u32(&out[4 * size_t(s)], uint32_t(nw));
  }
  return out;
}

// One chunk decoded feature-major: for feature f, rows row[beg[f], beg[f] + cnt[f]) (chunk-local,
// increasing) with values qv at the same places.
struct ChunkColumns {
  std::vector<int64_t> beg, cnt;
  Buffer<int32_t> row, qv;
};

// Throws std::runtime_error naming the problem when the bytes are not a valid chunk for these
// tables (damaged or foreign data); never reads outside [data, data + size).
ChunkColumns decode_chunk(const TablesView& t, const DecoderView& dt, int64_t rows, const uint8_t* data,
                          size_t size, int32_t fps) {
  const int64_t d = t.d_sae;
  MDLSAE_CHECK_DATA(rows >= 0 && rows <= kMaxChunkRows, "chunk of ", rows, " rows");
  const int32_t n_streams = streams_of(d, fps);
  const int64_t per = fps <= 0 ? d : fps;
  size_t at = 4 * size_t(n_streams - 1);
  MDLSAE_CHECK_DATA(size >= at && size % 4 == 0, "chunk of ", size, " bytes cannot hold ", n_streams, " streams");
  std::vector<uint32_t> words;
  ChunkColumns c;
  c.beg.assign(size_t(d), 0);
  c.cnt.assign(size_t(d), 0);
  // a non-zero takes >= 8 bits on all but the densest codes: room for as many as the chunk has
  // bytes spares the growing columns their copies (capped: a damaged size must not reserve much)
  c.row.reserve(std::min(size, size_t(rows) * size_t(d)));
  c.qv.reserve(c.row.capacity());
  Buffer<int32_t> on(static_cast<size_t>(rows)), off(static_cast<size_t>(rows));  // room for any sequence
  // exclusive siblings: per parent, the rows its decoded children hold (see TakenRows)
  std::vector<int32_t> taken;
  std::vector<int64_t> held(t.kid_ptr ? size_t(d) : 0, 0);
  for (int32_t s = 0; s < n_streams; ++s) {
    const uint64_t nw = s + 1 < n_streams ? get_u32(data + 4 * size_t(s)) : (size - at) / 4;
    MDLSAE_CHECK_DATA(nw >= kStateWords && nw <= (size - at) / 4, "stream ", s, " of a chunk overruns the chunk");
    words.resize(size_t(nw));
    for (uint64_t i = 0; i < nw; ++i) words[i] = get_u32(data + at + 4 * i);
    at += 4 * nw;
    RansDecoder dec;
    dec.init(words.data(), uint32_t(nw));
    for (int64_t oi = s * per; oi < std::min(d, (s + 1) * per) && !dec.failed; ++oi) {
      const int32_t f = t.order[oi];
      const int32_t p = t.parent[f];
      const size_t b = c.row.size();
      if (p < 0) {
        const int64_t n = get_gaps(dec, on.data(), rows, t.main[f], dt.gap_groups_of(f, 0));
        c.row.insert(c.row.end(), on.data(), on.data() + n);
      } else if (t.kid_ptr) {
        const int64_t np = c.cnt[p];
        const int64_t n_on = get_gaps(dec, on.data(), np - held[p], t.main[f], dt.gap_groups_of(f, 0));
        if (taken.size() < c.row.size()) taken.resize(c.row.size(), 0);  // the parent's part zeroed
        TakenRows::of(taken.data() + c.beg[p], np).from_context(on.data(), n_on);
        held[p] += n_on;
        const int64_t n_off = get_gaps(dec, off.data(), rows - np, t.off[f], dt.gap_groups_of(f, 1));
        append_child_rows(c.row, c.beg[p], np, on.data(), n_on, off.data(), n_off);
      } else {
        const int64_t np = c.cnt[p];
        const int64_t n_on = get_gaps(dec, on.data(), np, t.main[f], dt.gap_groups_of(f, 0));
        const int64_t n_off = get_gaps(dec, off.data(), rows - np, t.off[f], dt.gap_groups_of(f, 1));
        append_child_rows(c.row, c.beg[p], np, on.data(), n_on, off.data(), n_off);
      }
      const size_t n = c.row.size() - b;
      c.beg[f] = int64_t(b);
      c.cnt[f] = int64_t(n);
      const int64_t vb = t.vptr[f], ns = t.vptr[f + 1] - vb;
      MDLSAE_CHECK_DATA(ns > 0 || n == 0, "chunk payload is damaged (values of feature ", f, ")");
      c.qv.resize(b + n);
      get_values(dec, t, dt, f, c.qv.data() + b, int64_t(n));
    }
    MDLSAE_CHECK_DATA(dec.finished_cleanly(), "chunk payload is damaged (stream ", s, " does not end cleanly)");
  }
  MDLSAE_CHECK_DATA(at == size, "chunk has ", size - at, " unexpected trailing bytes");
  return c;
}

constexpr int64_t kScatterBandRows = 4096;

// Writes a decoded chunk row-major: row ends row_ptr[1, rows] (offsets from `base`), index and q.
// Features in index order make indices increase within each row.
void scatter_rows(const ChunkColumns& c, int64_t rows, int64_t base, int64_t* row_ptr, int32_t* index, int32_t* q) {
  const int64_t d = int64_t(c.beg.size()), nnz = int64_t(c.row.size());
  std::vector<int32_t> cur(size_t(rows) + 1, 0);
  for (int32_t r : c.row) ++cur[r + 1];
  for (int64_t r = 0; r < rows; ++r) cur[r + 1] += cur[r];
  for (int64_t r = 1; r <= rows; ++r) row_ptr[r] = base + cur[r];
  Buffer<uint64_t> pair(static_cast<size_t>(nnz));
  // In bands of rows, each feature's entries of the band at a time, so the stores stay within the
  // band's part of `pair` (in cache); a band per ~8 entries per feature, so that dictionaries much
  // wider than a chunk's codes are not walked once per band for nothing. Restrict locals: through
  // the members, every 8-byte store could alias the int64 cursors.
  const int64_t bands = std::max<int64_t>(1, std::min<int64_t>(rows / kScatterBandRows, nnz / (8 * std::max<int64_t>(d, 1))));
  const int64_t band_rows = (rows + bands - 1) / bands;
  std::vector<int64_t> next(c.beg.begin(), c.beg.end());
  uint64_t* __restrict out = pair.data();
  int32_t* __restrict at = cur.data();
  int64_t* __restrict pos = next.data();
  const int32_t* __restrict row = c.row.data();
  const int32_t* __restrict qv = c.qv.data();
  for (int64_t r1 = band_rows; r1 - band_rows < rows; r1 += band_rows) {
    for (int64_t f = 0; f < d; ++f) {
      int64_t e = pos[f];
      const int64_t end = c.beg[f] + c.cnt[f];
      for (; e < end && row[e] < r1; ++e) out[at[row[e]]++] = pack_pair(uint32_t(f), uint32_t(qv[e]));
      pos[f] = e;
    }
  }
  unpack_pairs(pair, index, q);
}

}  // namespace

std::vector<std::vector<uint8_t>> encode_chunks(const CodecTables& t, const EncoderTables& et, const CodesView& codes,
                                                int64_t chunk_rows, int32_t fps) {
  MDLSAE_CHECK_ARG(chunk_rows > 0 && chunk_rows <= kMaxChunkRows, "chunk_rows must be in [1, ", kMaxChunkRows,
                   "], got ", chunk_rows);
  const int64_t n_chunks = (codes.rows + chunk_rows - 1) / chunk_rows;
  std::vector<std::vector<uint8_t>> out(static_cast<size_t>(n_chunks));
  const TablesView tv = t.view();
  const EncoderView ev = et.view();
  parallel_ranges(n_chunks, workers_for(n_chunks, 1), [&](int, int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      const int64_t r0 = c * chunk_rows, r1 = std::min(codes.rows, r0 + chunk_rows);
      out[c] = encode_chunk(tv, ev, !t.off.empty(), CodesView{r1 - r0, codes.row_ptr + r0, codes.index, codes.q},
                            fps);
    }
  });
  return out;
}

CodesOut decode_chunks(const CodecTables& t, const DecoderTables& dt, const std::vector<ChunkRef>& chunks,
                       int32_t fps) {
  std::vector<ChunkColumns> parts(chunks.size());
  const int64_t n = int64_t(chunks.size());
  const TablesView tv = t.view();
  const DecoderView dv = dt.view();
  const int workers = workers_for(n, 1);
  parallel_ranges(n, workers, [&](int, int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) parts[c] = decode_chunk(tv, dv, chunks[c].rows, chunks[c].data, chunks[c].size, fps);
  });
  std::vector<int64_t> row0(size_t(n) + 1, 0), nnz0(size_t(n) + 1, 0);
  for (int64_t c = 0; c < n; ++c) {
    row0[c + 1] = row0[c] + chunks[c].rows;
    nnz0[c + 1] = nnz0[c] + int64_t(parts[c].row.size());
  }
  CodesOut out;
  out.row_ptr.resize(size_t(row0[n]) + 1);
  out.row_ptr[0] = 0;
  out.index.resize(size_t(nnz0[n]));
  out.q.resize(size_t(nnz0[n]));
  parallel_ranges(n, workers, [&](int, int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      scatter_rows(parts[c], chunks[c].rows, nnz0[c], out.row_ptr.data() + row0[c], out.index.data() + nnz0[c],
                   out.q.data() + nnz0[c]);
      parts[c] = ChunkColumns();  // free as we go
    }
  });
  return out;
}

}  // namespace mdlsae::codec
