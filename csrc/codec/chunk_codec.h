// Feature-major coding of a chunk of rows (DESIGN §3): for each feature in coding order, its
// active rows as geometric gaps (children over their parent's active, then inactive, rows),
// then its quantized values. Features are split into streams of `features_per_stream`
// (0 = one stream per chunk), each an independent rANS stream; chunks are independent, so
// encode and decode run in parallel over chunks.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "codec/stream_codec.h"
#include "codec/tables.h"
#include "common/check.h"
#include "common/buffer.h"

namespace mdlsae::codec {

// The most rows a chunk may hold: the decoder sizes its work buffers by a chunk's declared
// rows, and a file's few bytes must not be able to ask for gigabytes.
constexpr int64_t kMaxChunkRows = int64_t(1) << 22;

// Row-major sparse codes (the layout of cpu/select_quantize.h's SparseCodes).
struct CodesView {
  int64_t rows;
  const int64_t* row_ptr;  // host, [rows + 1]
  const int32_t* index;    // host, [row_ptr[rows]]
  const int32_t* q;        // host, [row_ptr[rows]]
};

struct CodesOut {
  Buffer<int64_t> row_ptr;
  Buffer<int32_t> index;
  Buffer<int32_t> q;
};

// Splits `codes` into chunks of chunk_rows rows and encodes them in parallel (et: the encoder's
// form of t, see build_encoder_tables).
std::vector<std::vector<uint8_t>> encode_chunks(const CodecTables& t, const EncoderTables& et, const CodesView& codes,
                                                int64_t chunk_rows, int32_t features_per_stream);

// Throws naming why a stream could not be encoded (std::invalid_argument) or decoded
// (std::runtime_error, decode_chunks' messages); see StreamStatus.
inline void check_stream(const StreamStatus& st) {
  MDLSAE_CHECK_ARG(st.error != StreamStatus::kActiveButNever, "feature ", st.feature,
                   " is active in this chunk but its model says never");
  MDLSAE_CHECK_ARG(st.error != StreamStatus::kValueNotInTable, "value ", st.value, " of feature ", st.feature,
                   " is not in its value table");
  MDLSAE_CHECK_ARG(st.error != StreamStatus::kSiblingsOverlap, "feature ", st.feature,
                   " is active in a row of its parent that an earlier sibling holds, but the model codes siblings "
                   "as exclusive (a strict tree SAE's codes never do that)");
  MDLSAE_CHECK_DATA(st.error != StreamStatus::kBadFraming, "stream ", st.feature, " of a chunk overruns the chunk");
  MDLSAE_CHECK_DATA(st.error != StreamStatus::kDamagedValues, "chunk payload is damaged (values of feature ",
                    st.feature, ")");
  MDLSAE_CHECK_DATA(st.error != StreamStatus::kUncleanEnd, "chunk payload is damaged (stream ", st.feature,
                    " does not end cleanly)");
}

struct ChunkRef {
  const uint8_t* data;
  size_t size;
  int64_t rows;
};
// Decodes chunks in parallel and concatenates their rows (dt: see build_decoder_tables). Throws std::runtime_error naming the
// problem when the bytes are not valid chunks for these tables (damaged or foreign data); never
// reads outside a chunk's [data, data + size).
CodesOut decode_chunks(const CodecTables& t, const DecoderTables& dt, const std::vector<ChunkRef>& chunks,
                       int32_t features_per_stream);

}  // namespace mdlsae::codec
