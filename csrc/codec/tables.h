// The entropy models of a .mdl file, built deterministically from integer counts stored in its
// header (DESIGN §3): per-feature geometric gap models for activity (flat, or over the
// parent's active and inactive rows) and static categorical models for the quantized values.
// Also the compact varint serialisation of those counts.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "codec/rans.h"

#if defined(__SSE2__) && !defined(__CUDACC__)
#include <emmintrin.h>
#endif

namespace mdlsae::codec {

constexpr int kMaxGapBits = 31;

// Activity model of one feature over a sequence of rows where it fires with probability
// p = n / total (DESIGN §3), exact for a finite sequence. The gap g to the next active row,
// with rem rows left, is in binary decisions: one per whole block of 2^m rows, "continue" (the
// block is empty, P = rho^(2^m)) or "stop", then the m bits of g within the block, bit j
// independent with P(1) = rho^(2^j) / (1 + rho^(2^j)) (rho = 1 - p). In the last, partial block
// of rem' < 2^m rows the decisions follow the binary digits of rem': for each digit k, "empty"
// (the next 2^k rows, P = rho^(2^k)) or not, then the k low bits. The end of the sequence is the
// run of "continue"s and "empty"s that reaches rem: it costs exactly -log2 rho^rem, no more.
//
// Coded, the whole-block decisions are grouped into few symbols (GapGroups): a "head" symbol,
// "continue" or "stop" with the top head_bits bits of the offset, then the offset's other bits
// in groups of kGroupBits, high to low. A symbol's interval splits [0, 2^28) decision by
// decision (split_one), so its probability is their product to ~2^-20 relative. The rare
// decisions of the partial block stay binary.
struct GapModel {
  bool used = false;  // n > 0; otherwise nothing is coded for this sequence
  int32_t m = 0;
  uint32_t cont = 0;  // freq of "continue" out of 2^28
  uint32_t bit1[kMaxGapBits] = {};
  uint32_t empty[kMaxGapBits] = {};  // freq of "the next 2^k rows are empty"
};

constexpr int32_t kGroupBits = 4;
struct GapGroups {
  int32_t head_bits;  // offset bits in the head symbol: m - kGroupBits * low_groups, in [0, 4]
  int32_t low_groups;
  MDLSAE_CODEC_HD int32_t head_symbols() const { return (1 << head_bits) + 1; }  // stop with each top value, then continue
  MDLSAE_CODEC_HD int32_t symbols() const { return head_symbols() + (low_groups << kGroupBits); }
};
MDLSAE_CODEC_HD GapGroups gap_groups(int32_t m) {
  const int32_t low = m > 0 ? (m - 1) / kGroupBits : 0;
  return {m - kGroupBits * low, low};
}
// The intervals of a model's grouped symbols, head first (stop + top bits in increasing value,
// then continue), then each low group's 16 values: g.symbols() (start, freq) pairs. A model
// with extreme probabilities may leave a value an empty interval (freq 0): one no decoder
// returns and no encoder can code.
void gap_intervals(const GapModel& g, uint32_t* start, uint32_t* freq);

GapModel make_gap_model(uint64_t n, uint64_t total, int32_t m);
// Target of P(continue) when choosing m. Any m codes exactly the same information; a small
// P(continue) means short, predictable runs of "continue" (mispredicted branches cost more than
// the extra bit decisions), at one more bit per gap than P = 1/2.
constexpr double kGapContinue = 0.125;
// The m making rho^(2^m) closest to kGapContinue (stored in the file).
int32_t choose_gap_m(uint64_t n, uint64_t total);

// CodecTables as flat arrays (see CodecTables below for each).
struct TablesView {
  int64_t d_sae;
  const int32_t* parent;
  const int32_t* order;
  const GapModel* main;
  const GapModel* off;  // nullptr when no feature has a parent
  const int64_t* vptr;
  const int32_t* sym;
  const uint32_t* start;
  const uint32_t* freq;
  // Exclusive siblings (CodecTables::exclusive), else nullptr: the children of p are
  // kids[kid_ptr[p], kid_ptr[p + 1]) by increasing index, child f at rank[f] among them.
  const int64_t* kid_ptr = nullptr;
  const int32_t* kids = nullptr;
  const int32_t* rank = nullptr;
};

// EncoderTables as flat arrays.
struct EncoderView {
  const int64_t* gap_ptr;
  const EncSymbol* gap_sym;
  const EncSymbol* val_sym;
  const int64_t* qmap_ptr;
  const int32_t* q_lo;
  const int32_t* qmap;
  const int64_t* q_span;

