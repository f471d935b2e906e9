// CUDA runtime entry points the rest of the library may call whether or not CUDA was built.
//
// available() is false, silently, when the build has no CUDA, no driver is installed or no GPU is visible.
// When CUDA is built, the first call registers the device backend with the engine, so Tensor::to(Device::cuda())
// works: allocation through a caching allocator per device (cuda/caching_allocator.h), copies staged through a
// pinned host buffer, all work on one stream per device, cuBLAS and cuFFT loaded and their handles created on first
// use.
// Without CUDA every query answers "none" and the memory calls are Errors with the rebuild hint.
// Not here: kernels (cuda/kernels.h), multi-stream scheduling, peer-to-peer copies.
#pragma once

#include <string>

#include "cuda/caching_allocator.h"

namespace ssmtune::cuda {

bool built_with_cuda();
bool available();
int device_count();
std::string device_name(int index = 0);
// Theoretical peak memory bandwidth of the device in GB/s (memory clock × bus width), for benchmarks.
double peak_bandwidth_gbs(int index = 0);

// The device's caching allocator: bytes in use, peak, cached; empty_cache() returns the cache to the driver.
AllocatorStats memory_stats(int index = 0);
void empty_cache(int index = 0);
void reset_peak_memory(int index = 0);
// Waits for all work queued on the device's stream (benchmarks; copies to the host already wait).
void synchronize(int index = 0);
// cuBLAS and cuFFT are loaded on first use, not at program start (cuda/math_libs.h). This loads both now and
// resolves every function the backend calls, returning the files loaded ("libcublas.so.13, libcufft.so.12"), or
// throws ssmtune::Error naming the missing library and the fix. Needs no GPU. "emulated (...)" in the host
// emulation build, "none (built without CUDA)" without CUDA.
std::string load_math_libraries();

}  // namespace ssmtune::cuda
