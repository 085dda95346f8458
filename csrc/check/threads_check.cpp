// A standalone driver of the threaded native kernels for ThreadSanitizer (tools/sanitize.sh): the
// fused select/quantize kernel and the chunk coder, each run with 1 and 4 worker threads on the
// same random input. Beyond a clean TSan report it checks what threading must never change: the
// codes, the histogram and the coded bytes are the same for every thread count, and decoding
// gives the codes back. Exits non-zero on any difference.
#include <cstdio>
#include <random>
#include <vector>

#include "codec/chunk_codec.h"
#include "cpu/parallel.h"
#include "cpu/select_quantize.h"

using namespace mdlsae;

namespace {

struct Run {
  SparseCodes codes;
  HistogramCSR hist;
  std::vector<int64_t> active;
  std::vector<std::vector<uint8_t>> chunks;
};

Run run(const std::vector<float>& pre, int64_t rows, int64_t d, const std::vector<int32_t>* parent, int threads) {
  set_num_threads(threads);
  Run r;
  Histogram hist(d);
  Selection sel{16, nullptr, nullptr, parent ? parent->data() : nullptr};
  r.codes = select_quantize(pre.data(), DType::F32, rows, d, d, sel, Steps{0.05f, nullptr}, &hist);
  r.hist = hist.to_csr();
  r.active = hist.active_counts();
  codec::Counts c;
  c.n_rows = uint64_t(rows);
  c.parent.assign(size_t(d), -1);
  c.active = r.active;
  c.on.assign(size_t(d), 0);
  c.m_off.assign(size_t(d), 0);
  for (int64_t f = 0; f < d; ++f) c.m_main.push_back(codec::choose_gap_m(uint64_t(c.active[f]), uint64_t(rows)));
  c.hist_ptr = r.hist.ptr;
  c.hist_q = r.hist.q;
  c.hist_count = r.hist.count;
  const codec::CodecTables t = codec::build_tables(c);
  const codec::CodesView v{rows, r.codes.row_ptr.data(), r.codes.index.data(), r.codes.q.data()};
  r.chunks = codec::encode_chunks(t, codec::build_encoder_tables(t), v, 512, 64);
  std::vector<codec::ChunkRef> refs;
  for (size_t i = 0; i < r.chunks.size(); ++i)
    refs.push_back({r.chunks[i].data(), r.chunks[i].size(), std::min<int64_t>(512, rows - int64_t(i) * 512)});
  const codec::CodesOut back = codec::decode_chunks(t, codec::build_decoder_tables(t), refs, 64);
  const std::vector<int64_t> ptr(back.row_ptr.begin(), back.row_ptr.end());
  const std::vector<int32_t> idx(back.index.begin(), back.index.end()), q(back.q.begin(), back.q.end());
  if (ptr != r.codes.row_ptr || idx != r.codes.index || q != r.codes.q) {
    std::fprintf(stderr, "threads=%d: decoded codes differ from the encoded ones\n", threads);
    std::exit(1);
  }
  return r;
}

}  // namespace

int main() {
  const int64_t rows = 6000, d = 1024;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> pre(size_t(rows * d));
  for (auto& v : pre) v = normal(rng);
  std::vector<int32_t> parent(size_t(d), -1);
  for (int64_t f = 256; f < d; ++f) parent[f] = int32_t(f % 256);  // a strict tree selection
  int failures = 0;
  const std::vector<int32_t>* no_forest = nullptr;
  for (const std::vector<int32_t>* par : {no_forest, static_cast<const std::vector<int32_t>*>(&parent)}) {
    const Run a = run(pre, rows, d, par, 1), b = run(pre, rows, d, par, 4);
    const bool same = a.codes.row_ptr == b.codes.row_ptr && a.codes.index == b.codes.index &&
                      a.codes.q == b.codes.q && a.hist.ptr == b.hist.ptr && a.hist.q == b.hist.q &&
                      a.hist.count == b.hist.count && a.chunks == b.chunks;
    std::printf("%s selection: %zu non-zeros, %zu chunks, 1 vs 4 threads %s\n", par ? "tree" : "topk",
                a.codes.index.size(), a.chunks.size(), same ? "identical" : "DIFFER");
    failures += !same;
  }
  return failures ? 1 : 0;
}
