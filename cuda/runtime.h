// CUDA runtime entry points the rest of the library may call whether or not CUDA was built.
//
// available() is false, silently, when the build has no CUDA, no driver is installed or no GPU is visible.
// When CUDA is built, the first call registers the device backend with the engine, so Tensor::to(Device::cuda())
// works: allocation through a caching allocator per device (cuda/caching_allocator.h), copies staged through a
// pinned host buffer, all work on one stream per device, cuBLAS and cuFFT handles created on first use.
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

}  // namespace ssmtune::cuda
