// Deterministic entropy-model construction and the varint serialisation of its counts (see
// tables.h). Probabilities come from integers with IEEE double operations only (one division,
// squarings, one more division, a scaling by 2^28), so every platform derives the same tables.
#include "codec/tables.h"

#include <algorithm>
#include <cmath>

#include "codec/rans.h"
#include "common/check.h"
#include "common/quantize.h"

namespace mdlsae::codec {
namespace {

uint32_t prob_to_freq(double p) {
  const double f = std::floor(p * double(kProbScale));
  return uint32_t(std::min(std::max(f, 1.0), double(kProbScale - 1)));
}

void put_varint(std::vector<uint8_t>& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(uint8_t(v | 0x80));
    v >>= 7;
  }
  out.push_back(uint8_t(v));
}

struct Reader {
  const uint8_t* p;
  const uint8_t* end;
  uint64_t varint(const char* what) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      MDLSAE_CHECK_DATA(p < end, "model tables end inside ", what);
      const uint8_t b = *p++;
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    MDLSAE_CHECK_DATA(false, "over-long varint in ", what);
    return 0;
  }
};

// Categorical frequencies out of 2^28 from counts: floor(c * 2^28 / n), at least 1, the
// rounding remainder given to (or taken from) the largest entries, ties by position.
void quantize_counts(const int64_t* count, int64_t n_sym, uint32_t* freq) {
  uint64_t n = 0;
  for (int64_t i = 0; i < n_sym; ++i) n += uint64_t(count[i]);
  int64_t sum = 0;
  for (int64_t i = 0; i < n_sym; ++i) {
    const unsigned __int128 scaled = (unsigned __int128)uint64_t(count[i]) * kProbScale / n;
    freq[i] = uint32_t(std::max<unsigned __int128>(scaled, 1));
    sum += freq[i];
  }
  std::vector<int64_t> idx(static_cast<size_t>(n_sym));
  for (int64_t i = 0; i < n_sym; ++i) idx[i] = i;
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return freq[a] > freq[b]; });
  int64_t diff = int64_t(kProbScale) - sum;
  if (diff > 0) freq[idx[0]] += uint32_t(diff);
  for (size_t j = 0; diff < 0; j = (j + 1) % idx.size()) {
    const int64_t take = std::min<int64_t>(-diff, int64_t(freq[idx[j]]) - 1);
    freq[idx[j]] -= uint32_t(take);
    diff += take;
  }
}

}  // namespace

GapModel make_gap_model(uint64_t n, uint64_t total, int32_t m) {
  GapModel g;
  MDLSAE_CHECK_DATA(n <= total, "feature active in ", n, " of ", total, " rows");
  MDLSAE_CHECK_DATA(m >= 0 && m <= kMaxGapBits, "gap parameter m = ", m, " outside [0, ", kMaxGapBits, "]");
  g.used = n > 0;
  g.m = m;
  if (!g.used) return g;
  const double rho = double(total - n) / double(total);
  double r2 = rho;  // rho^(2^j)
  for (int32_t j = 0; j < m; ++j) {
    g.bit1[j] = prob_to_freq(r2 / (1.0 + r2));
    g.empty[j] = prob_to_freq(r2);
    r2 = r2 * r2;
  }
  g.cont = prob_to_freq(r2);
  return g;
}

namespace {

// Intervals of the 2^k values of offset bits top-1 .. top-k (high first) within [lo, lo + w).
void split_bits(const GapModel& g, int32_t top, int32_t k, uint32_t lo, uint32_t w, uint32_t* start, uint32_t* freq) {
  if (k == 0) {
    *start = lo;
    *freq = w;
    return;
  }
  const uint32_t w1 = w < 2 ? 0 : split_one(w, g.bit1[top - 1]);
  const int32_t half = 1 << (k - 1);
  split_bits(g, top - 1, k - 1, lo, w - w1, start, freq);
  split_bits(g, top - 1, k - 1, lo + (w - w1), w1, start + half, freq + half);
}

}  // namespace

