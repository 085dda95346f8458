// Feature-major coding of a chunk of rows (DESIGN §3): for each feature in coding order, its
// active rows as geometric gaps (children over their parent's active, then inactive, rows),
// then its quantized values. Features are split into streams of `features_per_stream`
// (0 = one stream per chunk), each an independent rANS stream; chunks are independent, so
// encode and decode run in parallel over chunks.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "codec/tables.h"

namespace mdlsae::codec {

// Row-major sparse codes (the layout of cpu/select_quantize.h's SparseCodes).
struct CodesView {
  int64_t rows;
  const int64_t* row_ptr;  // host, [rows + 1]
  const int32_t* index;    // host, [row_ptr[rows]]
  const int32_t* q;        // host, [row_ptr[rows]]
};

struct CodesOut {
  std::vector<int64_t> row_ptr;
  std::vector<int32_t> index;
  std::vector<int32_t> q;
};

std::vector<uint8_t> encode_chunk(const CodecTables& t, const CodesView& codes, int32_t features_per_stream);

// Throws std::runtime_error naming the problem when the bytes are not a valid chunk for these
// tables (damaged or foreign data); never reads outside [data, data + size).
CodesOut decode_chunk(const CodecTables& t, int64_t rows, const uint8_t* data, size_t size,
                      int32_t features_per_stream);

// Splits `codes` into chunks of chunk_rows rows and encodes them in parallel.
std::vector<std::vector<uint8_t>> encode_chunks(const CodecTables& t, const CodesView& codes,
                                                int64_t chunk_rows, int32_t features_per_stream);

struct ChunkRef {
  const uint8_t* data;
  size_t size;
  int64_t rows;
};
// Decodes chunks in parallel and concatenates their rows.
CodesOut decode_chunks(const CodecTables& t, const std::vector<ChunkRef>& chunks, int32_t features_per_stream);

}  // namespace mdlsae::codec