  // Feature f's values -> indices into its table, its fields loaded once for a run of values
  // (a hot loop that reloads them after every store runs at half the speed).
  struct ValueMap {
    const int32_t* qmap;  // dense map over [lo, lo + span), or nullptr: binary search in syms
    int32_t lo;
    int64_t span;
    const int32_t* syms;
    int64_t n;
    // Index of value q, or -1.
    MDLSAE_CODEC_HD int64_t index(int32_t q) const {
      if (qmap) {
        const int64_t at = int64_t(q) - lo;
        return at >= 0 && at < span ? qmap[at] : -1;
      }
      int64_t first = 0;  // lower bound of q in syms[0, n)
      for (int64_t len = n; len > 0;) {
        const int64_t half = len / 2;
        if (syms[first + half] < q) {
          first += half + 1;
          len -= half + 1;
        } else {
          len = half;
        }
      }
      return first < n && syms[first] == q ? first : -1;
    }
  };
  MDLSAE_CODEC_HD ValueMap value_map(const TablesView& t, int32_t f) const {
    return {qmap_ptr[f] >= 0 ? qmap + qmap_ptr[f] : nullptr, q_lo[f], q_span[f], t.sym + t.vptr[f],
            t.vptr[f + 1] - t.vptr[f]};
  }
};

// DecoderTables as flat arrays, with its lookups.
struct DecoderView {
  const int64_t* lut_ptr;
  const int32_t* lut;
  const uint8_t* lut_shift;
  const int64_t* gap_ptr;
  const uint32_t* gap_bounds;

  struct Lookup {
    const int32_t* lut;
    int shift;
    // Index of the symbol (interval starts `start`) that holds slot.
    MDLSAE_CODEC_HD int64_t index(const uint32_t* start, uint32_t slot) const {
      const int32_t* b = lut + (slot >> shift);
      int64_t i = b[0];
      for (int64_t len = b[1] - i + 1; len > 1; len -= len / 2) i = start[i + len / 2] <= slot ? i + len / 2 : i;
      return i;
    }
  };
  MDLSAE_CODEC_HD Lookup lookup(int32_t f) const { return {lut + lut_ptr[f], lut_shift[f]}; }
  MDLSAE_CODEC_HD const uint32_t* gap_groups_of(int32_t f, int kind) const {
    return gap_bounds + gap_ptr[2 * int64_t(f) + kind];
  }
};

// Everything the chunk coder needs, for d_sae features.
struct CodecTables {
  int64_t d_sae = 0;
  uint64_t n_rows = 0;
  std::vector<int32_t> parent;  // -1 for roots
  std::vector<int32_t> order;   // coding order: roots first, then by depth (and rank among siblings when exclusive; stable by index)
  // Siblings exclusive (no two children of a parent active in one of its rows, as a strict tree
  // SAE's codes): a child's main sequence runs over its context, the parent's active rows that
  // no earlier sibling (lower index) holds, so "which child, if any" costs what one categorical
  // choice would. kid_ptr, kids, rank: see TablesView.
  bool exclusive = false;
  std::vector<int64_t> kid_ptr;
  std::vector<int32_t> kids, rank;
  std::vector<GapModel> main;   // roots: over all rows; children: over their context (the parent's active rows)
  std::vector<GapModel> off;    // children: over the parent's inactive rows (empty without children)
  // Value model of feature f: symbols sym[vptr[f]..vptr[f+1]) (increasing q), their interval
  // [start, start + freq) out of 2^28.
  std::vector<int64_t> vptr;
  std::vector<int32_t> sym;
  std::vector<uint32_t> start, freq;

