// cuBLAS and cuFFT, loaded on first use instead of at program start (for the .cu files; real CUDA builds only).
//
// Linking libcublas makes every start of the program — CPU-only runs, each test process — map and relocate cuBLAS
// and cuBLASLt: about 210 MiB of resident memory and half a second before main, measured with an empty program and
// CUDA 13. So the library does not link them: the few functions the backend calls are declared here as forwarders
// in ssmtune::cuda::lib with the real headers' exact signatures (decltype), and the first call of each dlopen()s
// its library and dlsym()s the function (cuda/math_libs.cpp). A missing library is an ssmtune::Error naming it
// and the fix, at the first GPU product or FFT. Call them qualified (lib::cublasCreate(...)); cublas_v2.h's macros
// (cublasCreate → cublasCreate_v2) apply as for the real functions. Not here: the rest of either API.
#pragma once

#include <cublas_v2.h>
#include <cufft.h>

namespace ssmtune::cuda::lib {

// The functions the backend calls, by library (X-macro lists: math_libs.cpp resolves the same lists).
#define SSMTUNE_CUBLAS_FUNCTIONS(X) \
    X(cublasCreate) X(cublasSetStream) X(cublasSetMathMode) X(cublasSgemmStridedBatched) X(cublasDgemmStridedBatched)
#define SSMTUNE_CUFFT_FUNCTIONS(X) X(cufftPlan1d) X(cufftSetStream) X(cufftExecD2Z) X(cufftExecZ2D)

enum class Library { cublas, cufft };

// The address of `name` in `library`, loading the library on first use; throws ssmtune::Error when either is missing.
void* symbol(Library library, const char* name);

// The exported name after cublas_v2.h's renaming (e.g. "cublasCreate_v2").
#define SSMTUNE_LIB_NAME(fn) SSMTUNE_LIB_NAME_(fn)
#define SSMTUNE_LIB_NAME_(fn) #fn
// lib::fn(args...) → the real fn, resolved once.
#define SSMTUNE_LIB_FORWARD(library, fn)                                                                      \
    template <class... Args>                                                                                  \
    inline auto fn(Args... args) {                                                                            \
        static const auto real = reinterpret_cast<decltype(&::fn)>(symbol(library, SSMTUNE_LIB_NAME(fn)));    \
        return real(args...);                                                                                 \
    }
#define SSMTUNE_CUBLAS_FORWARD(fn) SSMTUNE_LIB_FORWARD(Library::cublas, fn)
#define SSMTUNE_CUFFT_FORWARD(fn) SSMTUNE_LIB_FORWARD(Library::cufft, fn)
SSMTUNE_CUBLAS_FUNCTIONS(SSMTUNE_CUBLAS_FORWARD)
SSMTUNE_CUFFT_FUNCTIONS(SSMTUNE_CUFFT_FORWARD)
#undef SSMTUNE_CUBLAS_FORWARD
#undef SSMTUNE_CUFFT_FORWARD

}  // namespace ssmtune::cuda::lib
