// CPU-only build of cuda/runtime.h: no GPU is ever available. (Compiled when CUDA is not built.)
#ifndef SSMTUNE_WITH_CUDA
#include "cuda/runtime.h"

#include "engine/error.h"

namespace ssmtune::cuda {

[[noreturn]] void not_built() {
    SSMTUNE_FAIL("this build of ssmtune has no CUDA backend; fix: configure with -DSSMTUNE_CUDA=ON on a machine "
                 "with the CUDA Toolkit, or keep tensors on Device::cpu()");
}

bool built_with_cuda() { return false; }
bool available() { return false; }
int device_count() { return 0; }
std::string device_name(int) { return "none"; }
double peak_bandwidth_gbs(int) { return 0.0; }
AllocatorStats memory_stats(int) { not_built(); }
void empty_cache(int) { not_built(); }
void reset_peak_memory(int) { not_built(); }
void synchronize(int) { not_built(); }

}  // namespace ssmtune::cuda
#endif
