// Softmax rows and the cross-entropy pieces on the GPU (cuda/kernels.h), the same arithmetic as ops/softmax.cpp:
// the row maximum m subtracted in T, Σ exp(x − m) accumulated in double, log of the total in double, results
// rounded to T. One block per row; the maximum and the sum use the fixed tree of cuda/index_math.h, so results are
// deterministic. cross_entropy's loss sum and count are the op's business (sum_rows over nll_rows' output).
// Not here: label smoothing, class weights (the CPU op has neither).
#include "cuda/kernels.h"
#include "cuda/launch.cuh"

namespace ssmtune::cuda {

namespace {

template <class T>
__global__ void softmax_rows_kernel(const T* x, T* y, int64_t rows, int64_t n, bool log_space) {
    __shared__ T maxima[kThreads];
    __shared__ double sums[kThreads];
    const int lane = int(threadIdx.x);
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * n;
        T* yr = y + r * n;
        T m = xr[0];
        for (int64_t j = lane; j < n; j += kThreads) m = xr[j] > m ? xr[j] : m;
        maxima[lane] = m;
        __syncthreads();
        for (int half = kThreads / 2; half > 0; half /= 2) {
            if (lane < half && maxima[lane + half] > maxima[lane]) maxima[lane] = maxima[lane + half];
            __syncthreads();
        }
        m = maxima[0];
        double total = 0;
        for (int64_t j = lane; j < n; j += kThreads) total += exp(double(xr[j] - m));
        sums[lane] = total;
        __syncthreads();
        for (int half = kThreads / 2; half > 0; half /= 2) {
            tree_pass(sums, lane, half);
            __syncthreads();
        }
        const double log_total = log(sums[0]);
        for (int64_t j = lane; j < n; j += kThreads)
            yr[j] = log_space ? T(double(xr[j] - m) - log_total) : T(exp(double(xr[j] - m) - log_total));
        __syncthreads();  // maxima[0] and sums[0] are read before the next row overwrites them
    }
}

template <class T>
__global__ void nll_rows_kernel(const T* logp, const int64_t* target, T* loss, int64_t rows, int64_t n,
                                int64_t ignore_index) {
    SSMTUNE_GRID_LOOP(r, rows) loss[r] = target[r] == ignore_index ? T(0) : -logp[r * n + target[r]];
}

template <class T>
__global__ void cross_entropy_backward_kernel(const T* logp, const int64_t* target, T* d, int64_t rows, int64_t n,
                                              int64_t ignore_index, double scale) {
    SSMTUNE_GRID_LOOP(i, rows * n) {
        const int64_t r = i / n, j = i - r * n;
        if (target[r] == ignore_index) {
            d[i] = T(0);
        } else {
            // the target's p − 1 as expm1(logp), as on the CPU (accurate when p is close to 1)
            d[i] = j == target[r] ? T(expm1(double(logp[i])) * scale) : T(exp(double(logp[i])) * scale);
        }
    }
}

}  // namespace

void softmax_rows(int device, DType dtype, const void* x, void* y, int64_t rows, int64_t n, bool log_space) {
    if (rows == 0 || n == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "softmax_rows", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(row_blocks(rows), kThreads, s, softmax_rows_kernel<T>)(
            static_cast<const T*>(x), static_cast<T*>(y), rows, n, log_space);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void nll_rows(int device, DType dtype, const void* logp, const int64_t* target, void* loss_rows, int64_t rows,
              int64_t n, int64_t ignore_index) {
    if (rows == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "nll_rows", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(grid_for(rows), kThreads, s, nll_rows_kernel<T>)(
            static_cast<const T*>(logp), target, static_cast<T*>(loss_rows), rows, n, ignore_index);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void cross_entropy_backward(int device, DType dtype, const void* logp, const int64_t* target, void* d, int64_t rows,
                            int64_t n, int64_t ignore_index, double scale) {
    if (rows * n == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "cross_entropy_backward", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(grid_for(rows * n), kThreads, s, cross_entropy_backward_kernel<T>)(
            static_cast<const T*>(logp), target, static_cast<T*>(d), rows, n, ignore_index, scale);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

}  // namespace ssmtune::cuda
