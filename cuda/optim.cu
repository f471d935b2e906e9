// Optimizer updates on the GPU (cuda/kernels.h): AdamW, SGD and the in-place scale of gradient clipping, one
// thread per element calling the same per-element functions as the CPU loops (autograd/optim_math.h), so a GPU
// step follows torch's single-tensor rules in the same operation order. Elementwise: no reduction, deterministic.
// Not here: the global grad norm (reduce.cu's sum_squares_chunks, summed on the host), multi-tensor launches.
#include "cuda/kernels.h"
#include "cuda/launch.cuh"

namespace ssmtune::cuda {

namespace {

template <class T>
__global__ void adamw_kernel(T* p, const T* g, T* m, T* v, T* vmax, int64_t n, autograd::AdamFactors<T> f) {
    SSMTUNE_GRID_LOOP(i, n) autograd::adamw_element<T>(p[i], g[i], m[i], v[i], vmax ? vmax + i : nullptr, f);
}

template <class T>
__global__ void sgd_kernel(T* p, const T* g, T* buf, int64_t n, autograd::SgdScalars s) {
    SSMTUNE_GRID_LOOP(i, n) autograd::sgd_element<T>(p[i], g[i], buf ? buf + i : nullptr, s);
}

template <class T>
__global__ void scale_kernel(T* x, int64_t n, T factor) {
    SSMTUNE_GRID_LOOP(i, n) x[i] = x[i] * factor;
}

}  // namespace

void adamw_update(int device, DType dtype, void* p, const void* g, void* m, void* v, void* vmax, int64_t n,
                  const autograd::AdamScalars& s) {
    if (n == 0) return;
    cudaStream_t st = stream(device);
    dispatch_f32_f64(dtype, "adamw_update", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(grid_for(n), kThreads, st, adamw_kernel<T>)(
            static_cast<T*>(p), static_cast<const T*>(g), static_cast<T*>(m), static_cast<T*>(v), static_cast<T*>(vmax),
            n, autograd::adam_factors<T>(s));
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void sgd_update(int device, DType dtype, void* p, const void* g, void* buf, int64_t n, const autograd::SgdScalars& s) {
    if (n == 0) return;
    cudaStream_t st = stream(device);
    dispatch_f32_f64(dtype, "sgd_update", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(grid_for(n), kThreads, st, sgd_kernel<T>)(
            static_cast<T*>(p), static_cast<const T*>(g), static_cast<T*>(buf), n, s);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void scale_inplace(int device, DType dtype, void* x, int64_t n, double factor) {
    if (n == 0) return;
    cudaStream_t st = stream(device);
    dispatch_f32_f64(dtype, "scale_inplace", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(grid_for(n), kThreads, st, scale_kernel<T>)(static_cast<T*>(x), n, T(factor));
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

}  // namespace ssmtune::cuda
