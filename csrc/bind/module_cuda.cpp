// pybind11 bindings of the CUDA kernels as the private module mdlsae._C_cuda. Built only where
// a CUDA compiler was found; importing it on a machine without a GPU is fine, and
// device_count() then returns 0.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cuda/device.h"

namespace py = pybind11;

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "mdlsae native CUDA kernels (private; use the mdlsae package)";
  m.def("device_count", &mdlsae::cuda::device_count);
  m.def("device_name", &mdlsae::cuda::device_name, py::arg("device") = 0);
  m.def("build_info", [] {
    py::dict d;
    d["cuda_version"] = MDLSAE_CUDA_VERSION;
    d["cuda_architectures"] = MDLSAE_CUDA_ARCHS;
    d["cuda_runtime"] = mdlsae::cuda::runtime_version();
    d["cuda_kernels"] = py::make_tuple();
    return d;
  });
}
