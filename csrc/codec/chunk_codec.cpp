// The chunk coder (see chunk_codec.h). Chunk payload: u32 stream count, u32 word count of each
// stream, then the streams' 32-bit words (little-endian). A stream's first two words hold the
// encoder's final state; the decoder must end exactly on the initial state, which catches
// damage that slipped past the checksum.
#include "codec/chunk_codec.h"

#include <algorithm>
#include <cstring>

#include "codec/rans.h"
#include "common/check.h"
#include "cpu/parallel.h"

namespace mdlsae::codec {
namespace {

struct Op {
  uint32_t start, freq;
};

inline void put_bit(std::vector<Op>& ops, bool one, uint32_t f1) {
  const uint32_t s0 = uint32_t(kProbScale - f1);
  ops.push_back(one ? Op{s0, f1} : Op{0, s0});
}

// Positions (strictly increasing, < n_seq) of the active entries of a sequence of n_seq rows.
void put_gaps(std::vector<Op>& ops, const std::vector<int64_t>& pos, int64_t n_seq, const GapModel& g,
              int32_t feature) {
  if (!g.used) {
    MDLSAE_CHECK_ARG(pos.empty(), "feature ", feature, " is active in this chunk but its model says never");
    return;
  }
  const int32_t m = g.m;
  int64_t cur = 0;
  for (int64_t p : pos) {
    const int64_t gap = p - cur, q = gap >> m;
    for (int64_t t = 0; t < q; ++t) put_bit(ops, true, g.cont);
    put_bit(ops, false, g.cont);
    for (int32_t j = m - 1; j >= 0; --j) put_bit(ops, (gap >> j) & 1, g.bit1[j]);
    cur = p + 1;
  }
  // End of sequence: "continue" until the gap could no longer fit (the decoder stops there).
  const int64_t rem = n_seq - cur;
  for (int64_t t = 0; (t << m) < rem; ++t) put_bit(ops, true, g.cont);
}

bool get_gaps(RansDecoder& dec, std::vector<int64_t>& pos, int64_t n_seq, const GapModel& g) {
  pos.clear();
  if (!g.used) return true;
  const int32_t m = g.m;
  int64_t cur = 0;
  while (cur < n_seq && !dec.failed) {
    const int64_t rem = n_seq - cur;
    int64_t t = 0;
    while ((t << m) < rem && dec.get_bit(g.cont)) ++t;
    if ((t << m) >= rem) break;
    int64_t r = 0;
    for (int32_t j = m - 1; j >= 0; --j) r = (r << 1) | int64_t(dec.get_bit(g.bit1[j]));
    const int64_t gap = (t << m) + r;
    if (gap >= rem) return false;
    pos.push_back(cur + gap);
    cur += gap + 1;
  }
  return !dec.failed;
}

// Column (feature-major) view of a chunk's codes.
struct Columns {
  std::vector<int64_t> ptr;
  std::vector<int64_t> row;
  std::vector<int32_t> q;
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
  col.row.resize(size_t(nnz));
  col.q.resize(size_t(nnz));
  std::vector<int64_t> cur(col.ptr.begin(), col.ptr.end() - 1);
  for (int64_t r = 0; r < c.rows; ++r)
    for (int64_t e = c.row_ptr[r]; e < c.row_ptr[r + 1]; ++e) {
      const int64_t at = cur[c.index[e]]++;
      col.row[at] = r;
      col.q[at] = c.q[e];
    }
  return col;
}

// Splits a child's rows into positions among its parent's rows and among the other rows.
void split_by_parent(const int64_t* child, int64_t nc, const int64_t* par, int64_t np,
                     std::vector<int64_t>& on, std::vector<int64_t>& off) {
  on.clear();
  off.clear();
  int64_t j = 0;
  for (int64_t i = 0; i < nc; ++i) {
    while (j < np && par[j] < child[i]) ++j;
    if (j < np && par[j] == child[i])
      on.push_back(j);
    else
      off.push_back(child[i] - j);  // rows before it that are not the parent's
  }
}

int32_t streams_of(int64_t d, int32_t fps) { return fps <= 0 ? 1 : int32_t((d + fps - 1) / fps); }

void put_u32(std::vector<uint8_t>& out, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) out[at + i] = uint8_t(v >> (8 * i));
}

uint32_t get_u32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

}  // namespace

