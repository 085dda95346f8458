// pybind11 bindings of the CPU core as the private module mdlsae._C. Buffers arrive as numpy
// arrays or as raw addresses of torch tensors (so bfloat16 needs no numpy dtype); results go
// back as numpy arrays that take ownership of the C++ vectors without copying.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>

#include "common/check.h"
#include "cpu/histogram.h"
#include "cpu/parallel.h"
#include "cpu/select_quantize.h"

namespace py = pybind11;
using namespace mdlsae;

namespace {

template <typename T>
py::array_t<T> to_numpy(std::vector<T>&& v) {
  auto* heap = new std::vector<T>(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>({py::ssize_t(heap->size())}, {py::ssize_t(sizeof(T))}, heap->data(), owner);
}

using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using I32Array = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

const float* feature_vector(const std::optional<F32Array>& a, int64_t d_sae, const char* name) {
  if (!a) return nullptr;
  MDLSAE_CHECK_ARG(a->ndim() == 1 && a->shape(0) == d_sae, name, " must have shape [", d_sae,
                   "], got ndim ", a->ndim(), " size ", a->size());
  return a->data();
}

std::string compiler() {
#if defined(__clang__)
  return concat("clang ", __clang_major__, ".", __clang_minor__, ".", __clang_patchlevel__);
#elif defined(__GNUC__)
  return concat("gcc ", __GNUC__, ".", __GNUC_MINOR__, ".", __GNUC_PATCHLEVEL__);
#elif defined(_MSC_VER)
  return concat("msvc ", _MSC_VER);
#else
  return "unknown";
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "mdlsae native CPU core (private; use the mdlsae package)";

  m.def("build_info", [] {
    py::dict d;
    d["cpu_kernels"] = py::make_tuple("select_quantize", "histogram");
    d["compiler"] = compiler();
    d["cplusplus"] = long(__cplusplus);
    d["hardware_threads"] = int(std::thread::hardware_concurrency());
    return d;
  });
  m.def("num_threads", &num_threads);
  m.def("set_num_threads", &set_num_threads, py::arg("n"));

  py::class_<Histogram>(m, "Histogram")
      .def(py::init<int64_t, int32_t>(), py::arg("d_sae"), py::arg("dense_cap") = 64)
      .def_property_readonly("d_sae", &Histogram::d_sae)
      .def_property_readonly("rows", &Histogram::rows)
      .def_property_readonly("dense_cap", &Histogram::dense_cap)
      .def("merge", py::overload_cast<const Histogram&>(&Histogram::merge), py::arg("other"))
      .def(
          "add_codes",
          [](Histogram& h, I32Array index, I32Array q, int64_t rows) {
            MDLSAE_CHECK_ARG(index.size() == q.size(), "index has ", index.size(),
                             " entries but q has ", q.size());
            MDLSAE_CHECK_ARG(rows >= 0, "rows must be >= 0, got ", rows);
            h.add_codes(index.data(), q.data(), index.size(), rows);
          },
          py::arg("index"), py::arg("q"), py::arg("rows"))
      .def(
          "add_dense_counts",
          [](Histogram& h, py::array_t<uint32_t, py::array::c_style | py::array::forcecast> counts,
             int64_t rows) { h.add_dense_counts(counts.data(), counts.size(), rows); },
          py::arg("counts"), py::arg("rows"))
      .def("active_counts", [](const Histogram& h) { return to_numpy(h.active_counts()); })
      .def("to_csr", [](const Histogram& h) {
        HistogramCSR c = h.to_csr();
        return py::make_tuple(to_numpy(std::move(c.ptr)), to_numpy(std::move(c.q)),
                              to_numpy(std::move(c.count)));
      });

  m.def(
      "select_quantize",
      [](uintptr_t ptr, int dtype, int64_t rows, int64_t d_sae, int64_t row_stride, int32_t k,
         std::optional<F32Array> threshold, float step, std::optional<F32Array> steps,
         Histogram* hist) {
        MDLSAE_CHECK_ARG(dtype >= 0 && dtype <= 2, "dtype code must be 0 (f32), 1 (f16) or 2 (bf16), got ", dtype);
        Selection sel{k, feature_vector(threshold, d_sae, "threshold")};
        Steps st{step, feature_vector(steps, d_sae, "steps")};
        SparseCodes c;
        {
          py::gil_scoped_release nogil;
          c = select_quantize(reinterpret_cast<const void*>(ptr), DType(dtype), rows, d_sae,
                              row_stride, sel, st, hist);
        }
        return py::make_tuple(to_numpy(std::move(c.row_ptr)), to_numpy(std::move(c.index)),
                              to_numpy(std::move(c.q)));
      },
      py::arg("ptr"), py::arg("dtype"), py::arg("rows"), py::arg("d_sae"), py::arg("row_stride"),
      py::arg("k"), py::arg("threshold"), py::arg("step"), py::arg("steps"), py::arg("hist"));
}
