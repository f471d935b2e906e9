// Host emulation of the CUDA kernels: the .cu files compiled as ordinary C++ (no toolkit, no GPU), every thread
// of a launch run as a fiber with real barriers, so the kernels' own code — block scans, warp shuffles, shared
// memory, grid-stride loops, index arithmetic — executes on any machine and is compared with the CPU ops
// (tests/emulation/). Included instead of the CUDA headers when SSMTUNE_CUDA_EMULATION is defined
// (cuda/runtime_internal.h); CMake builds the emulated kernels with -Dcuda=cuda_emu, so they live in
// ssmtune::cuda_emu and never clash with the real or the stub launchers of the library they are linked with.
//
// The model: a launch runs its blocks one after another on the calling thread; the blockDim threads of a block are
// fibers (a small stack switch on x86-64 Linux, POSIX ucontext elsewhere), each run until its next barrier, in
// thread order (or the reverse: schedule.h). A launch CUDA would refuse (an empty grid, more than 1024 threads a
// block, gridDim.y or .z above 65535) aborts with a message. __shared__ is a static (one copy,
// shared by the block; blocks do not overlap). __syncthreads releases when every live thread of the block waits
// there; a thread that returns leaves it, as on Volta and later. __shfl_up/down_sync is an exchange through a
// per-warp buffer and a barrier of the warp's lanes (full masks only, width 32). A barrier some live thread never
// reaches (a divergent __syncthreads, a lane missing from a shuffle) aborts with a message at once instead of
// hanging. Device memory is host memory: cudaMallocAsync fills new buffers with 0xFF bytes (NaN in floats) so a
// kernel that reads what nobody wrote shows up in the comparison. cuFFT's double R2C / C2R transforms are direct
// O(n²) DFTs with cuFFT's conventions (unnormalised, n/2 + 1 bins, the imaginary parts of bin 0 and n/2 ignored by
// C2R); cuBLAS's strided-batched GEMMs are loops, and reject the leading dimensions cuBLAS rejects.
//
// Not here: timing (this says nothing about speed), true concurrency (threads take turns, so a race shows only as
// a result that changes with the schedule's order), warp-synchronous code without barriers (none in ssmtune), atomics,
// streams' concurrency, resource limits (registers, shared memory: tools/setup/cuda_resources.sh asks ptxas).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>

#include "cuda/emulation/schedule.h"

// ---- the CUDA C++ keywords ----
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The built-in variables, per emulated thread.
inline thread_local dim3 threadIdx{0, 0, 0};
inline thread_local dim3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

// Device math: the float overloads, as in CUDA (exp(float) is expf there, not exp(double)).
using std::ceil;
using std::cos;
using std::exp;
using std::expm1;
using std::fabs;
using std::floor;
using std::fmax;
using std::fmin;
using std::log;
using std::log1p;
using std::pow;
using std::sin;
using std::sqrt;
using std::tanh;

namespace ssmtune_simt {

constexpr int kWarpSize = 32;

void sync_block();                                       // __syncthreads()
void warp_exchange(const void* mine, void* theirs, int source_lane, size_t bytes);  // one shuffle
int lane_id();

// Runs body() once per thread of every block of the grid (blocks in order, the threads of a block as fibers).
void run_grid(dim3 grid, dim3 block, const std::function<void()>& body);

// kernel<<<grid, block>>>(args...): the arguments are converted to the kernel's parameter types once, as CUDA
// copies them into the launch, and every thread calls the kernel with them.
template <class... P>
struct Launch {
    dim3 grid, block;
    void (*kernel)(P...);
    template <class... A>
    void operator()(A&&... args) const {
        static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
        const std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
        auto* k = kernel;
        run_grid(grid, block, [&params, k] { std::apply(k, params); });
    }
};
template <class... P>
Launch<P...> launch(dim3 grid, dim3 block, void (*kernel)(P...)) {
    return Launch<P...>{grid, block, kernel};
}

}  // namespace ssmtune_simt

inline void __syncthreads() { ssmtune_simt::sync_block(); }

template <class T>
T __shfl_up_sync(unsigned /*mask*/, T value, unsigned delta, int /*width*/ = ssmtune_simt::kWarpSize) {
    const int lane = ssmtune_simt::lane_id(), source = lane - int(delta);
    T theirs = value;
    ssmtune_simt::warp_exchange(&value, &theirs, source >= 0 ? source : lane, sizeof(T));
    return theirs;
}
template <class T>
T __shfl_down_sync(unsigned /*mask*/, T value, unsigned delta, int /*width*/ = ssmtune_simt::kWarpSize) {
    const int lane = ssmtune_simt::lane_id(), source = lane + int(delta);
    T theirs = value;
    ssmtune_simt::warp_exchange(&value, &theirs, source < ssmtune_simt::kWarpSize ? source : lane, sizeof(T));
    return theirs;
}

// ---- the CUDA runtime, as the launchers and cuda/runtime.cu call it: one emulated device, host memory ----
enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInsufficientDriver = 35,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorIllegalAddress = 700
};
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum cudaDeviceAttr { cudaDevAttrMemoryClockRate = 36, cudaDevAttrGlobalMemoryBusWidth = 37 };
constexpr unsigned cudaStreamNonBlocking = 1;
struct CUstream_st;
using cudaStream_t = CUstream_st*;
struct cudaDeviceProp {
    char name[256];
};
cudaError_t cudaGetLastError();
const char* cudaGetErrorName(cudaError_t e);
const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaMallocHost(void** p, size_t bytes);
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t);
cudaError_t cudaFreeAsync(void* p, cudaStream_t);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamSynchronize(cudaStream_t);

// cuFFT: plans for 1-D real transforms; the double ones (what cuda/s4d.cu runs) execute.
using cufftHandle = int;
enum cufftResult { CUFFT_SUCCESS = 0, CUFFT_INVALID_PLAN = 1, CUFFT_INVALID_TYPE = 4 };
enum cufftType { CUFFT_R2C = 0x2a, CUFFT_C2R = 0x2c, CUFFT_D2Z = 0x6a, CUFFT_Z2D = 0x6c };
struct cufftDoubleComplex {
    double x, y;
};
using cufftDoubleReal = double;
cufftResult cufftPlan1d(cufftHandle* plan, int n, cufftType type, int batch);
cufftResult cufftSetStream(cufftHandle plan, cudaStream_t);
cufftResult cufftExecD2Z(cufftHandle plan, cufftDoubleReal* in, cufftDoubleComplex* out);
cufftResult cufftExecZ2D(cufftHandle plan, cufftDoubleComplex* in, cufftDoubleReal* out);

// cuBLAS: the strided-batched GEMMs of cuda/matmul.cu, as plain column-major loops (sums in double).
struct cublasContext;
using cublasHandle_t = cublasContext*;
enum cublasStatus_t { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_INVALID_VALUE = 7 };
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cublasMath_t { CUBLAS_DEFAULT_MATH = 0 };
cublasStatus_t cublasCreate(cublasHandle_t* handle);
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t);
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t);
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t, cublasOperation_t op_a, cublasOperation_t op_b, int m, int n,
                                         int k, const float* alpha, const float* A, int lda, long long stride_a,
                                         const float* B, int ldb, long long stride_b, const float* beta, float* C,
                                         int ldc, long long stride_c, int batch);
cublasStatus_t cublasDgemmStridedBatched(cublasHandle_t, cublasOperation_t op_a, cublasOperation_t op_b, int m, int n,
                                         int k, const double* alpha, const double* A, int lda, long long stride_a,
                                         const double* B, int ldb, long long stride_b, const double* beta, double* C,
                                         int ldc, long long stride_c, int batch);