void gap_intervals(const GapModel& g, uint32_t* start, uint32_t* freq) {
  const GapGroups gg = gap_groups(g.m);
  const uint32_t stop = uint32_t(kProbScale) - g.cont;  // as get_bit: continue owns the top
  split_bits(g, g.m, gg.head_bits, 0, stop, start, freq);
  start[gg.head_symbols() - 1] = stop;
  freq[gg.head_symbols() - 1] = g.cont;
  for (int32_t i = 0; i < gg.low_groups; ++i) {
    const int64_t at = gg.head_symbols() + (int64_t(i) << kGroupBits);
    split_bits(g, kGroupBits * (gg.low_groups - i), kGroupBits, 0, uint32_t(kProbScale), start + at, freq + at);
  }
}

int32_t choose_gap_m(uint64_t n, uint64_t total) {
  if (n == 0 || n >= total) return 0;
  const double neg_log_rho = -std::log1p(-double(n) / double(total));
  const double m = std::round(std::log2(std::log(1.0 / kGapContinue) / neg_log_rho));
  return int32_t(std::min<double>(std::max(m, 0.0), kMaxGapBits));
}

CodecTables build_tables(const Counts& c) {
  const int64_t d = int64_t(c.parent.size());
  MDLSAE_CHECK_DATA(d > 0, "no features");
  MDLSAE_CHECK_DATA(int64_t(c.active.size()) == d && int64_t(c.on.size()) == d &&
                        int64_t(c.m_main.size()) == d && int64_t(c.m_off.size()) == d &&
                        int64_t(c.hist_ptr.size()) == d + 1,
                    "model tables have inconsistent lengths for d_sae = ", d);
  MDLSAE_CHECK_DATA(c.hist_ptr[0] == 0 && c.hist_ptr[d] == int64_t(c.hist_q.size()) &&
                        c.hist_q.size() == c.hist_count.size(),
                    "value histogram index is inconsistent");
  CodecTables t;
  t.d_sae = d;
  t.n_rows = c.n_rows;
  t.parent = c.parent;
  // Depth of every feature in O(d): walk up to a feature of known depth, then fill in the path.
  // A parent out of range or a cycle (a damaged file) is refused; neither can hang us.
  std::vector<int32_t> depth(size_t(d), -1), path;
  for (int64_t f = 0; f < d; ++f) {
    int64_t p = f;
    path.clear();
    while (p >= 0 && depth[p] < 0) {
      depth[p] = -2;  // on the current path: meeting it again is a cycle
      path.push_back(int32_t(p));
      p = c.parent[p];
      MDLSAE_CHECK_DATA(p < d && (p < 0 || depth[p] != -2), "parents of feature ", f, " do not form a forest");
    }
    int32_t at = p < 0 ? -1 : depth[p];
    for (auto it = path.rbegin(); it != path.rend(); ++it) depth[*it] = ++at;
  }
  // Exclusive siblings: each child's context is its parent's rows less its earlier siblings' on rows
  std::vector<int64_t> context;
  t.exclusive = c.exclusive;
  if (c.exclusive) {
    t.kid_ptr.assign(size_t(d) + 1, 0);
    for (int64_t f = 0; f < d; ++f)
      if (c.parent[f] >= 0) ++t.kid_ptr[c.parent[f] + 1];
    for (int64_t f = 0; f < d; ++f) t.kid_ptr[f + 1] += t.kid_ptr[f];
    t.kids.resize(size_t(t.kid_ptr[d]));
    t.rank.assign(size_t(d), 0);
    context.assign(size_t(d), 0);
    std::vector<int64_t> at(t.kid_ptr.begin(), t.kid_ptr.end() - 1);
    for (int64_t f = 0; f < d; ++f) {
      const int32_t p = c.parent[f];
      if (p < 0) continue;
      t.rank[f] = int32_t(at[p] - t.kid_ptr[p]);
      t.kids[at[p]++] = int32_t(f);
    }
    for (int64_t p = 0; p < d; ++p) {
      int64_t left = c.active[p];
      for (int64_t i = t.kid_ptr[p]; i < t.kid_ptr[p + 1]; ++i) {
        const int32_t f = t.kids[i];
        context[f] = left;
        MDLSAE_CHECK_DATA(c.on[f] >= 0 && c.on[f] <= left, "feature ", f, ": its co-activity with its parent exceeds the "
                          "parent's rows left by its earlier siblings (siblings are coded as exclusive)");
        left -= c.on[f];
      }
    }
  }

  // Coding order: by depth (a parent before its children), with exclusive siblings then by rank
  // (earlier siblings first, so the device decodes one (depth, rank) level at a time), stable by index.
  t.order.resize(size_t(d));
  for (int64_t f = 0; f < d; ++f) t.order[f] = int32_t(f);
  std::stable_sort(t.order.begin(), t.order.end(), [&](int32_t a, int32_t b) {
    return depth[a] != depth[b] ? depth[a] < depth[b] : c.exclusive && t.rank[a] < t.rank[b];
  });

  t.main.resize(size_t(d));
  // off models exist only for children: a flat model of a wide SAE does not hold d unused ones
  const bool any_child = std::any_of(c.parent.begin(), c.parent.end(), [](int32_t p) { return p >= 0; });
  t.off.resize(any_child ? size_t(d) : 0);
  for (int64_t f = 0; f < d; ++f) {
    const int64_t n = c.active[f];
    MDLSAE_CHECK_DATA(n >= 0 && uint64_t(n) <= c.n_rows, "feature ", f, " active in ", n, " of ", c.n_rows, " rows");
    const int64_t hn = c.hist_ptr[f + 1] - c.hist_ptr[f];
    MDLSAE_CHECK_DATA(hn >= 0 && (hn > 0) == (n > 0), "value histogram of feature ", f, " does not match its count");
    int64_t sum = 0;
    for (int64_t i = c.hist_ptr[f]; i < c.hist_ptr[f + 1]; ++i) {
      MDLSAE_CHECK_DATA(c.hist_q[i] >= 1 && c.hist_q[i] < kMaxQ && c.hist_count[i] > 0 &&
                            (i == c.hist_ptr[f] || c.hist_q[i] > c.hist_q[i - 1]),
                        "value histogram of feature ", f, " is not increasing positive values with positive counts");
      sum += c.hist_count[i];
    }
    MDLSAE_CHECK_DATA(sum == n, "value counts of feature ", f, " sum to ", sum, ", not ", n);
    const int32_t p = c.parent[f];
    if (p < 0) {
      t.main[f] = make_gap_model(uint64_t(n), c.n_rows, c.m_main[f]);
    } else {
      const int64_t np = c.active[p], on = c.on[f];
      MDLSAE_CHECK_DATA(on >= 0 && on <= n && on <= np && n - on <= int64_t(c.n_rows) - np,
                        "feature ", f, ": co-activity with its parent is inconsistent");
      t.main[f] = make_gap_model(uint64_t(on), uint64_t(c.exclusive ? context[f] : np), c.m_main[f]);
      t.off[f] = make_gap_model(uint64_t(n - on), c.n_rows - uint64_t(np), c.m_off[f]);
    }
  }
  t.vptr = c.hist_ptr;
  t.sym = c.hist_q;
  t.freq.resize(c.hist_q.size());
  t.start.resize(c.hist_q.size());
  for (int64_t f = 0; f < d; ++f) {
    const int64_t b = c.hist_ptr[f], e = c.hist_ptr[f + 1];
    if (b == e) continue;
    quantize_counts(c.hist_count.data() + b, e - b, t.freq.data() + b);
    uint32_t s = 0;
    for (int64_t i = b; i < e; ++i) {
      t.start[i] = s;
      s += t.freq[i];
    }
  }
  return t;
}