  TablesView view() const {
    return {d_sae, parent.data(), order.data(), main.data(), off.empty() ? nullptr : off.data(),
            vptr.data(), sym.data(), start.data(), freq.data(), exclusive ? kid_ptr.data() : nullptr,
            exclusive ? kids.data() : nullptr, exclusive ? rank.data() : nullptr};
  }
};

// The encoder's form of the tables: every interval as a precomputed EncSymbol.
struct EncoderTables {
  // Sequence kind k (0 main, 1 off) of feature f: gap_sym[gap_ptr[2f + k] ...] holds its
  // grouped symbols in gap_intervals' order. The rare binary decisions of a partial block are
  // made from GapModel when coded.
  std::vector<int64_t> gap_ptr;
  std::vector<EncSymbol> gap_sym;
  std::vector<EncSymbol> val_sym;  // parallel to CodecTables::sym
  // q -> index into the feature's value table, dense over [q_lo[f], q_lo[f] + span) where the
  // values are dense enough (qmap_ptr[f] < 0: binary search instead); -1 marks absent values.
  std::vector<int64_t> qmap_ptr;
  std::vector<int32_t> q_lo, qmap;
  std::vector<int64_t> q_span;

  EncoderView view() const {
    return {gap_ptr.data(), gap_sym.data(), val_sym.data(), qmap_ptr.data(), q_lo.data(), qmap.data(),
            q_span.data()};
  }
};

EncoderTables build_encoder_tables(const CodecTables& t);

// The decoder's lookups. Values: feature f's slot s (out of 2^28) lies in symbol
// lut[lut_ptr[f] + (s >> lut_shift[f])] or in one of the few after it, up to the entry of the
// next bucket; so a value costs one load and rarely a short search, not a binary search.
// Gaps: each grouped symbol set (see GapGroups) as kGroupStride starts, padded with 2^28, so
// the symbol holding a slot is a count of 16 comparisons.
constexpr int kGroupStride = 18;
struct GroupLookup {
  const uint32_t* b;  // b[i]: start of symbol i, 2^28 past the last; b[0] = 0
  // Index of the symbol holding slot (slot < 2^28)
  MDLSAE_CODEC_HD uint32_t index(uint32_t slot) const {
#if defined(__SSE2__) && !defined(__CUDACC__)  // same count, SSE2 on the CPU build
    // starts and slots are below 2^31: signed compares; each lane counts -1 per start > slot
    const __m128i v = _mm_set1_epi32(int32_t(slot));
    const auto above = [&](int i) { return _mm_cmpgt_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i)), v); };
    __m128i acc = _mm_add_epi32(_mm_add_epi32(above(1), above(5)), _mm_add_epi32(above(9), above(13)));
    acc = _mm_add_epi32(acc, _mm_shuffle_epi32(acc, 0x4E));
    acc = _mm_add_epi32(acc, _mm_shuffle_epi32(acc, 0xB1));
    return uint32_t(16 + _mm_cvtsi128_si32(acc));
#else
    uint32_t c = 0;
    for (int i = 1; i <= 16; ++i) c += b[i] <= slot;
    return c;
#endif
  }
};

struct DecoderTables {
  std::vector<int64_t> lut_ptr;
  std::vector<int32_t> lut;
  std::vector<uint8_t> lut_shift;
  // Sequence kind k of feature f: groups at gap_ptr[2f + k], kGroupStride entries each, head first.
  std::vector<int64_t> gap_ptr;
  std::vector<uint32_t> gap_bounds;

  DecoderView view() const { return {lut_ptr.data(), lut.data(), lut_shift.data(), gap_ptr.data(), gap_bounds.data()}; }
};

DecoderTables build_decoder_tables(const CodecTables& t);

// Counts as stored in a file (see pack_counts): n_active[f], on[f] (rows where f and its parent
// are both active; ignored for roots), m_main[f], m_off[f], and the CSR value histogram.
struct Counts {
  uint64_t n_rows = 0;
  bool exclusive = false;  // CodecTables::exclusive (stored in the file's header, not in these bytes)
  std::vector<int32_t> parent;
  std::vector<int64_t> active, on;
  std::vector<int32_t> m_main, m_off;
  std::vector<int64_t> hist_ptr;
  std::vector<int32_t> hist_q;
  std::vector<int64_t> hist_count;
};

// Validates the counts (consistency, ranges, a forest) and derives the tables.
CodecTables build_tables(const Counts& c);

std::vector<uint8_t> pack_counts(const Counts& c);

// The fewest bytes a feature takes in pack_counts' output: the varints of its active count,
// parent and gap parameter and its number of distinct values.
constexpr size_t kMinFeatureBytes = 4;
// Inverse of pack_counts; throws std::runtime_error on truncated or inconsistent bytes.
Counts unpack_counts(const uint8_t* data, size_t size, int64_t d_sae, uint64_t n_rows, bool has_parents);

}  // namespace mdlsae::codec
