// pybind11 bindings of the CUDA kernels as the private module mdlsae._C_cuda. Built only where
// a CUDA compiler was found; importing it on a machine without a GPU is fine, and
// device_count() then returns 0. Device buffers arrive as integer addresses of torch tensors
// and the stream as torch's cuda_stream handle, so nothing here links libtorch.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bind/flat_args.h"
#include "common/check.h"
#include "cuda/device.h"
#include "cuda/rans_codec.h"
#include "cuda/select_quantize.h"

namespace py = pybind11;
using mdlsae::cuda::SelectQuantizeArgs;

namespace {

template <typename T>
T* device_ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

cudaStream_t stream_of(uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

// The GPU coder's steps (cuda/rans_codec.h), for bind::def_flat_coder.
struct CudaFlatCoder {
  using EA = mdlsae::codec::FlatEncodeArgs;
  using DA = mdlsae::codec::FlatDecodeArgs;
  using Status = mdlsae::codec::StreamStatus;
  using State = mdlsae::codec::DecodeState;
  static void place(const EA& a, Status* status, uintptr_t s) {
    mdlsae::cuda::flat_place_siblings_all(a, status, stream_of(s));
  }
  static void bounds(const EA& a, int64_t* bound, uintptr_t s) { mdlsae::cuda::flat_stream_bounds(a, bound, stream_of(s)); }
  static void encode(const EA& a, const int64_t* word_off, uint32_t* words, uint32_t* states, int64_t* n_words,
                     Status* status, uintptr_t s) {
    mdlsae::cuda::flat_encode_streams(a, word_off, words, states, n_words, status, stream_of(s));
  }
  static void write(const EA& a, const int64_t* word_off, const uint32_t* words, const uint32_t* states,
                    const int64_t* n_words, const int64_t* byte_off, uint8_t* out, uintptr_t s) {
    mdlsae::cuda::flat_write_streams(a, word_off, words, states, n_words, byte_off, out, stream_of(s));
  }
  static void decode_begins(const DA& a, State* st, uintptr_t s) { mdlsae::cuda::flat_decode_begins(a, st, stream_of(s)); }
  static void decode_levels(const DA& a, int32_t level, bool write, State* st, uintptr_t s) {
    mdlsae::cuda::flat_decode_levels(a, level, write, st, stream_of(s));
  }
  static void decode_ends(const DA& a, const State* st, Status* status, uintptr_t s) {
    mdlsae::cuda::flat_decode_ends(a, st, status, stream_of(s));
  }
};

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "mdlsae native CUDA kernels (private; use the mdlsae package)";
  m.def("device_count", &mdlsae::cuda::device_count);
  m.def("device_name", &mdlsae::cuda::device_name, py::arg("device") = 0);
  m.def("build_info", [] {
    py::dict d;
    d["cuda_version"] = MDLSAE_CUDA_VERSION;
    d["cuda_architectures"] = MDLSAE_CUDA_ARCHS;
    d["cuda_runtime"] = mdlsae::cuda::runtime_version();
    d["cuda_kernels"] = py::make_tuple("select_quantize", "histogram", "rans_encode", "rans_decode");
    d["cuda_max_topk"] = mdlsae::cuda::kMaxTopK;
    return d;
  });

  // Addresses are device pointers (0 = none); see cuda/select_quantize.h for each buffer.
  py::class_<SelectQuantizeArgs>(m, "SelectQuantizeArgs")
      .def(py::init([](uintptr_t pre, int dtype, int64_t rows, int64_t d_sae, int64_t row_stride,
                       int32_t k, uintptr_t threshold, float step, uintptr_t steps,
                       uintptr_t counts, int32_t dense_cap, uintptr_t bias) {
             MDLSAE_CHECK_ARG(dtype >= 0 && dtype <= 2,
                              "dtype code must be 0 (f32), 1 (f16) or 2 (bf16), got ", dtype);
             SelectQuantizeArgs a;
             a.pre = device_ptr<const void>(pre);
             a.dtype = mdlsae::DType(dtype);
             a.rows = rows;
             a.d_sae = d_sae;
             a.row_stride = row_stride;
             a.k = k;
             a.threshold = device_ptr<const float>(threshold);
             a.step = step;
             a.steps = device_ptr<const float>(steps);
             a.counts = device_ptr<uint32_t>(counts);
             a.dense_cap = dense_cap;
             a.bias = device_ptr<const float>(bias);
             return a;
           }),
           py::arg("pre"), py::arg("dtype"), py::arg("rows"), py::arg("d_sae"),
           py::arg("row_stride"), py::arg("k"), py::arg("threshold"), py::arg("step"),
           py::arg("steps"), py::arg("counts"), py::arg("dense_cap"), py::arg("bias") = 0);

  m.def(
      "select_quantize_rows",
      [](const SelectQuantizeArgs& a, uintptr_t row_nnz, uintptr_t slot_index, uintptr_t slot_q,
         uintptr_t first_error, uintptr_t stream) {
        mdlsae::cuda::select_quantize_rows(a, device_ptr<int64_t>(row_nnz),
                                           device_ptr<int32_t>(slot_index),
                                           device_ptr<int32_t>(slot_q),
                                           device_ptr<int64_t>(first_error), stream_of(stream));
      },
      py::arg("args"), py::arg("row_nnz"), py::arg("slot_index"), py::arg("slot_q"),
      py::arg("first_error"), py::arg("stream"));
  m.def(
      "write_codes",
      [](const SelectQuantizeArgs& a, uintptr_t row_ptr, uintptr_t slot_index, uintptr_t slot_q,
         uintptr_t index, uintptr_t q, uintptr_t stream) {
        mdlsae::cuda::write_codes(a, device_ptr<const int64_t>(row_ptr),
                                  device_ptr<const int32_t>(slot_index),
                                  device_ptr<const int32_t>(slot_q), device_ptr<int32_t>(index),
                                  device_ptr<int32_t>(q), stream_of(stream));
      },
      py::arg("args"), py::arg("row_ptr"), py::arg("slot_index"), py::arg("slot_q"),
      py::arg("index"), py::arg("q"), py::arg("stream"));
  m.def(
      "throw_step_too_small",
      [](const SelectQuantizeArgs& a, int64_t first_error, uintptr_t stream) {
        mdlsae::cuda::throw_step_too_small(a, first_error, stream_of(stream));
      },
      py::arg("args"), py::arg("first_error"), py::arg("stream"));

  // The GPU rANS coder (cuda/rans_codec.h); the same functions as _C.flat, on device buffers.
  mdlsae::bind::def_flat_coder<CudaFlatCoder>(m);
}
