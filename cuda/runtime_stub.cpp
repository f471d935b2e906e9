// CPU-only build of cuda/runtime.h: no GPU is ever available. (Compiled when CUDA is not built.)
#ifndef SSMTUNE_WITH_CUDA
#include "cuda/runtime.h"

namespace ssmtune::cuda {
bool built_with_cuda() { return false; }
bool available() { return false; }
int device_count() { return 0; }
std::string device_name(int) { return "none"; }
}  // namespace ssmtune::cuda
#endif
