// The coding of one independent stream (DESIGN §3): a range of features, in coding order, of one
// chunk of rows, each as geometric gaps over its rows (children over their parent's active, then
// inactive, rows) and its quantized values. Host/device code over flat arrays (views of the
// tables in tables.h), written once: the CPU chunk coder (chunk_codec.cpp), the host build of the
// device driver (flat_codec.h) and the CUDA kernels (cuda/rans_codec.cu) all run these very
// functions, so the CPU's tests check the bytes the GPU writes. Nothing here allocates or throws:
// the encoder's word buffer grows through the caller's `Room` (the CPU grows a vector; the device
// sizes each stream's buffer beforehand from stream_put_bound), and failures come back as a
// StreamStatus that the caller turns into an error.
#pragma once
#include <cstdint>

#include "codec/rans.h"
#include "codec/tables.h"

#if defined(__CUDACC__)
#define MDLSAE_STREAM_HD __host__ __device__
#else
#define MDLSAE_STREAM_HD
#endif

namespace mdlsae::codec {

MDLSAE_CODEC_HD int clz64(uint64_t v) {  // v != 0
#if defined(__CUDA_ARCH__)
  return __clzll(static_cast<long long>(v));
#else
  return __builtin_clzll(v);
#endif
}

// One chunk's codes feature-major: feature f's chunk-local rows (increasing) and values at
// [ptr[f], ptr[f + 1]) of row and q.
struct ColumnsView {
  const int64_t* ptr;  // [d_sae + 1]
  const int32_t* row;
  const int32_t* q;
  int64_t rows;  // rows of the chunk, < 2^31
};

// Why a stream could not be encoded or decoded (the caller names it: chunk_codec.h check_stream).
struct StreamStatus {
  enum : int32_t {
    kOk = 0,
    kActiveButNever = 1,   // encoding: a feature active where its model says never
    kValueNotInTable = 2,  // encoding: a value its table lacks
    kBadFraming = 3,       // decoding: stream `feature` overruns its chunk (or the chunk cannot hold the streams)
    kDamagedValues = 4,    // decoding: feature `feature` decoded active without a value table
    kUncleanEnd = 5,       // decoding: stream `feature` does not end on the initial states
    kSiblingsOverlap = 6,  // encoding: feature `feature` active in a parent row that its earlier sibling `value` holds
  };
  int32_t error = kOk;
  int32_t feature = -1;
  int32_t value = 0;
};

// Upper bound of the symbols put for a sequence of n_seq rows with n active under g, so of its
// words (each put emits at most one): see put_gap's reservations, whose sum over the n + 1 gaps
// this is (sum of gap >> m <= n_seq >> m).
MDLSAE_CODEC_HD int64_t gap_put_bound(const GapModel& g, int64_t n, int64_t n_seq) {
  return g.used ? (n_seq >> g.m) + (n + 1) * (2 * int64_t(g.m) + 2) : 0;
}

// Puts, in reverse coding order, the active positions pos[0, n) (strictly increasing, < n_seq)
// of a sequence of n_seq rows and its end, as GapModel describes. sym: the model's grouped
// symbols (gap_intervals' order). Returns false when the model says the feature never fires.
// Enc: the RansEncoder itself, or anything with its put, put_exact and `out` (whose room `room`
// makes), such as the CPU's queue of symbols (chunk_codec.cpp).
template <class Enc, class Room>
MDLSAE_STREAM_HD inline bool put_gaps_reverse(Enc& enc_io, Room& room, const int32_t* pos, int64_t n,
                                              int64_t n_seq, const GapModel& g, const EncSymbol* sym) {
  if (!g.used) return n == 0;
  const int32_t m = g.m;
  const GapGroups gg = gap_groups(m);
  Enc enc = enc_io;  // a local copy keeps the lane states in registers
  const EncSymbol& cont = sym[gg.head_symbols() - 1];
  const EncSymbol* low = sym + gg.head_symbols();
  // binary decisions come only in a sequence's last, partial block (a few per feature and
  // chunk): coded with a division rather than stored
  const auto binary = [&](uint32_t f1, bool one) {
    const uint32_t s0 = RansDecoder::BitSplit::of(f1).s0;
    one ? enc.put_exact(s0, f1) : enc.put_exact(0, s0);
  };
  // The gap `gap` when rem rows are left; gap == rem codes the end of the sequence.
  const auto put_gap = [&](int64_t gap, int64_t rem) {
    const int64_t tf = rem >> m;  // whole blocks
    enc.out = room(enc.out, (gap >> m) + 2 * m + 2);  // continues, then at most 2m + 1 decisions
    if ((gap >> m) < tf) {
      uint64_t r = uint64_t(gap) & ((uint64_t(1) << m) - 1);
      for (int32_t i = gg.low_groups - 1; i >= 0; --i, r >>= kGroupBits)
        enc.put(low[(int64_t(i) << kGroupBits) + (r & ((1u << kGroupBits) - 1))]);
      enc.put(sym[r]);  // stop and the top bits
      for (int64_t t = gap >> m; t > 0; --t) enc.put(cont);
      return;
    }
    // In the partial block: decisions on the digits of remp down to the first one where the
    // offset has a 0 (the highest bit where they differ; none at the end), then the low bits.
    const uint64_t off = uint64_t(gap - (tf << m)), remp = uint64_t(rem - (tf << m));
    int32_t k0 = 0;
    if (off < remp) {
      const int32_t ks = 63 - clz64(remp ^ off);
      uint64_t r = off;
      for (int32_t j = 0; j < ks; ++j, r >>= 1) binary(g.bit1[j], r & 1);
      binary(g.empty[ks], false);
      k0 = ks + 1;
    }
    for (int32_t k = k0; k < m; ++k)
      if ((remp >> k) & 1) binary(g.empty[k], true);
    for (int64_t t = tf; t > 0; --t) enc.put(cont);
  };
  const int64_t last = n ? int64_t(pos[n - 1]) + 1 : 0;
  put_gap(n_seq - last, n_seq - last);
  for (int64_t k = n - 1; k >= 0; --k) {
    const int64_t cur = k ? int64_t(pos[k - 1]) + 1 : 0;
    put_gap(pos[k] - cur, n_seq - cur);
  }
  enc_io = enc;
  return true;
}

// Puts, in reverse coding order, the values q[0, n) of feature f; returns the index of the first
// (in reverse order) value missing from its table, or -1.
template <class Enc, class Room>
MDLSAE_STREAM_HD inline int64_t put_values_reverse(Enc& enc_io, Room& room, const TablesView& t,
                                                   const EncoderView& e, int32_t f, const int32_t* q, int64_t n) {
  enc_io.out = room(enc_io.out, n);
  Enc enc = enc_io;
  const EncSymbol* sym = e.val_sym + t.vptr[f];
  const EncoderView::ValueMap vm = e.value_map(t, f);
  for (int64_t i = n - 1; i >= 0; --i) {
    const int64_t s = vm.index(q[i]);
    if (s < 0) return i;
    enc.put(sym[s]);
  }
  enc_io = enc;
  return -1;
}

// Splits a child's rows into positions among its parent's rows (on) and among the other rows
// (off), each with room for nc entries; returns (n_on, n_off) packed as n_on << 32 | n_off. A
// merge that advances by flags, not branches: which list moves next is data that no predictor
// guesses.
MDLSAE_CODEC_HD uint64_t split_by_parent(const int32_t* child, int64_t nc, const int32_t* par, int64_t np,
                                         int32_t* on, int32_t* off) {
  int64_t i = 0, j = 0, n_on = 0, n_off = 0;
  while (i < nc) {
    const int32_t c = child[i], p = j < np ? par[j] : INT32_MAX;
    const bool before = p < c, same = p == c;
    on[n_on] = int32_t(j);
    off[n_off] = int32_t(c - j);  // rows before it that are not the parent's
    n_on += same;
    n_off += !(before | same);
    i += !before;
    j += before | same;
  }
  return uint64_t(n_on) << 32 | uint64_t(n_off);
}

// Exclusive siblings (TablesView::kid_ptr). A child's main positions run over its context: its
// parent's rows less those its earlier siblings hold. Context m of a child is context m - 1 less
// the positions (in context m - 1) of its sibling of rank m - 1, so each sibling's positions in
// its own context map a list one context up or down in one merge.

// Ascending positions v[0, n) in a context -> positions in the next one, which lacks the ascending
// positions taken[0, nt) of the same context. False when v shares a position with taken.
MDLSAE_CODEC_HD bool drop_taken(int32_t* v, int64_t n, const int32_t* taken, int64_t nt) {
  int64_t t = 0;
  for (int64_t i = 0; i < n; ++i) {
    while (t < nt && taken[t] < v[i]) ++t;
    if (t < nt && taken[t] == v[i]) return false;
    v[i] = int32_t(v[i] - t);
  }
  return true;
}

// The inverse: positions in the next context -> positions in this one.
MDLSAE_CODEC_HD void skip_taken(int32_t* v, int64_t n, const int32_t* taken, int64_t nt) {
  int64_t t = 0;
  for (int64_t i = 0; i < n; ++i) {
    int64_t at = v[i] + t;
    while (t < nt && taken[t] <= at) ++t, ++at;
    v[i] = int32_t(at);
  }
}

// Pads a child's context positions in the encoder's scratch up to its number of entries.
constexpr int32_t kNoPosition = INT32_MAX;

// The positions before the padding in list[0, n).
MDLSAE_CODEC_HD int64_t listed(const int32_t* list, int64_t n) {
  int64_t lo = 0;
  for (int64_t len = n; len > 0;) {
    const int64_t half = len / 2;
    if (list[lo + half] != kNoPosition) {
      lo += half + 1;
      len -= half + 1;
    } else {
      len = half;
    }
  }
  return lo;
}

// The encoder's first pass with exclusive siblings, over the whole chunk in coding order (earlier
// siblings first): each child's context positions to on and its positions among the rows without
// its parent to off, at its columns' place (see encode_stream), on padded with kNoPosition.
MDLSAE_CODEC_HD StreamStatus place_siblings(const TablesView& t, const ColumnsView& col, int32_t* on, int32_t* off) {
  for (int64_t oi = 0; oi < t.d_sae; ++oi) {
    const int32_t f = t.order[oi], p = t.parent[f];
    if (p < 0) continue;
    const int64_t b = col.ptr[f], n = col.ptr[f + 1] - b, pb = col.ptr[p];
    const int64_t n_on = int64_t(split_by_parent(col.row + b, n, col.row + pb, col.ptr[p + 1] - pb, on + b, off + b) >> 32);
    for (int32_t r = 0; r < t.rank[f]; ++r) {
      const int32_t s = t.kids[t.kid_ptr[p] + r];
      const int64_t sb = col.ptr[s];
      if (!drop_taken(on + b, n_on, on + sb, listed(on + sb, col.ptr[s + 1] - sb)))
        return {StreamStatus::kSiblingsOverlap, f, s};
    }
    for (int64_t i = n_on; i < n; ++i) on[b + i] = kNoPosition;
  }
  return {};
}

// Upper bound of the words of the stream of features order[lo, hi) of a chunk, its opening
// states included.
MDLSAE_CODEC_HD int64_t stream_word_bound(const TablesView& t, const ColumnsView& col, int64_t lo, int64_t hi) {
  int64_t b = kStateWords;
  for (int64_t oi = lo; oi < hi; ++oi) {
    const int32_t f = t.order[oi], p = t.parent[f];
    const int64_t n = col.ptr[f + 1] - col.ptr[f];
    b += n;
    if (p < 0) {
      b += gap_put_bound(t.main[f], n, col.rows);
    } else {
      const int64_t np = col.ptr[p + 1] - col.ptr[p];
      b += gap_put_bound(t.main[f], n, np) + gap_put_bound(t.off[f], n, col.rows - np);
    }
  }
  return b;
}

// Encodes the stream of features order[lo, hi) of a chunk into enc (words written forward from
// enc.out, room made by `room`; Enc as in put_gaps_reverse). on, off: scratch at the columns'
// positions (the entries of feature f at [col.ptr[f], col.ptr[f + 1])), used by children; with
// exclusive siblings, as place_siblings left them.
template <class Enc, class Room>
MDLSAE_STREAM_HD inline StreamStatus encode_stream(Enc& enc, Room& room, const TablesView& t,
                                                   const EncoderView& e, const ColumnsView& col, int64_t lo,
                                                   int64_t hi, int32_t* on, int32_t* off) {
  StreamStatus st;
  for (int64_t oi = hi - 1; oi >= lo; --oi) {
    const int32_t f = t.order[oi];
    const int64_t b = col.ptr[f], n = col.ptr[f + 1] - b;
    const int64_t bad = put_values_reverse(enc, room, t, e, f, col.q + b, n);
    if (bad >= 0) return {StreamStatus::kValueNotInTable, f, col.q[b + bad]};
    const EncSymbol* main_sym = e.gap_sym + e.gap_ptr[2 * f];
    const int32_t p = t.parent[f];
    bool ok;
    if (p < 0) {
      ok = put_gaps_reverse(enc, room, col.row + b, n, col.rows, t.main[f], main_sym);
    } else if (t.kid_ptr) {
      const int64_t np = col.ptr[p + 1] - col.ptr[p], n_on = listed(on + b, n);
      int64_t context = np;
      for (int32_t r = 0; r < t.rank[f]; ++r) {
        const int32_t s = t.kids[t.kid_ptr[p] + r];
        context -= listed(on + col.ptr[s], col.ptr[s + 1] - col.ptr[s]);
      }
      ok = put_gaps_reverse(enc, room, off + b, n - n_on, col.rows - np, t.off[f], e.gap_sym + e.gap_ptr[2 * f + 1]) &&
           put_gaps_reverse(enc, room, on + b, n_on, context, t.main[f], main_sym);
    } else {
      const int64_t pb = col.ptr[p], np = col.ptr[p + 1] - pb;
      const uint64_t sizes = split_by_parent(col.row + b, n, col.row + pb, np, on + b, off + b);
      ok = put_gaps_reverse(enc, room, off + b, int64_t(sizes & 0xffffffffu), col.rows - np, t.off[f],
                            e.gap_sym + e.gap_ptr[2 * f + 1]) &&
           put_gaps_reverse(enc, room, on + b, int64_t(sizes >> 32), np, t.main[f], main_sym);
    }
    if (!ok) return {StreamStatus::kActiveButNever, f, 0};
  }
  return st;
}

MDLSAE_CODEC_HD void put_u32(uint8_t* at, uint32_t v) {
  for (int i = 0; i < 4; ++i) at[i] = uint8_t(v >> (8 * i));
}

MDLSAE_CODEC_HD uint32_t get_u32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

// A stream's bytes at dst (4 * (kStateWords + n_words)): the encoder's final states, then its
// words [0, n_words) in reverse order of emission, little-endian.
MDLSAE_CODEC_HD void write_stream(const uint32_t states[kStateWords], const uint32_t* words, int64_t n_words,
                                  uint8_t* dst) {
  for (int i = 0; i < kStateWords; ++i) put_u32(dst + 4 * i, states[i]);
  uint8_t* w = dst + 4 * kStateWords;
  for (int64_t i = n_words; i-- > 0; w += 4) put_u32(w, words[i]);
}

// Where a decoding pass that only counts sends positions and values (pos[i] = v does nothing).
struct Discard {
  struct Slot {
    MDLSAE_CODEC_HD void operator=(int32_t) const {}
  };
  MDLSAE_CODEC_HD Slot operator[](int64_t) const { return {}; }
};

// Writes to pos (room for n_seq entries; int32_t* or Discard) the active positions of a sequence
// of n_seq rows (see GapModel); returns their count. groups: the model's lookups
// (DecoderView::gap_groups_of).
template <class Pos>
MDLSAE_STREAM_HD inline int64_t get_gaps(RansDecoder& dec_io, Pos pos, int64_t n_seq, const GapModel& g,
                                         const uint32_t* groups) {
  if (!g.used) return 0;
  int64_t count = 0;
  RansDecoder dec = dec_io;  // a local copy stays in registers
  const int32_t m = g.m;
  const GapGroups gg = gap_groups(m);
  const uint32_t cont_index = uint32_t(gg.head_symbols() - 1);
  RansDecoder::BitSplit bit[kMaxGapBits], empty[kMaxGapBits];
  for (int32_t j = 0; j < m; ++j) {
    bit[j] = RansDecoder::BitSplit::of(g.bit1[j]);
    empty[j] = RansDecoder::BitSplit::of(g.empty[j]);
  }
  // One grouped symbol: its index, the stream advanced past it.
  const auto get_group = [&](const uint32_t* b) {
    const uint32_t i = GroupLookup{b}.index(dec.slot());
    dec.advance(b[i], b[i + 1] - b[i]);
    return i;
  };
  int64_t cur = 0;
  while (cur < n_seq) {
    const int64_t rem = n_seq - cur, tf = rem >> m;
    int64_t t = 0;
    uint32_t head = cont_index;
    while (t < tf && (head = get_group(groups)) == cont_index) ++t;
    int64_t gap = t << m;
    if (t < tf) {  // stopped in a whole block: the top bits, then the low groups
      uint64_t r = head;
      for (int32_t i = 1; i <= gg.low_groups; ++i) r = (r << kGroupBits) | get_group(groups + i * kGroupStride);
      gap += int64_t(r);
    } else {  // the partial block: one decision per binary digit of what is left
      const int64_t remp = rem - gap;
      int32_t low = -1;
      for (int32_t k = m - 1; k >= 0; --k) {
        if (!((remp >> k) & 1)) continue;
        if (!dec.get_bit(empty[k])) {
          low = k;
          break;
        }
        gap += int64_t(1) << k;
      }
      if (low < 0) break;  // the end of the sequence
      uint64_t r = 0;
      for (int32_t j = low - 1; j >= 0; --j) r = (r << 1) | dec.get_bit(bit[j]);
      gap += int64_t(r);
    }
    pos[count++] = int32_t(cur + gap);
    cur += gap + 1;
  }
  dec_io = dec;
  return count;
}

// Decodes the n values of feature f into q (int32_t* or Discard).
template <class Q>
MDLSAE_STREAM_HD inline void get_values(RansDecoder& dec_io, const TablesView& t, const DecoderView& dt, int32_t f,
                                        Q q, int64_t n) {
  RansDecoder dec = dec_io;
  const int64_t vb = t.vptr[f];
  const uint32_t *start = t.start + vb, *freq = t.freq + vb;
  const int32_t* sym = t.sym + vb;
  const DecoderView::Lookup lut = dt.lookup(f);
  for (int64_t e = 0; e < n; ++e) {
    const int64_t i = lut.index(start, dec.slot());
    dec.advance(start[i], freq[i]);
    q[e] = sym[i];
  }
  dec_io = dec;
}

// A child's rows, increasing, to out[0, n_on + n_off): from on[0, n_on) (indices into its
// parent's rows prow[0, np)) and off[0, n_off) (positions among the other rows; overwritten).
MDLSAE_CODEC_HD void merge_child_rows(const int32_t* prow, int64_t np, const int32_t* on, int64_t n_on, int32_t* off,
                                      int64_t n_off, int32_t* out) {
  // The j-th other row is off[j] plus the parent rows before it: those with prow[k] - k <= off[j].
  for (int64_t j = 0, k = 0; j < n_off;) {
    const bool parent_first = k < np && prow[k] - k <= off[j];
    off[j] = int32_t(off[j] + (parent_first ? 0 : k));  // in place: rewritten only as j moves on
    k += parent_first;
    j += !parent_first;
  }
  int64_t i = 0, j = 0;
  while (i < n_on && j < n_off) {
    const int32_t a = prow[on[i]], b = off[j];
    const bool take_on = a < b;
    *out++ = take_on ? a : b;
    i += take_on;
    j += !take_on;
  }
  for (; i < n_on; ++i) *out++ = prow[on[i]];
  for (; j < n_off; ++j) *out++ = off[j];
}

}  // namespace mdlsae::codec
