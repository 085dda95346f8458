// Binding of the device coder's driver (codec/flat_codec.h), shared by _C (its host build) and
// _C_cuda (its kernels), so both take the same arguments from Python: a dict of the flat tables'
// and codes' addresses (torch tensors' data_ptr(), on the CPU or the device) and sizes, and the
// step buffers' addresses. Python runs the same steps and scans either way (mdlsae.codec.streams).
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>

#include "codec/flat_codec.h"

namespace mdlsae::bind {

namespace py = pybind11;

template <typename T>
T* address_of(const py::dict& d, const char* key) {
  return reinterpret_cast<T*>(d[key].cast<uintptr_t>());
}

inline codec::FlatEncodeArgs flat_encode_args(const py::dict& d) {
  codec::FlatEncodeArgs a;
  a.t = {d["d_sae"].cast<int64_t>(),           address_of<const int32_t>(d, "parent"),
         address_of<const int32_t>(d, "order"), address_of<const codec::GapModel>(d, "main"),
         address_of<const codec::GapModel>(d, "off"), address_of<const int64_t>(d, "vptr"),
         address_of<const int32_t>(d, "sym"),   address_of<const uint32_t>(d, "start"),
         address_of<const uint32_t>(d, "freq")};
  a.e = {address_of<const int64_t>(d, "gap_ptr"),  address_of<const codec::EncSymbol>(d, "gap_sym"),
         address_of<const codec::EncSymbol>(d, "val_sym"), address_of<const int64_t>(d, "qmap_ptr"),
         address_of<const int32_t>(d, "q_lo"),     address_of<const int32_t>(d, "qmap"),
         address_of<const int64_t>(d, "q_span")};
  a.n_chunks = d["n_chunks"].cast<int64_t>();
  a.chunk_rows = d["chunk_rows"].cast<int64_t>();
  a.total_rows = d["total_rows"].cast<int64_t>();
  a.n_streams = d["n_streams"].cast<int32_t>();
  a.per = d["per"].cast<int64_t>();
  a.col_ptr = address_of<const int64_t>(d, "col_ptr");
  a.col_row = address_of<const int32_t>(d, "col_row");
  a.col_q = address_of<const int32_t>(d, "col_q");
  a.on = address_of<int32_t>(d, "scratch_on");
  a.off = address_of<int32_t>(d, "scratch_off");
  return a;
}

// Defines stream_bounds, encode_streams and write_streams on m; each Fn takes the buffers of
// its step then the stream handle (which the host build ignores).
template <class Bounds, class Encode, class Write>
void def_flat_coder(py::module_& m, Bounds bounds, Encode encode, Write write) {
  using A = uintptr_t;
  m.def(
      "stream_bounds",
      [bounds](const py::dict& args, A bound, A stream) {
        const auto a = flat_encode_args(args);
        py::gil_scoped_release nogil;
        bounds(a, reinterpret_cast<int64_t*>(bound), stream);
      },
      py::arg("args"), py::arg("bound"), py::arg("stream") = 0);
  m.def(
      "encode_streams",
      [encode](const py::dict& args, A word_off, A words, A states, A n_words, A status, A stream) {
        const auto a = flat_encode_args(args);
        py::gil_scoped_release nogil;
        encode(a, reinterpret_cast<const int64_t*>(word_off), reinterpret_cast<uint32_t*>(words),
               reinterpret_cast<uint32_t*>(states), reinterpret_cast<int64_t*>(n_words),
               reinterpret_cast<codec::StreamStatus*>(status), stream);
      },
      py::arg("args"), py::arg("word_off"), py::arg("words"), py::arg("states"), py::arg("n_words"),
      py::arg("status"), py::arg("stream") = 0);
  m.def(
      "write_streams",
      [write](const py::dict& args, A word_off, A words, A states, A n_words, A byte_off, A out, A stream) {
        const auto a = flat_encode_args(args);
        py::gil_scoped_release nogil;
        write(a, reinterpret_cast<const int64_t*>(word_off), reinterpret_cast<const uint32_t*>(words),
              reinterpret_cast<const uint32_t*>(states), reinterpret_cast<const int64_t*>(n_words),
              reinterpret_cast<const int64_t*>(byte_off), reinterpret_cast<uint8_t*>(out), stream);
      },
      py::arg("args"), py::arg("word_off"), py::arg("words"), py::arg("states"), py::arg("n_words"),
      py::arg("byte_off"), py::arg("out"), py::arg("stream") = 0);
}

}  // namespace mdlsae::bind