namespace {

// Sequence kind s % 2 (main, off) of feature s / 2.
const GapModel& sequence_model(const CodecTables& t, int64_t s) {
  static const GapModel unused;
  return s % 2 ? (t.off.empty() ? unused : t.off[s / 2]) : t.main[s / 2];
}

}  // namespace

EncoderTables build_encoder_tables(const CodecTables& t) {
  const int64_t d = t.d_sae;
  EncoderTables e;
  e.gap_ptr.assign(size_t(2 * d) + 1, 0);
  for (int64_t s = 0; s < 2 * d; ++s) {
    const GapModel& g = sequence_model(t, s);
    e.gap_ptr[s + 1] = e.gap_ptr[s] + (g.used ? gap_groups(g.m).symbols() : 0);
  }
  e.gap_sym.resize(size_t(e.gap_ptr[2 * d]));
  std::vector<uint32_t> start, freq;
  for (int64_t s = 0; s < 2 * d; ++s) {
    const GapModel& g = sequence_model(t, s);
    if (!g.used) continue;
    const int32_t n = gap_groups(g.m).symbols();
    start.resize(size_t(n));
    freq.resize(size_t(n));
    gap_intervals(g, start.data(), freq.data());
    for (int32_t i = 0; i < n; ++i) {
      // only a hand-made model has empty intervals; the encoder's own never do (choose_gap_m)
      MDLSAE_CHECK_ARG(freq[i] > 0, "gap model of feature ", s / 2, " (m = ", g.m, ") is degenerate; cannot encode");
      e.gap_sym[e.gap_ptr[s] + i] = make_enc_symbol(start[i], freq[i]);
    }
  }
  e.val_sym.resize(t.sym.size());
  for (size_t i = 0; i < t.sym.size(); ++i) e.val_sym[i] = make_enc_symbol(t.start[i], t.freq[i]);
  e.qmap_ptr.assign(size_t(d), -1);
  e.q_lo.assign(size_t(d), 0);
  e.q_span.assign(size_t(d), 0);
  for (int64_t f = 0; f < d; ++f) {
    const int64_t b = t.vptr[f], n = t.vptr[f + 1] - b;
    if (n == 0) continue;
    const int64_t lo = t.sym[b], span = int64_t(t.sym[b + n - 1]) - lo + 1;
    if (span > 4 * n + 64) continue;  // sparse values: binary search
    e.qmap_ptr[f] = int64_t(e.qmap.size());
    e.q_lo[f] = int32_t(lo);
    e.q_span[f] = span;
    e.qmap.resize(e.qmap.size() + size_t(span), -1);
    for (int64_t i = 0; i < n; ++i) e.qmap[e.qmap_ptr[f] + t.sym[b + i] - lo] = int32_t(i);
  }
  return e;
}

