// For the .cu files only: checked-call macros and the per-device context (stream, cuBLAS, cuFFT plan cache).
// cuBLAS and cuFFT functions are called as lib::name(...) (cuda/math_libs.h), in the emulation too.
//
// SSMTUNE_CUDA_CHECK / SSMTUNE_CUBLAS_CHECK / SSMTUNE_CUFFT_CHECK throw ssmtune::Error naming the call, its
// status, file:line (added by SSMTUNE_FAIL) and a hint. SSMTUNE_CUDA_LAUNCH_CHECK() follows every kernel launch.
// Not here: anything a host-only file may include (see runtime.h, kernels.h).
#pragma once

#ifdef SSMTUNE_CUDA_EMULATION
#include "cuda/emulation/host_simt.h"  // the kernels compiled as host code (tests/emulation/)
namespace ssmtune::cuda::lib {         // the emulation's cuBLAS and cuFFT are plain host functions
using ::cublasCreate, ::cublasSetStream, ::cublasSetMathMode, ::cublasSgemmStridedBatched, ::cublasDgemmStridedBatched;
using ::cufftPlan1d, ::cufftSetStream, ::cufftExecD2Z, ::cufftExecZ2D;
}  // namespace ssmtune::cuda::lib
#else
#include <cuda_runtime.h>

#include "cuda/math_libs.h"  // ssmtune::cuda::lib: cuBLAS and cuFFT, loaded on first use
#endif

#include "engine/error.h"

#define SSMTUNE_CUDA_CHECK(call)                                                                              \
    do {                                                                                                      \
        const cudaError_t status_ = (call);                                                                   \
        if (status_ != cudaSuccess)                                                                           \
            SSMTUNE_FAIL("CUDA call ", #call, " failed: ", cudaGetErrorName(status_), " (",                   \
                         cudaGetErrorString(status_), "); hint: ", ::ssmtune::cuda::hint_for(status_));       \
    } while (0)

#define SSMTUNE_CUDA_LAUNCH_CHECK() SSMTUNE_CUDA_CHECK(cudaGetLastError())

#define SSMTUNE_CUBLAS_CHECK(call)                                                                            \
    do {                                                                                                      \
        const cublasStatus_t status_ = (call);                                                                \
        if (status_ != CUBLAS_STATUS_SUCCESS)                                                                 \
            SSMTUNE_FAIL("cuBLAS call ", #call, " failed with status ", int(status_),                         \
                         "; hint: check the matrix sizes and leading dimensions, and that the GPU has free memory"); \
    } while (0)

#define SSMTUNE_CUFFT_CHECK(call)                                                                             \
    do {                                                                                                      \
        const cufftResult status_ = (call);                                                                   \
        if (status_ != CUFFT_SUCCESS)                                                                         \
            SSMTUNE_FAIL("cuFFT call ", #call, " failed with status ", int(status_),                          \
                         "; hint: check the transform length and batch, and that the GPU has free memory");   \
    } while (0)

namespace ssmtune::cuda {

// A short, actionable hint for a CUDA error status.
const char* hint_for(cudaError_t status);

// Makes `device` current and returns its stream (created on first use, non-blocking).
cudaStream_t stream(int device);
// The device's cuBLAS handle bound to its stream, created on first use (TF32 off: default math mode).
cublasHandle_t cublas(int device);
// A cached cuFFT plan for `batch` real-to-complex (forward) or complex-to-real (inverse) transforms of length n.
cufftHandle fft_plan(int device, int n, int batch, bool inverse, bool f64);

}  // namespace ssmtune::cuda
