// The entry points of cuda/runtime_internal.h for the kernel-level emulation tests (tests/emulation/, built with
// -Dcuda=cuda_emu): the emulated kernels' launchers ask for a stream, the cuBLAS handle and cuFFT plans, and get the
// emulation's (cuda/emulation/host_simt.h) without the device contexts, allocator and engine backend of
// cuda/runtime.cu, which the whole-backend emulation (SSMTUNE_CUDA_EMULATION=ON) compiles instead.
#include "cuda/runtime_internal.h"

namespace ssmtune::cuda {

const char* hint_for(cudaError_t) { return "this is the host emulation of the kernels (cuda/emulation/host_simt.h)"; }

cudaStream_t stream(int device) {
    SSMTUNE_CUDA_CHECK(cudaSetDevice(device));
    return nullptr;
}

cublasHandle_t cublas(int) {
    cublasHandle_t h = nullptr;
    SSMTUNE_CUBLAS_CHECK(cublasCreate(&h));
    return h;
}

cufftHandle fft_plan(int, int n, int batch, bool inverse, bool f64) {
    cufftHandle plan = 0;
    const cufftType type = f64 ? (inverse ? CUFFT_Z2D : CUFFT_D2Z) : (inverse ? CUFFT_C2R : CUFFT_R2C);
    SSMTUNE_CUFFT_CHECK(cufftPlan1d(&plan, n, type, batch));
    return plan;
}

}  // namespace ssmtune::cuda