DecoderTables build_decoder_tables(const CodecTables& t) {
  const int64_t d = t.d_sae;
  DecoderTables dt;
  dt.lut_ptr.assign(size_t(d), 0);
  dt.lut_shift.assign(size_t(d), kProbBits);
  for (int64_t f = 0; f < d; ++f) {
    const int64_t b = t.vptr[f], n = t.vptr[f + 1] - b;
    int bits = 0;  // about four buckets per symbol, at most 2^12
    while (bits < 12 && (int64_t(1) << bits) < 4 * n) ++bits;
    dt.lut_ptr[f] = int64_t(dt.lut.size());
    dt.lut_shift[f] = uint8_t(kProbBits - bits);
    int64_t i = 0;
    for (int64_t k = 0; k < (int64_t(1) << bits); ++k) {  // the symbol holding the bucket's first slot
      const uint64_t lo = uint64_t(k) << (kProbBits - bits);
      while (i + 1 < n && t.start[b + i + 1] <= lo) ++i;
      dt.lut.push_back(int32_t(i));
    }
    dt.lut.push_back(int32_t(std::max<int64_t>(n - 1, 0)));  // bound of the last bucket
  }
  dt.gap_ptr.assign(size_t(2 * d) + 1, 0);
  for (int64_t s = 0; s < 2 * d; ++s) {
    const GapModel& g = sequence_model(t, s);
    dt.gap_ptr[s + 1] = dt.gap_ptr[s] + (g.used ? int64_t(1 + gap_groups(g.m).low_groups) * kGroupStride : 0);
  }
  dt.gap_bounds.assign(size_t(dt.gap_ptr[2 * d]), uint32_t(kProbScale));
  std::vector<uint32_t> start, freq;
  for (int64_t s = 0; s < 2 * d; ++s) {
    const GapModel& g = sequence_model(t, s);
    if (!g.used) continue;
    const GapGroups gg = gap_groups(g.m);
    start.resize(size_t(gg.symbols()));
    freq.resize(size_t(gg.symbols()));
    gap_intervals(g, start.data(), freq.data());
    uint32_t* b = dt.gap_bounds.data() + dt.gap_ptr[s];
    std::copy(start.begin(), start.begin() + gg.head_symbols(), b);
    for (int32_t i = 0; i < gg.low_groups; ++i)
      std::copy_n(start.begin() + gg.head_symbols() + (i << kGroupBits), 1 << kGroupBits, b + (i + 1) * kGroupStride);
  }
  return dt;
}

