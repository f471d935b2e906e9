// rmsnorm and layernorm on the GPU (cuda/kernels.h), the arithmetic of ops/norm.cpp: row statistics in double,
// outputs rounded to T, the row's rstd (and layernorm's x̂) kept in double for the backward.
//
// One block per row: the row's sums use lane_partial-style strided partials and the fixed tree of
// cuda/index_math.h (deterministic; the CPU sums the row sequentially, so the two differ by rounding). Weight and
// bias gradients are column sums with one thread per column walking the rows in order, in double: the CPU's order
// exactly. Not here: group norm, fused residual add.
#include "cuda/kernels.h"
#include "cuda/launch.cuh"

namespace ssmtune::cuda {

namespace {

// Sum of `value` over the block's lanes by the fixed tree; every lane gets the total. `scratch` has kThreads.
__device__ double block_sum(double value, double* scratch) { return block_tree_sum<kThreads>(value, scratch); }

template <class T>
__global__ void rmsnorm_forward_kernel(const T* x, const T* w, T* out, double* rstd, int64_t rows, int64_t D, double eps) {
    __shared__ double scratch[kThreads];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * D;
        double ss = 0;
        for (int64_t j = threadIdx.x; j < D; j += kThreads) ss += double(xr[j]) * double(xr[j]);
        const double rs = 1.0 / sqrt(block_sum(ss, scratch) / double(D) + eps);
        if (threadIdx.x == 0) rstd[r] = rs;
        for (int64_t j = threadIdx.x; j < D; j += kThreads) out[r * D + j] = T(double(xr[j]) * rs * double(w[j]));
    }
}

template <class T>
__global__ void rmsnorm_backward_dx_kernel(const T* g, const T* x, const T* w, const double* rstd, T* dx, int64_t rows,
                                           int64_t D) {
    __shared__ double scratch[kThreads];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        double dot = 0;  // Σ w g x
        for (int64_t j = threadIdx.x; j < D; j += kThreads) dot += double(w[j]) * double(g[r * D + j]) * double(x[r * D + j]);
        dot = block_sum(dot, scratch);
        const double rs = rstd[r], c = rs * rs * rs * dot / double(D);
        for (int64_t j = threadIdx.x; j < D; j += kThreads)
            dx[r * D + j] = T(rs * double(w[j]) * double(g[r * D + j]) - c * double(x[r * D + j]));
    }
}

template <class T>
__global__ void layernorm_forward_kernel(const T* x, const T* w, const T* b, T* out, double* xhat, double* rstd,
                                         int64_t rows, int64_t D, double eps) {
    __shared__ double scratch[kThreads];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * D;
        double mu = 0;
        for (int64_t j = threadIdx.x; j < D; j += kThreads) mu += double(xr[j]);
        mu = block_sum(mu, scratch) / double(D);
        double var = 0;
        for (int64_t j = threadIdx.x; j < D; j += kThreads) var += (double(xr[j]) - mu) * (double(xr[j]) - mu);
        const double rs = 1.0 / sqrt(block_sum(var, scratch) / double(D) + eps);
        if (threadIdx.x == 0) rstd[r] = rs;
        for (int64_t j = threadIdx.x; j < D; j += kThreads) {
            const double h = (double(xr[j]) - mu) * rs;
            xhat[r * D + j] = h;
            out[r * D + j] = T(h * (w ? double(w[j]) : 1.0) + (b ? double(b[j]) : 0.0));
        }
    }
}

template <class T>
__global__ void layernorm_backward_dx_kernel(const T* g, const T* w, const double* xhat, const double* rstd, T* dx,
                                             int64_t rows, int64_t D) {
    __shared__ double scratch[kThreads];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        double mean_g = 0, mean_gh = 0;  // means of ĝ and ĝ⊙x̂
        for (int64_t j = threadIdx.x; j < D; j += kThreads) {
            const double gh = double(g[r * D + j]) * (w ? double(w[j]) : 1.0);
            mean_g += gh;
            mean_gh += gh * xhat[r * D + j];
        }
        mean_g = block_sum(mean_g, scratch) / double(D);
        mean_gh = block_sum(mean_gh, scratch) / double(D);
        for (int64_t j = threadIdx.x; j < D; j += kThreads) {
            const double gh = double(g[r * D + j]) * (w ? double(w[j]) : 1.0);
            dx[r * D + j] = T(rstd[r] * (gh - mean_g - xhat[r * D + j] * mean_gh));
        }
    }
}

template <class T>
__global__ void column_sums_kernel(int kind, const T* g, const T* other, const double* xhat, const double* rstd, T* out,
                                   int64_t rows, int64_t D) {
    SSMTUNE_GRID_LOOP(j, D) {
        double acc = 0;
        for (int64_t r = 0; r < rows; ++r) {
            const double gv = double(g[r * D + j]);
            acc += kind == 0 ? gv * double(other[r * D + j]) * rstd[r] : (kind == 1 ? gv * xhat[r * D + j] : gv);
        }
        out[j] = T(acc);
    }
}

}  // namespace

void rmsnorm_forward(int device, DType dtype, const void* x, const void* w, void* out, double* rstd, int64_t rows,
                     int64_t D, double eps) {
    if (rows == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "rmsnorm_forward", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(row_blocks(rows), kThreads, s, rmsnorm_forward_kernel<T>)(
            static_cast<const T*>(x), static_cast<const T*>(w), static_cast<T*>(out), rstd, rows, D, eps);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void rmsnorm_backward_dx(int device, DType dtype, const void* g, const void* x, const void* w, const double* rstd,
                         void* dx, int64_t rows, int64_t D) {
    if (rows == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "rmsnorm_backward_dx", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(row_blocks(rows), kThreads, s, rmsnorm_backward_dx_kernel<T>)(
            static_cast<const T*>(g), static_cast<const T*>(x), static_cast<const T*>(w), rstd, static_cast<T*>(dx),
            rows, D);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void layernorm_forward(int device, DType dtype, const void* x, const void* w, const void* b, void* out, double* xhat,
                       double* rstd, int64_t rows, int64_t D, double eps) {
    if (rows == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "layernorm_forward", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(row_blocks(rows), kThreads, s, layernorm_forward_kernel<T>)(
            static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b), static_cast<T*>(out), xhat,
            rstd, rows, D, eps);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void layernorm_backward_dx(int device, DType dtype, const void* g, const void* w, const double* xhat,
                           const double* rstd, void* dx, int64_t rows, int64_t D) {
    if (rows == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "layernorm_backward_dx", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(row_blocks(rows), kThreads, s, layernorm_backward_dx_kernel<T>)(
            static_cast<const T*>(g), static_cast<const T*>(w), xhat, rstd, static_cast<T*>(dx), rows, D);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void norm_column_sums(int device, DType dtype, int kind, const void* g, const void* other, const double* xhat,
                      const double* rstd, void* out, int64_t rows, int64_t D) {
    if (D == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "norm_column_sums", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(grid_for(D), kThreads, s, column_sums_kernel<T>)(
            kind, static_cast<const T*>(g), static_cast<const T*>(other), xhat, rstd, static_cast<T*>(out), rows, D);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

}  // namespace ssmtune::cuda
