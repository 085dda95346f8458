// The entropy models of a .mdl file, built deterministically from integer counts stored in its
// header (DESIGN §3): per-feature geometric gap models for activity (flat, or over the
// parent's active and inactive rows) and static categorical models for the quantized values.
// Also the compact varint serialisation of those counts.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace mdlsae::codec {

constexpr int kMaxGapBits = 31;

// Activity model of one feature over a sequence of rows where it fires with probability
// p = n / total: gap g = q * 2^m + r, q unary with P(continue) = rho^(2^m), the m bits of r
// independent with P(bit j = 1) = rho^(2^j) / (1 + rho^(2^j)), rho = 1 - p.
struct GapModel {
  bool used = false;  // n > 0; otherwise nothing is coded for this sequence
  int32_t m = 0;
  uint32_t cont = 0;  // freq of "continue" out of 2^28
  uint32_t bit1[kMaxGapBits] = {};
};

GapModel make_gap_model(uint64_t n, uint64_t total, int32_t m);
// The m making rho^(2^m) closest to 1/2 (only speed depends on it; it is stored in the file).
int32_t choose_gap_m(uint64_t n, uint64_t total);

// Everything the chunk coder needs, for d_sae features.
struct CodecTables {
  int64_t d_sae = 0;
  uint64_t n_rows = 0;
  std::vector<int32_t> parent;  // -1 for roots
  std::vector<int32_t> order;   // coding order: roots first, then by depth (stable by index)
  std::vector<GapModel> main;   // roots: over all rows; children: over the parent's active rows
  std::vector<GapModel> off;    // children: over the parent's inactive rows
  // Value model of feature f: symbols sym[vptr[f]..vptr[f+1]) (increasing q), their interval
  // [start, start + freq) out of 2^28.
  std::vector<int64_t> vptr;
  std::vector<int32_t> sym;
  std::vector<uint32_t> start, freq;
};

// Counts as stored in a file (see pack_counts): n_active[f], on[f] (rows where f and its parent
// are both active; ignored for roots), m_main[f], m_off[f], and the CSR value histogram.
struct Counts {
  uint64_t n_rows = 0;
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
// Inverse of pack_counts; throws std::runtime_error on truncated or inconsistent bytes.
Counts unpack_counts(const uint8_t* data, size_t size, int64_t d_sae, uint64_t n_rows, bool has_parents);

}  // namespace mdlsae::codec
