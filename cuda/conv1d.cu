// Mamba's depthwise causal conv1d on the GPU (cuda/kernels.h), the sums of ops/conv1d.cpp:
//   out[b, c, t] = bias[c] + Σ_k w[c, k] x[b, c, t − (K−1) + k];   dx[b, c, s] = Σ_k w[c, k] g[b, c, s + (K−1) − k]
// out and dx: one thread per element, the CPU's order of terms in T (nvcc may fuse a multiply-add, so equal to rounding). dw[c, k] and dbias[c]:
// one block per channel; lane l sums the (b, t) pairs l, l + kThreads, ... in double, then the fixed tree of
// cuda/index_math.h (deterministic; differs from the CPU's sequential sum by rounding). K ≤ kMaxConvWidth = 8 keeps
// the per-lane partials in registers. Not here: the recurrent one-step update, dilation, stride.
#include "cuda/kernels.h"
#include "cuda/launch.cuh"

namespace ssmtune::cuda {

namespace {

template <class T>
__global__ void conv_forward_kernel(const T* x, const T* w, const T* bias, T* out, int64_t B, int64_t C, int64_t L,
                                    int64_t K) {
    SSMTUNE_GRID_LOOP(i, B * C * L) {
        const int64_t t = i % L, bc = i / L, c = bc % C;
        const T* xr = x + bc * L;
        T acc = bias ? bias[c] : T(0);
        for (int64_t k = (K - 1 - t > 0 ? K - 1 - t : 0); k < K; ++k) acc += w[c * K + k] * xr[t - (K - 1) + k];
        out[i] = acc;
    }
}

template <class T>
__global__ void conv_backward_dx_kernel(const T* g, const T* w, T* dx, int64_t B, int64_t C, int64_t L, int64_t K) {
    SSMTUNE_GRID_LOOP(i, B * C * L) {
        const int64_t s = i % L, bc = i / L, c = bc % C;
        const T* gr = g + bc * L;
        T acc = T(0);
        for (int64_t k = (s + K - L > 0 ? s + K - L : 0); k < K; ++k) acc += w[c * K + k] * gr[s + (K - 1) - k];
        dx[i] = acc;
    }
}

template <class T>
__global__ void conv_backward_params_kernel(const T* g, const T* x, T* dw, T* dbias, int64_t B, int64_t C, int64_t L,
                                            int64_t K) {
    __shared__ double scratch[kThreads];
    const int lane = int(threadIdx.x);
    for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
        double acc[kMaxConvWidth + 1] = {};  // acc[k] for dw[c, k], acc[K] for dbias[c]
        for (int64_t bt = lane; bt < B * L; bt += kThreads) {
            const int64_t b = bt / L, t = bt % L;
            const double gv = double(g[(b * C + c) * L + t]);
            acc[K] += gv;
            for (int64_t k = (K - 1 - t > 0 ? K - 1 - t : 0); k < K; ++k)
                acc[k] += gv * double(x[(b * C + c) * L + t - (K - 1) + k]);
        }
        for (int64_t k = 0; k <= K; ++k) {
            const double total = block_tree_sum<kThreads>(acc[k], scratch);
            if (lane == 0) {
                if (k < K && dw) dw[c * K + k] = T(total);
                if (k == K && dbias) dbias[c] = T(total);
            }
        }
    }
}

}  // namespace

void causal_conv1d_forward(int device, DType dtype, const void* x, const void* w, const void* bias, void* out,
                           int64_t B, int64_t C, int64_t L, int64_t K) {
    if (B * C * L == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "causal_conv1d_forward", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(grid_for(B * C * L), kThreads, s, conv_forward_kernel<T>)(
            static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(bias), static_cast<T*>(out), B, C,
            L, K);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void causal_conv1d_backward(int device, DType dtype, const void* g, const void* x, const void* w, void* dx, void* dw,
                            void* dbias, int64_t B, int64_t C, int64_t L, int64_t K) {
    SSMTUNE_CHECK(K >= 1 && K <= kMaxConvWidth, "causal_conv1d on CUDA: kernel width K = ", K, " outside [1, ",
                  kMaxConvWidth, "]; fix: run this conv on the CPU");
    if (B * C * L == 0) {
        if (dw) fill(device, dw, dtype, C * K, 0.0);
        if (dbias) fill(device, dbias, dtype, C, 0.0);
        return;
    }
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "causal_conv1d_backward", [&](auto tag) {
        using T = decltype(tag);
        if (dx)
            SSMTUNE_LAUNCH(grid_for(B * C * L), kThreads, s, conv_backward_dx_kernel<T>)(
                static_cast<const T*>(g), static_cast<const T*>(w), static_cast<T*>(dx), B, C, L, K);
        if (dw || dbias)
            SSMTUNE_LAUNCH(row_blocks(C), kThreads, s, conv_backward_params_kernel<T>)(
                static_cast<const T*>(g), static_cast<const T*>(x), static_cast<T*>(dw), static_cast<T*>(dbias), B, C,
                L, K);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

}  // namespace ssmtune::cuda
