// libFuzzer target: chunk payloads under a model (the model prefix of fuzz_input.h, then
// u8 features_per_stream | u8 n_chunks | per chunk u32 rows, u32 nbytes, bytes). decode_chunks must
// return codes or throw, never crash, hang or read outside a chunk; codes it returns must
// re-encode and decode back to themselves.
#include <cstdlib>
#include <stdexcept>
#include <vector>

#include "codec/chunk_codec.h"
#include "fuzz/fuzz_input.h"

using namespace mdlsae;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in{data, data + size};
  fuzz::ModelPrefix m;
  uint8_t fps = 0, n_chunks = 0;
  if (!fuzz::read_model_prefix(in, m) || !in.get(fps) || !in.get(n_chunks)) return 0;
  std::vector<codec::ChunkRef> chunks;
  for (int i = 0; i < n_chunks; ++i) {
    uint32_t rows = 0, nbytes = 0;
    const uint8_t* at = nullptr;
    if (!in.get(rows) || !in.get(nbytes) || rows > 4096 || !in.take(nbytes, at)) return 0;
    chunks.push_back({at, nbytes, int64_t(rows)});
  }
  codec::CodecTables t;
  codec::DecoderTables dt;
  try {
    codec::Counts c = codec::unpack_counts(m.blob, m.blob_len, int64_t(m.d_sae), m.n_rows, m.has_parents & 1);
    c.exclusive = m.has_parents & 2;
    t = codec::build_tables(c);
    dt = codec::build_decoder_tables(t);
  } catch (const std::exception&) {
    return 0;  // fuzz_model covers the tables
  }
  codec::CodesOut out;
  try {
    out = codec::decode_chunks(t, dt, chunks, fps);
  } catch (const std::runtime_error&) {
    return 0;
  }
  // Decoded codes are valid codes for this model: they must survive a round trip.
  int64_t rows = 0;
  for (const auto& c : chunks) rows += c.rows;
  if (rows == 0) return 0;
  const codec::CodesView v{rows, out.row_ptr.data(), out.index.data(), out.q.data()};
  codec::EncoderTables et;
  try {
    et = codec::build_encoder_tables(t);
  } catch (const std::invalid_argument&) {
    return 0;  // a degenerate model (an empty interval) that only a crafted file has: nothing to re-encode with
  }
  std::vector<std::vector<uint8_t>> again;
  try {
    again = codec::encode_chunks(t, et, v, rows, fps);
  } catch (const std::exception&) {
    std::abort();  // decoded codes the encoder refuses
  }
  const codec::CodesOut back = codec::decode_chunks(t, dt, {{again[0].data(), again[0].size(), rows}}, fps);
  const int64_t nnz = out.row_ptr.data()[rows];
  for (int64_t r = 0; r <= rows; ++r)
    if (back.row_ptr.data()[r] != out.row_ptr.data()[r]) std::abort();
  for (int64_t i = 0; i < nnz; ++i)
    if (back.index.data()[i] != out.index.data()[i] || back.q.data()[i] != out.q.data()[i]) std::abort();
  return 0;
}
