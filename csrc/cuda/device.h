// Host-callable CUDA queries, free of pybind11 so that .cu files never see Python headers.
#pragma once
#include <string>

namespace mdlsae::cuda {

// Number of usable CUDA devices; 0 when there is no driver or no device (never throws).
int device_count();
// "name (sm_XY, N GiB)" of a device, or "" when it cannot be queried.
std::string device_name(int device);
// CUDA runtime version the module was linked against, e.g. 13000.
int runtime_version();

}  // namespace mdlsae::cuda
