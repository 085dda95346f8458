// Binding of the device coder's driver (codec/flat_codec.h), shared by _C (its host build) and
// _C_cuda (its kernels), so both take the same arguments from Python: a dict of the flat tables'
// and codes' addresses (torch tensors' data_ptr(), on the CPU or the device) and sizes, and the
// step buffers' addresses. Python runs the same steps and scans either way (mdlsae.codec.streams).
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <type_traits>

#include "codec/flat_codec.h"

namespace mdlsae::bind {

namespace py = pybind11;

template <typename T>
T* address_of(const py::dict& d, const char* key) {
  return reinterpret_cast<T*>(d[key].cast<uintptr_t>());
}

inline void read_layout(const py::dict& d, codec::FlatLayout& a) {
  a.d_sae = d["d_sae"].cast<int64_t>();
  a.n_chunks = d["n_chunks"].cast<int64_t>();
  a.chunk_rows = d["chunk_rows"].cast<int64_t>();
  a.total_rows = d["total_rows"].cast<int64_t>();
  a.n_streams = d["n_streams"].cast<int32_t>();
  a.per = d["per"].cast<int64_t>();
}

// The feature-major columns and the children's scratch, which both directions have (const or
// not as the direction needs).
template <class Args>
void read_columns(const py::dict& d, Args& a) {
  const auto set = [&](auto& field, const char* key) {
    field = reinterpret_cast<std::decay_t<decltype(field)>>(d[key].cast<uintptr_t>());
  };
  set(a.col_ptr, "col_ptr");
  set(a.col_row, "col_row");
  set(a.col_q, "col_q");
  set(a.on, "scratch_on");
  set(a.off, "scratch_off");
}

inline codec::TablesView tables_view(const py::dict& d) {
  codec::TablesView t{d["d_sae"].cast<int64_t>(),           address_of<const int32_t>(d, "parent"),
                      address_of<const int32_t>(d, "order"), address_of<const codec::GapModel>(d, "main"),
                      address_of<const codec::GapModel>(d, "off"), address_of<const int64_t>(d, "vptr"),
                      address_of<const int32_t>(d, "sym"),   address_of<const uint32_t>(d, "start"),
                      address_of<const uint32_t>(d, "freq")};
  if (d["exclusive"].cast<bool>()) {
    t.kid_ptr = address_of<const int64_t>(d, "kid_ptr");
    t.kids = address_of<const int32_t>(d, "kids");
    t.rank = address_of<const int32_t>(d, "rank");
  }
  return t;
}

inline codec::FlatEncodeArgs flat_encode_args(const py::dict& d) {
  codec::FlatEncodeArgs a;
  read_layout(d, a);
  a.t = tables_view(d);
  a.e = {address_of<const int64_t>(d, "gap_ptr"),  address_of<const codec::EncSymbol>(d, "gap_sym"),
         address_of<const codec::EncSymbol>(d, "val_sym"), address_of<const int64_t>(d, "qmap_ptr"),
         address_of<const int32_t>(d, "q_lo"),     address_of<const int32_t>(d, "qmap"),
         address_of<const int64_t>(d, "q_span")};
  read_columns(d, a);
  a.taken = address_of<int32_t>(d, "taken");
  a.held = address_of<int64_t>(d, "held");
  a.place = address_of<int64_t>(d, "place");
  return a;
}

inline codec::FlatDecodeArgs flat_decode_args(const py::dict& d) {
  codec::FlatDecodeArgs a;
  read_layout(d, a);
  a.t = tables_view(d);
  a.dv = {address_of<const int64_t>(d, "lut_ptr"), address_of<const int32_t>(d, "lut"),
          address_of<const uint8_t>(d, "lut_shift"), address_of<const int64_t>(d, "dec_gap_ptr"),
          address_of<const uint32_t>(d, "gap_bounds")};
  a.data = address_of<const uint8_t>(d, "data");
  a.chunk_off = address_of<const int64_t>(d, "chunk_off");
  a.level_start = address_of<const int64_t>(d, "level_start");
  a.count = address_of<int64_t>(d, "count");
  a.held = address_of<int64_t>(d, "held");
  a.taken = address_of<int32_t>(d, "taken");
  read_columns(d, a);
  return a;
}

// Defines the driver's steps on m. Backend has static functions of flat_codec.h's host
// signatures with a trailing stream handle (which the host build ignores).
template <class Backend>
void def_flat_coder(py::module_& m) {
  using A = uintptr_t;
  m.attr("decode_state_bytes") = sizeof(codec::DecodeState);
  m.def(
      "place_siblings",
      [](const py::dict& args, A status, A stream) {
        const auto a = flat_encode_args(args);
        py::gil_scoped_release nogil;
        Backend::place(a, reinterpret_cast<codec::StreamStatus*>(status), stream);
      },
      py::arg("args"), py::arg("status"), py::arg("stream") = 0);
  m.def(
      "stream_bounds",
      [](const py::dict& args, A bound, A stream) {
        const auto a = flat_encode_args(args);
        py::gil_scoped_release nogil;
        Backend::bounds(a, reinterpret_cast<int64_t*>(bound), stream);
      },
      py::arg("args"), py::arg("bound"), py::arg("stream") = 0);
  m.def(
      "encode_streams",
      [](const py::dict& args, A word_off, A words, A states, A n_words, A status, A stream) {
        const auto a = flat_encode_args(args);
        py::gil_scoped_release nogil;
        Backend::encode(a, reinterpret_cast<const int64_t*>(word_off), reinterpret_cast<uint32_t*>(words),
                        reinterpret_cast<uint32_t*>(states), reinterpret_cast<int64_t*>(n_words),
                        reinterpret_cast<codec::StreamStatus*>(status), stream);
      },
      py::arg("args"), py::arg("word_off"), py::arg("words"), py::arg("states"), py::arg("n_words"),
      py::arg("status"), py::arg("stream") = 0);
  m.def(
      "write_streams",
      [](const py::dict& args, A word_off, A words, A states, A n_words, A byte_off, A out, A stream) {
        const auto a = flat_encode_args(args);
        py::gil_scoped_release nogil;
        Backend::write(a, reinterpret_cast<const int64_t*>(word_off), reinterpret_cast<const uint32_t*>(words),
                       reinterpret_cast<const uint32_t*>(states), reinterpret_cast<const int64_t*>(n_words),
                       reinterpret_cast<const int64_t*>(byte_off), reinterpret_cast<uint8_t*>(out), stream);
      },
      py::arg("args"), py::arg("word_off"), py::arg("words"), py::arg("states"), py::arg("n_words"),
      py::arg("byte_off"), py::arg("out"), py::arg("stream") = 0);
  m.def(
      "decode_begin",
      [](const py::dict& args, A states, A stream) {
        const auto a = flat_decode_args(args);
        py::gil_scoped_release nogil;
        Backend::decode_begins(a, reinterpret_cast<codec::DecodeState*>(states), stream);
      },
      py::arg("args"), py::arg("states"), py::arg("stream") = 0);
  m.def(
      "decode_level",
      [](const py::dict& args, int32_t level, bool write, A states, A stream) {
        const auto a = flat_decode_args(args);
        py::gil_scoped_release nogil;
        Backend::decode_levels(a, level, write, reinterpret_cast<codec::DecodeState*>(states), stream);
      },
      py::arg("args"), py::arg("level"), py::arg("write"), py::arg("states"), py::arg("stream") = 0);
  m.def(
      "decode_end",
      [](const py::dict& args, A states, A status, A stream) {
        const auto a = flat_decode_args(args);
        py::gil_scoped_release nogil;
        Backend::decode_ends(a, reinterpret_cast<const codec::DecodeState*>(states),
                             reinterpret_cast<codec::StreamStatus*>(status), stream);
      },
      py::arg("args"), py::arg("states"), py::arg("status"), py::arg("stream") = 0);
}

}  // namespace mdlsae::bind