std::vector<uint8_t> encode_chunk(const CodecTables& t, const CodesView& codes, int32_t fps) {
  const int64_t d = t.d_sae;
  const Columns col = to_columns(codes, d);
  const int32_t n_streams = streams_of(d, fps);
  const int64_t per = fps <= 0 ? d : fps;
  std::vector<uint8_t> out(size_t(4) + 4 * size_t(n_streams), 0);
  put_u32(out, 0, uint32_t(n_streams));
  std::vector<Op> ops;
  std::vector<int64_t> pos, on, off;
  std::vector<uint32_t> words;
  for (int32_t s = 0; s < n_streams; ++s) {
    ops.clear();
    for (int64_t oi = s * per; oi < std::min(d, (s + 1) * per); ++oi) {
      const int32_t f = t.order[oi];
      const int64_t b = col.ptr[f], n = col.ptr[f + 1] - b;
      const int32_t p = t.parent[f];
      if (p < 0) {
        pos.assign(col.row.begin() + b, col.row.begin() + b + n);
        put_gaps(ops, pos, codes.rows, t.main[f], f);
      } else {
        const int64_t pb = col.ptr[p], np = col.ptr[p + 1] - pb;
        split_by_parent(col.row.data() + b, n, col.row.data() + pb, np, on, off);
        put_gaps(ops, on, np, t.main[f], f);
        put_gaps(ops, off, codes.rows - np, t.off[f], f);
      }
      const int32_t* syms = t.sym.data() + t.vptr[f];
      const int64_t ns = t.vptr[f + 1] - t.vptr[f];
      for (int64_t e = b; e < b + n; ++e) {
        const int64_t i = std::lower_bound(syms, syms + ns, col.q[e]) - syms;
        MDLSAE_CHECK_ARG(i < ns && syms[i] == col.q[e], "value ", col.q[e], " of feature ", f,
                         " is not in its value table");
        ops.push_back({t.start[t.vptr[f] + i], t.freq[t.vptr[f] + i]});
      }
    }
    words.clear();
    uint64_t x = kRansL;
    for (auto it = ops.rbegin(); it != ops.rend(); ++it)
      rans_put(x, it->start, it->freq, [&](uint32_t w) { words.push_back(w); });
    const size_t at = out.size();
    out.resize(at + 4 * (words.size() + 2));
    put_u32(out, at, uint32_t(x));
    put_u32(out, at + 4, uint32_t(x >> 32));
    for (size_t i = 0; i < words.size(); ++i) put_u32(out, at + 8 + 4 * i, words[words.size() - 1 - i]);
    put_u32(out, 4 + 4 * size_t(s), uint32_t(words.size() + 2));
  }
  return out;
}

