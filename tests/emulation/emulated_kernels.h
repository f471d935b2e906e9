// The launchers of cuda/kernels.h as the host emulation builds them (ssmtune::cuda_emu, cuda/emulation/host_simt.h),
// for the emulation tests: the same declarations, read once more with the namespace renamed as CMake renames it
// for the emulated .cu files. Include it after the other ssmtune headers and before anything that includes
// cuda/kernels.h (which a header guard would then skip). Pointers are host pointers: "device" memory is host memory.
#pragma once

#ifdef SSMTUNE_CUDA_KERNELS_H_SEEN
#error "include emulated_kernels.h before any header that includes cuda/kernels.h"
#endif

#define SSMTUNE_CUDA_EMULATION 1
#define cuda cuda_emu
#include "cuda/kernels.h"
#undef cuda
#undef SSMTUNE_CUDA_EMULATION
