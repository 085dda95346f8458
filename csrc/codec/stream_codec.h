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
    kSiblingsOverlap = 6,  // encoding: feature `feature` active in a parent row that an earlier sibling holds
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

// The first i in [lo, n) where below(i) is false, below being true, then false over [lo, n): in
// doubling steps from lo, then halving, so O(log) of the distance moved.
template <class Below>
MDLSAE_CODEC_HD int64_t gallop(int64_t lo, int64_t n, Below below) {
  int64_t hi = lo;
  for (int64_t step = 1; hi < n && below(hi); step *= 2) {
    lo = hi + 1;
    hi = lo + step;
  }
  if (hi > n) hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (below(mid))
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// A parent with this many times more rows than the child's list is searched, not merged: a
// child's split (or merge) must not cost its parent's rows, or a parent with thousands of
// children costs their number times its rows.
constexpr int64_t kGallopRatio = 8;

// Splits a child's rows into positions among its parent's rows (on) and among the other rows
// (off), each with room for nc entries; returns (n_on, n_off) packed as n_on << 32 | n_off. A
// merge that advances by flags, not branches: which list moves next is data that no predictor
// guesses; against a much longer parent list, searches.
MDLSAE_CODEC_HD uint64_t split_by_parent(const int32_t* child, int64_t nc, const int32_t* par, int64_t np,
                                         int32_t* on, int32_t* off) {
  int64_t i = 0, j = 0, n_on = 0, n_off = 0;
  if (np > kGallopRatio * nc) {
    for (; i < nc; ++i) {
      const int32_t c = child[i];
      j = gallop(j, np, [&](int64_t k) { return par[k] < c; });
      if (j < np && par[j] == c)
        on[n_on++] = int32_t(j);
      else
        off[n_off++] = int32_t(c - j);
    }
    return uint64_t(n_on) << 32 | uint64_t(n_off);
  }
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
// parent's rows less those its earlier siblings hold. Each parent keeps a bitmap of the rows its
// coded children hold, and above 1,024 rows also the count of each 1,024-row block's (np bits
// and np / 1024 counts in the first words of its columns' stretch of a scratch that starts
// zeroed, so no two parents share a word). A child's increasing positions map between the
// parent's rows and its context in one pass that skips whole blocks, then words: O(np / 1024 +
// 32 n) per child however many siblings came before. (A walk over each earlier sibling was
// quadratic in them; a Fenwick tree, O(log np) per position, decoded a regular tree 45 % slower;
// words alone made a hub of 32,000 children 3x slower than that.)
MDLSAE_CODEC_HD int popcount32(uint32_t v) {
#if defined(__CUDA_ARCH__)
  return __popc(v);
#else
  return __builtin_popcount(v);
#endif
}

MDLSAE_CODEC_HD int ctz32(uint32_t v) {  // v != 0
#if defined(__CUDA_ARCH__)
  return __ffs(int(v)) - 1;
#else
  return __builtin_ctz(v);
#endif
}

struct TakenRows {
  static constexpr int64_t kBlockRows = 1024, kBlockWords = kBlockRows / 32;
  uint32_t* bits;    // row j of the parent: bit j % 32 of bits[j / 32]
  uint32_t* blocks;  // rows held per block of kBlockRows, or nullptr for a parent of <= kBlockRows rows

  MDLSAE_CODEC_HD static TakenRows of(int32_t* stretch, int64_t np) {
    uint32_t* b = reinterpret_cast<uint32_t*>(stretch);
    return {b, np > kBlockRows ? b + (np + 31) / 32 : nullptr};
  }
  MDLSAE_CODEC_HD void take(int64_t j) {
    bits[j / 32] |= uint32_t(1) << (j % 32);
    if (blocks) ++blocks[j / kBlockRows];
  }
  // Increasing positions among the parent's rows -> positions in the context they leave, each
  // row taken as it goes. False when a row is held already. (The child's own i rows taken so far
  // all lie below its next one.)
  MDLSAE_CODEC_HD bool to_context(int32_t* pos, int64_t n) {
    int64_t w = 0, held = 0;  // held: rows held in the words below w
    for (int64_t i = 0; i < n; ++i) {
      const int64_t j = pos[i];
      if (blocks)
        for (; (w / kBlockWords + 1) * kBlockWords <= j / 32; w = (w / kBlockWords + 1) * kBlockWords)
          held += blocks[w / kBlockWords] - prefix_in_block(w);
      for (; w < j / 32; ++w) held += popcount32(bits[w]);
      const uint32_t bit = uint32_t(1) << (j % 32);
      if (bits[w] & bit) return false;
      pos[i] = int32_t(j - (held + popcount32(bits[w] & (bit - 1)) - i));
      take(j);
    }
    return true;
  }
  // The inverse: increasing context positions (each below the context's rows) -> the parent's rows, taken.
  MDLSAE_CODEC_HD void from_context(int32_t* pos, int64_t n) {
    int64_t w = 0, free = 0;  // free: rows free in the words below w
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = pos[i] - i;  // among the rows still free
      if (blocks)
        for (int64_t next = (w / kBlockWords + 1) * kBlockWords;; next = (w / kBlockWords + 1) * kBlockWords) {
          const int64_t rest = (next - w) * 32 - (blocks[w / kBlockWords] - prefix_in_block(w));
          if (free + rest > k) break;
          free += rest;
          w = next;
        }
      for (; free + 32 - popcount32(bits[w]) <= k; ++w) free += 32 - popcount32(bits[w]);
      uint32_t clear = ~bits[w];
      for (int64_t skip = k - free; skip > 0; --skip) clear &= clear - 1;
      const int64_t j = 32 * w + ctz32(clear);
      pos[i] = int32_t(j);
      take(j);
    }
  }

 private:
  // Rows held in w's block below word w.
  MDLSAE_CODEC_HD int64_t prefix_in_block(int64_t w) const {
    int64_t c = 0;
    for (int64_t v = w / kBlockWords * kBlockWords; v < w; ++v) c += popcount32(bits[v]);
    return c;
  }
};

// The encoder's first pass with exclusive siblings, over the whole chunk in coding order (earlier
// siblings first): each child's context positions to on and its positions among the rows without
// its parent to off, at its columns' place (see encode_stream). taken: zeroed scratch parallel to
// the columns; held [d_sae], zeroed: the rows each parent's children hold so far; place [2 d_sae]:
// per child f, its on rows (those with its parent) at 2 f and its context's rows at 2 f + 1.
MDLSAE_CODEC_HD StreamStatus place_siblings(const TablesView& t, const ColumnsView& col, int32_t* on, int32_t* off,
                                            int32_t* taken, int64_t* held, int64_t* place) {
  for (int64_t oi = 0; oi < t.d_sae; ++oi) {
    const int32_t f = t.order[oi], p = t.parent[f];
    if (p < 0) continue;
    const int64_t b = col.ptr[f], n = col.ptr[f + 1] - b, pb = col.ptr[p], np = col.ptr[p + 1] - pb;
    const int64_t n_on = int64_t(split_by_parent(col.row + b, n, col.row + pb, np, on + b, off + b) >> 32);
    if (!TakenRows::of(taken + pb, np).to_context(on + b, n_on))
      return {StreamStatus::kSiblingsOverlap, f, 0};
    place[2 * f] = n_on;
    place[2 * f + 1] = np - held[p];
    held[p] += n_on;
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
// exclusive siblings (t.kid_ptr), as place_siblings left them with `place`.
template <class Enc, class Room>
MDLSAE_STREAM_HD inline StreamStatus encode_stream(Enc& enc, Room& room, const TablesView& t,
                                                   const EncoderView& e, const ColumnsView& col, int64_t lo,
                                                   int64_t hi, int32_t* on, int32_t* off,
                                                   const int64_t* place = nullptr) {
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
      const int64_t np = col.ptr[p + 1] - col.ptr[p], n_on = place[2 * f];
      ok = put_gaps_reverse(enc, room, off + b, n - n_on, col.rows - np, t.off[f], e.gap_sym + e.gap_ptr[2 * f + 1]) &&
           put_gaps_reverse(enc, room, on + b, n_on, place[2 * f + 1], t.main[f], main_sym);
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
  if (np > kGallopRatio * n_off) {
    for (int64_t j = 0, k = 0; j < n_off; ++j) {
      const int32_t o = off[j];
      k = gallop(k, np, [&](int64_t i) { return prow[i] - i <= o; });
      off[j] = int32_t(o + k);
    }
  } else {
    for (int64_t j = 0, k = 0; j < n_off;) {
      const bool parent_first = k < np && prow[k] - k <= off[j];
      off[j] = int32_t(off[j] + (parent_first ? 0 : k));  // in place: rewritten only as j moves on
      k += parent_first;
      j += !parent_first;
    }
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