CodesOut decode_chunk(const CodecTables& t, int64_t rows, const uint8_t* data, size_t size, int32_t fps) {
  const int64_t d = t.d_sae;
  const int32_t n_streams = streams_of(d, fps);
  const int64_t per = fps <= 0 ? d : fps;
  MDLSAE_CHECK_DATA(size >= 4 + 4 * size_t(n_streams) && get_u32(data) == uint32_t(n_streams),
                    "chunk header is damaged (expected ", n_streams, " streams)");
  size_t at = 4 + 4 * size_t(n_streams);
  std::vector<uint32_t> words;
  // Decoded rows and values per feature, appended in coding order.
  std::vector<int64_t> beg(size_t(d), 0), cnt(size_t(d), 0), row;
  std::vector<int32_t> qv;
  std::vector<int64_t> on, off, merged;
  for (int32_t s = 0; s < n_streams; ++s) {
    const uint64_t nw = get_u32(data + 4 + 4 * size_t(s));
    MDLSAE_CHECK_DATA(nw >= 2 && nw * 4 <= size - at, "stream ", s, " of a chunk overruns the chunk");
    words.resize(size_t(nw));
    for (uint64_t i = 0; i < nw; ++i) words[i] = get_u32(data + at + 4 * i);
    at += 4 * nw;
    RansDecoder dec;
    dec.init(words.data(), uint32_t(nw));
    for (int64_t oi = s * per; oi < std::min(d, (s + 1) * per) && !dec.failed; ++oi) {
      const int32_t f = t.order[oi];
      const int32_t p = t.parent[f];
      bool ok;
      if (p < 0) {
        ok = get_gaps(dec, merged, rows, t.main[f]);
      } else {
        ok = get_gaps(dec, on, cnt[p], t.main[f]) && get_gaps(dec, off, rows - cnt[p], t.off[f]);
        if (ok) {  // back to row numbers: on indexes the parent's rows, off the other rows
          const int64_t* prow = row.data() + beg[p];
          merged.clear();
          size_t i = 0, j = 0;
          int64_t k = 0;  // parent rows before the current off row
          while (i < on.size() || j < off.size()) {
            int64_t off_row = -1;
            if (j < off.size()) {
              while (k < cnt[p] && prow[k] <= off[j] + k) ++k;
              off_row = off[j] + k;
            }
            if (j >= off.size() || (i < on.size() && prow[on[i]] < off_row)) {
              merged.push_back(prow[on[i++]]);
            } else {
              merged.push_back(off_row);
              ++j;
            }
          }
        }
      }
      MDLSAE_CHECK_DATA(ok, "chunk payload is damaged (activity of feature ", f, ")");
      beg[f] = int64_t(row.size());
      cnt[f] = int64_t(merged.size());
      row.insert(row.end(), merged.begin(), merged.end());
      const int64_t vb = t.vptr[f], ns = t.vptr[f + 1] - vb;
      MDLSAE_CHECK_DATA(ns > 0 || merged.empty(), "chunk payload is damaged (values of feature ", f, ")");
      for (size_t e = 0; e < merged.size(); ++e) {
        const uint32_t slot = dec.slot();
        const int64_t i = std::upper_bound(t.start.data() + vb, t.start.data() + vb + ns, slot) -
                          (t.start.data() + vb) - 1;
        dec.advance(t.start[vb + i], t.freq[vb + i]);
        qv.push_back(t.sym[vb + i]);
      }
    }
    MDLSAE_CHECK_DATA(dec.finished_cleanly(), "chunk payload is damaged (stream ", s, " does not end cleanly)");
  }
  MDLSAE_CHECK_DATA(at == size, "chunk has ", size - at, " unexpected trailing bytes");
  // Back to row-major: features in index order make indices increase within each row.
  CodesOut out;
  out.row_ptr.assign(size_t(rows) + 1, 0);
  for (int64_t r : row) ++out.row_ptr[r + 1];
  for (int64_t r = 0; r < rows; ++r) out.row_ptr[r + 1] += out.row_ptr[r];
  out.index.resize(row.size());
  out.q.resize(row.size());
  std::vector<int64_t> cur(out.row_ptr.begin(), out.row_ptr.end() - 1);
  for (int64_t f = 0; f < d; ++f)
    for (int64_t e = beg[f]; e < beg[f] + cnt[f]; ++e) {
      const int64_t a = cur[row[e]]++;
      out.index[a] = int32_t(f);
      out.q[a] = qv[e];
    }
  return out;
}

std::vector<std::vector<uint8_t>> encode_chunks(const CodecTables& t, const CodesView& codes, int64_t chunk_rows,
                                                int32_t fps) {
  MDLSAE_CHECK_ARG(chunk_rows > 0, "chunk_rows must be positive, got ", chunk_rows);
  const int64_t n_chunks = (codes.rows + chunk_rows - 1) / chunk_rows;
  std::vector<std::vector<uint8_t>> out(static_cast<size_t>(n_chunks));
  parallel_ranges(n_chunks, workers_for(n_chunks, 1), [&](int, int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      const int64_t r0 = c * chunk_rows, r1 = std::min(codes.rows, r0 + chunk_rows);
      out[c] = encode_chunk(t, CodesView{r1 - r0, codes.row_ptr + r0, codes.index, codes.q}, fps);
    }
  });
  return out;
}

CodesOut decode_chunks(const CodecTables& t, const std::vector<ChunkRef>& chunks, int32_t fps) {
  std::vector<CodesOut> parts(chunks.size());
  const int64_t n = int64_t(chunks.size());
  parallel_ranges(n, workers_for(n, 1), [&](int, int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) parts[c] = decode_chunk(t, chunks[c].rows, chunks[c].data, chunks[c].size, fps);
  });
  CodesOut out;
  out.row_ptr.push_back(0);
  for (auto& p : parts) {
    const int64_t base = out.row_ptr.back();
    for (size_t r = 1; r < p.row_ptr.size(); ++r) out.row_ptr.push_back(base + p.row_ptr[r]);
    out.index.insert(out.index.end(), p.index.begin(), p.index.end());
    out.q.insert(out.q.end(), p.q.begin(), p.q.end());
  }
  return out;
}

}  // namespace mdlsae::codec
