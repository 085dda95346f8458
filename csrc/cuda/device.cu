// CUDA device queries used by mdlsae.cuda_available() and build_info().
#include <cuda_runtime.h>

#include <sstream>

#include "cuda/device.h"

namespace mdlsae::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver / no device" error
    return 0;
  }
  return n;
}

std::string device_name(int device) {
  cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, device) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  std::ostringstream os;
  os << p.name << " (sm_" << p.major << p.minor << ", "
     << (p.totalGlobalMem >> 30) << " GiB)";
  return os.str();
}

int runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

}  // namespace mdlsae::cuda
