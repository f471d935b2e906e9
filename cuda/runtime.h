// CUDA runtime entry points the rest of the library may call whether or not CUDA was built.
//
// available() is false, silently, when the build has no CUDA, no driver is installed or no GPU is visible.
// When CUDA is built, the first call registers the device backend (cudaMalloc/cudaFree/cudaMemcpy) with the
// engine so Tensor::to(Device::cuda()) works. The caching allocator, streams, cuBLAS/cuFFT handles and kernels
// come with the CUDA backend issue; this file is the seam they plug into.
#pragma once

#include <string>

namespace ssmtune::cuda {

bool built_with_cuda();
bool available();
int device_count();
std::string device_name(int index = 0);

}  // namespace ssmtune::cuda
