// libFuzzer target: the model tables of a .mdl header. unpack_counts, build_tables and the
// encoder's and decoder's tables must accept or throw std::runtime_error / std::invalid_argument,
// never crash; what unpacks must pack back to counts that unpack the same.
#include <cstdlib>
#include <stdexcept>

#include "fuzz/fuzz_input.h"

using namespace mdlsae;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in{data, data + size};
  fuzz::ModelPrefix m;
  if (!fuzz::read_model_prefix(in, m)) return 0;
  codec::Counts c;
  try {
    c = codec::unpack_counts(m.blob, m.blob_len, int64_t(m.d_sae), m.n_rows, m.has_parents & 1);
    c.exclusive = m.has_parents & 2;
    const codec::CodecTables t = codec::build_tables(c);
    codec::build_encoder_tables(t);
    codec::build_decoder_tables(t);
  } catch (const std::runtime_error&) {
    return 0;
  } catch (const std::invalid_argument&) {
    return 0;
  }
  const auto packed = codec::pack_counts(c);
  const codec::Counts back = codec::unpack_counts(packed.data(), packed.size(), int64_t(m.d_sae), m.n_rows, true);
  if (back.active != c.active || back.parent != c.parent || back.on != c.on || back.m_main != c.m_main ||
      back.m_off != c.m_off || back.hist_ptr != c.hist_ptr || back.hist_q != c.hist_q ||
      back.hist_count != c.hist_count)
    std::abort();  // the serialisation is not a round trip
  return 0;
}