std::vector<uint8_t> pack_counts(const Counts& c) {
  std::vector<uint8_t> out;
  const int64_t d = int64_t(c.active.size());
  for (int64_t f = 0; f < d; ++f) {
    put_varint(out, uint64_t(c.active[f]));
    put_varint(out, uint64_t(c.parent[f] + 1));
    put_varint(out, uint64_t(c.m_main[f]));
    if (c.parent[f] >= 0) {
      put_varint(out, uint64_t(c.on[f]));
      put_varint(out, uint64_t(c.m_off[f]));
    }
    put_varint(out, uint64_t(c.hist_ptr[f + 1] - c.hist_ptr[f]));
    int32_t prev = 0;
    for (int64_t i = c.hist_ptr[f]; i < c.hist_ptr[f + 1]; ++i) {
      put_varint(out, uint64_t(c.hist_q[i] - prev));
      put_varint(out, uint64_t(c.hist_count[i]));
      prev = c.hist_q[i];
    }
  }
  return out;
}

Counts unpack_counts(const uint8_t* data, size_t size, int64_t d_sae, uint64_t n_rows, bool has_parents) {
  MDLSAE_CHECK_DATA(d_sae > 0 && d_sae < (int64_t(1) << 31), "d_sae = ", d_sae);
  // Every feature takes at least kMinFeatureBytes: a short blob cannot make us allocate for a huge d_sae.
  MDLSAE_CHECK_DATA(uint64_t(d_sae) <= size / kMinFeatureBytes, "model tables of ", size, " bytes cannot hold ", d_sae,
                    " features");
  Counts c;
  c.n_rows = n_rows;
  c.parent.assign(size_t(d_sae), -1);
  c.active.assign(size_t(d_sae), 0);
  c.on.assign(size_t(d_sae), 0);
  c.m_main.assign(size_t(d_sae), 0);
  c.m_off.assign(size_t(d_sae), 0);
  c.hist_ptr.assign(size_t(d_sae) + 1, 0);
  Reader r{data, data + size};
  for (int64_t f = 0; f < d_sae; ++f) {
    c.active[f] = int64_t(r.varint("active counts"));
    MDLSAE_CHECK_DATA(uint64_t(c.active[f]) <= n_rows, "feature ", f, " active in more rows than the file has");
    const uint64_t p1 = r.varint("parents");
    MDLSAE_CHECK_DATA(p1 <= uint64_t(d_sae) && (has_parents || p1 == 0), "feature ", f, " has parent field ", p1);
    c.parent[f] = int32_t(p1) - 1;
    c.m_main[f] = int32_t(std::min<uint64_t>(r.varint("gap parameters"), kMaxGapBits + 1));
    if (c.parent[f] >= 0) {
      c.on[f] = int64_t(std::min<uint64_t>(r.varint("co-activity counts"), n_rows));
      c.m_off[f] = int32_t(std::min<uint64_t>(r.varint("gap parameters"), kMaxGapBits + 1));
    }
    const uint64_t nv = r.varint("value histograms");
    MDLSAE_CHECK_DATA(nv <= uint64_t(c.active[f]) && nv <= uint64_t(r.end - r.p),
                      "feature ", f, " lists ", nv, " distinct values");
    int64_t q = 0;
    for (uint64_t i = 0; i < nv; ++i) {
      q += int64_t(std::min<uint64_t>(r.varint("value histograms"), uint64_t(kMaxQ)));
      MDLSAE_CHECK_DATA(q < kMaxQ, "value ", q, " of feature ", f, " exceeds the quantization limit");
      c.hist_q.push_back(int32_t(q));
      c.hist_count.push_back(int64_t(std::min<uint64_t>(r.varint("value histograms"), n_rows)));
    }
    c.hist_ptr[f + 1] = int64_t(c.hist_q.size());
  }
  MDLSAE_CHECK_DATA(r.p == r.end, "model tables have ", r.end - r.p, " unexpected trailing bytes");
  return c;
}

}  // namespace mdlsae::codec
