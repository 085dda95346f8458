// The byte layout shared by the fuzz targets and the seed writer (tools/fuzz_seeds.py): a
// little-endian reader over the fuzzer's input that never reads past its end, and the model
// prefix both targets start with. The harness caps sizes to keep executions fast; the library's
// own checks are what is being fuzzed.
#pragma once
#include <cstdint>
#include <cstring>

#include "codec/tables.h"
#include "cpu/parallel.h"

namespace mdlsae::fuzz {

struct Input {
  const uint8_t* p;
  const uint8_t* end;
  template <typename T>
  bool get(T& v) {
    if (size_t(end - p) < sizeof(T)) return false;
    std::memcpy(&v, p, sizeof(T));
    p += sizeof(T);
    return true;
  }
  bool take(size_t n, const uint8_t*& at) {
    if (size_t(end - p) < n) return false;
    at = p;
    p += n;
    return true;
  }
};

// Model prefix: u32 d_sae | u64 n_rows | u8 has_parents (bit 0; bit 1: exclusive siblings) | u32 blob_len | blob (pack_counts).
struct ModelPrefix {
  uint32_t d_sae = 0;
  uint64_t n_rows = 0;
  uint8_t has_parents = 0;
  const uint8_t* blob = nullptr;
  uint32_t blob_len = 0;
};

inline bool read_model_prefix(Input& in, ModelPrefix& m) {
  return in.get(m.d_sae) && in.get(m.n_rows) && in.get(m.has_parents) && in.get(m.blob_len) &&
         m.d_sae <= 4096 && m.n_rows <= (uint64_t(1) << 20) && in.take(m.blob_len, m.blob);
}

}  // namespace mdlsae::fuzz

// One coder thread per execution: libFuzzer's -jobs are the parallelism, and a sanitizer report
// names one thread. (Each target is one translation unit including this header once.)
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mdlsae::set_num_threads(1);
  return 0;
}
