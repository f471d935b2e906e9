// S4D on the GPU (cuda/kernels.h): the Vandermonde kernel K[h, l] = 2·Re Σ_n W_n e^{λ_n l} and its O(H·M·L) backward
// sums, and the causal long convolution y = K * u with both adjoints, direct or through cuFFT.
//
// The per-mode algebra (W, λ from the parameters; the chain rule from the sums back to them) stays on the host in
// ops/s4d_kernel.cpp, shared with the CPU; here is only what grows with L. Every phase λ·l is formed in double and
// exponentiated directly, as on the CPU. K: one thread per (h, l), modes summed in order (the CPU's order). Backward
// sums: one block per (h, n), lanes over l in double, the fixed tree of cuda/index_math.h.
// Long convolution: direct sums in double, one thread per output, in the CPU's order (the kernel gradient sums the
// batch in order too); or real FFTs in double (cuFFT D2Z/Z2D, size n = next_pow2(L + Lk − 1), zero padding removes
// the wrap-around), products in double, the batch of the kernel gradient summed in order. No atomics.
// Not here: the initial-state response (CPU only), the DPLR kernel of full S4.
#include "cuda/kernels.h"
#include "cuda/launch.cuh"

namespace ssmtune::cuda {

namespace {

template <class T>
__global__ void vandermonde_kernel(const double* modes, T* K, int64_t H, int64_t M, int64_t L) {
    SSMTUNE_GRID_LOOP(i, H * L) {
        const int64_t h = i / L, l = i % L;
        double acc = 0;
        for (int64_t n = 0; n < M; ++n) {
            const double* md = modes + (h * M + n) * 4;
            const double mag = exp(md[2] * double(l)), ph = md[3] * double(l);
            acc += 2.0 * (md[0] * mag * cos(ph) - md[1] * mag * sin(ph));
        }
        K[i] = T(acc);
    }
}

template <class T>
__global__ void vandermonde_backward_kernel(const double* modes, const T* gK, double* sums, int64_t H, int64_t M,
                                            int64_t L) {
    __shared__ double scratch[kThreads];
    const int lane = int(threadIdx.x);
    for (int64_t hn = blockIdx.x; hn < H * M; hn += gridDim.x) {
        const int64_t h = hn / M;
        const double* md = modes + hn * 4;
        double part[4] = {0, 0, 0, 0};  // Σ gK conj(p): re, im; Σ gK l conj(p): re, im
        for (int64_t l = lane; l < L; l += kThreads) {
            const double mag = exp(md[2] * double(l)), ph = md[3] * double(l), g = double(gK[h * L + l]);
            const double re = mag * cos(ph) * g, im = -mag * sin(ph) * g;
            part[0] += re;
            part[1] += im;
            part[2] += re * double(l);
            part[3] += im * double(l);
        }
        for (int k = 0; k < 4; ++k) {
            const double total = block_tree_sum<kThreads>(part[k], scratch);
            if (lane == 0) sums[hn * 4 + k] = total;
        }
    }
}

// Direct sums, in double, in the CPU's order.
template <class T>
__global__ void conv_direct_kernel(int mode, const T* a, const T* k, T* out, int64_t B, int64_t H, int64_t L,
                                   int64_t Lk) {
    if (mode == 2) {  // dK[h, l] = Σ_b Σ_{t ≥ l} a[b, h, t] k[b, h, t − l]
        SSMTUNE_GRID_LOOP(i, H * Lk) {
            const int64_t h = i / Lk, l = i % Lk;
            double total = 0;
            for (int64_t b = 0; b < B; ++b) {
                const T *ab = a + (b * H + h) * L, *kb = k + (b * H + h) * L;
                double acc = 0;
                for (int64_t t = l; t < L; ++t) acc += double(ab[t]) * double(kb[t - l]);
                total += acc;
            }
            out[i] = T(total);
        }
        return;
    }
    SSMTUNE_GRID_LOOP(i, B * H * L) {
        const int64_t t = i % L, h = (i / L) % H;
        const T* ar = a + (i - t);
        const T* kh = k + h * Lk;
        double acc = 0;
        if (mode == 0) {
            for (int64_t l = 0; l <= t && l < Lk; ++l) acc += double(kh[l]) * double(ar[t - l]);
        } else {
            for (int64_t l = 0; l < Lk && t + l < L; ++l) acc += double(kh[l]) * double(ar[t + l]);
        }
        out[i] = T(acc);
    }
}

template <class T>
__global__ void pad_rows_kernel(const T* src, int64_t rows, int64_t len, int64_t n, double* dst) {
    SSMTUNE_GRID_LOOP(i, rows * n) {
        const int64_t r = i / n, c = i % n;
        dst[i] = c < len ? double(src[r * len + c]) : 0.0;
    }
}

// P[r, f] = A[r, f] · (conj) K[r mod k_rows, f], complex doubles; rows of m = n/2 + 1 frequencies.
__global__ void spectrum_product_kernel(const cufftDoubleComplex* A, const cufftDoubleComplex* K, cufftDoubleComplex* P,
                                        int64_t rows, int64_t k_rows, int64_t m, bool conj_k) {
    SSMTUNE_GRID_LOOP(i, rows * m) {
        const int64_t r = i / m, f = i % m;
        const cufftDoubleComplex x = A[i], y = K[(r % k_rows) * m + f];
        const double yi = conj_k ? -y.y : y.y;
        P[i] = cufftDoubleComplex{x.x * y.x - x.y * yi, x.x * yi + x.y * y.x};
    }
}

// out[r, c] = p[r, c] / n for c < len (modes 0 and 1).
template <class T>
__global__ void take_rows_kernel(const double* p, int64_t rows, int64_t n, int64_t len, T* out) {
    SSMTUNE_GRID_LOOP(i, rows * len) out[i] = T(p[(i / len) * n + i % len] / double(n));
}

// out[h, l] = Σ_b p[(b·H + h), l] / n, the batch in order (mode 2).
template <class T>
__global__ void sum_batch_rows_kernel(const double* p, int64_t B, int64_t H, int64_t n, int64_t Lk, T* out) {
    SSMTUNE_GRID_LOOP(i, H * Lk) {
        const int64_t h = i / Lk, l = i % Lk;
        double total = 0;
        for (int64_t b = 0; b < B; ++b) total += p[(b * H + h) * n + l] / double(n);
        out[i] = T(total);
    }
}

int64_t next_pow2(int64_t v) {
    int64_t n = 1;
    while (n < v) n *= 2;
    return n;
}

// A stream-ordered scratch buffer, freed when it goes out of scope.
struct Scratch {
    void* p = nullptr;
    cudaStream_t s;
    Scratch(size_t bytes, cudaStream_t stream) : s(stream) { SSMTUNE_CUDA_CHECK(cudaMallocAsync(&p, bytes, s)); }
    ~Scratch() { cudaFreeAsync(p, s); }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
};

template <class T>
void long_conv_fft(int device, cudaStream_t s, int mode, const T* a, const T* k, T* out, int64_t B, int64_t H,
                   int64_t L, int64_t Lk) {
    const int64_t n = next_pow2(L + Lk - 1), m = n / 2 + 1, rows = B * H;
    const int64_t k_rows = mode == 2 ? rows : H, k_len = mode == 2 ? L : Lk;
    SSMTUNE_CHECK(n <= INT32_MAX && rows <= INT32_MAX, "long_conv on CUDA: FFT size ", n, " x ", rows,
                  " rows exceeds cuFFT's 32-bit sizes; fix: use the direct algorithm or a shorter input");
    Scratch ra(size_t(rows * n) * sizeof(double), s), rk(size_t(k_rows * n) * sizeof(double), s);
    Scratch fa(size_t(rows * m) * sizeof(cufftDoubleComplex), s), fk(size_t(k_rows * m) * sizeof(cufftDoubleComplex), s);
    auto* ra_p = static_cast<double*>(ra.p);
    auto* rk_p = static_cast<double*>(rk.p);
    auto* fa_p = static_cast<cufftDoubleComplex*>(fa.p);
    auto* fk_p = static_cast<cufftDoubleComplex*>(fk.p);
    SSMTUNE_LAUNCH(grid_for(rows * n), kThreads, s, pad_rows_kernel<T>)(a, rows, L, n, ra_p);
    SSMTUNE_LAUNCH(grid_for(k_rows * n), kThreads, s, pad_rows_kernel<T>)(k, k_rows, k_len, n, rk_p);
    SSMTUNE_CUDA_LAUNCH_CHECK();
    SSMTUNE_CUFFT_CHECK(lib::cufftExecD2Z(fft_plan(device, int(n), int(rows), false, true), ra_p, fa_p));
    SSMTUNE_CUFFT_CHECK(lib::cufftExecD2Z(fft_plan(device, int(n), int(k_rows), false, true), rk_p, fk_p));
    SSMTUNE_LAUNCH(grid_for(rows * m), kThreads, s, spectrum_product_kernel)(
        fa_p, fk_p, fa_p, rows, k_rows, m, mode != 0);
    SSMTUNE_CUDA_LAUNCH_CHECK();
    SSMTUNE_CUFFT_CHECK(lib::cufftExecZ2D(fft_plan(device, int(n), int(rows), true, true), fa_p, ra_p));
    if (mode == 2) SSMTUNE_LAUNCH(grid_for(H * Lk), kThreads, s, sum_batch_rows_kernel<T>)(ra_p, B, H, n, Lk, out);
    else SSMTUNE_LAUNCH(grid_for(rows * L), kThreads, s, take_rows_kernel<T>)(ra_p, rows, n, L, out);
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

}  // namespace

void s4d_vandermonde(int device, DType dtype, const double* modes, void* K, int64_t H, int64_t M, int64_t L) {
    if (H * L == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "s4d_vandermonde", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(grid_for(H * L), kThreads, s, vandermonde_kernel<T>)(modes, static_cast<T*>(K), H, M, L);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void s4d_vandermonde_backward(int device, DType dtype, const double* modes, const void* gK, double* sums, int64_t H,
                              int64_t M, int64_t L) {
    if (H * M == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "s4d_vandermonde_backward", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(row_blocks(H * M), kThreads, s, vandermonde_backward_kernel<T>)(
            modes, static_cast<const T*>(gK), sums, H, M, L);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void long_conv(int device, DType dtype, int mode, bool fft, const void* a, const void* k, void* out, int64_t B,
               int64_t H, int64_t L, int64_t Lk) {
    const int64_t total = mode == 2 ? H * Lk : B * H * L;
    if (total == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "long_conv", [&](auto tag) {
        using T = decltype(tag);
        const T *pa = static_cast<const T*>(a), *pk = static_cast<const T*>(k);
        T* po = static_cast<T*>(out);
        if (fft && L > 0 && Lk > 0 && B > 0) {
            long_conv_fft<T>(device, s, mode, pa, pk, po, B, H, L, Lk);
        } else if (B == 0 || L == 0) {  // an empty sum
            fill(device, out, dtype, total, 0.0);
        } else {
            SSMTUNE_LAUNCH(grid_for(total), kThreads, s, conv_direct_kernel<T>)(mode, pa, pk, po, B, H, L, Lk);
            SSMTUNE_CUDA_LAUNCH_CHECK();
        }
    });
}

}  // namespace ssmtune::cuda
