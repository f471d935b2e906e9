// Row reductions on the GPU (cuda/kernels.h): sums (sum, mean, the broadcast adjoint), maxima with their first
// index, the one-hot scatter of max's backward, and the per-chunk squared norms of grad_norm.
//
// Deterministic, no atomics: one block of kThreads lanes per row; lane l sums elements l, l + kThreads, ... in
// order, then a shared-memory tree halves the lanes (lane_partial / tree_pass in cuda/index_math.h, which the CPU
// tests run). Rows shorter than kRowsPerThreadBelow are summed by one thread each, in index order. Sums accumulate
// in double for F32 and F64 (the CPU sums F32 rows in float, so the two differ by that rounding).
// Not here: the reduced-dims permutation (ops/reduce.cpp makes rows contiguous first).
#include <vector>

#include "cuda/kernels.h"
#include "cuda/launch.cuh"

namespace ssmtune::cuda {

namespace {

constexpr int64_t kRowsPerThreadBelow = 64;

template <class T>
__global__ void sum_rows_block_kernel(const T* x, T* out, int64_t rows, int64_t count, double scale) {
    __shared__ double partials[kThreads];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        partials[threadIdx.x] = lane_partial<double>(x + r * count, count, int(threadIdx.x), kThreads);
        __syncthreads();
        for (int half = kThreads / 2; half > 0; half /= 2) {
            tree_pass(partials, int(threadIdx.x), half);
            __syncthreads();
        }
        if (threadIdx.x == 0) out[r] = T(partials[0] * scale);
        __syncthreads();  // partials[0] is read before the next row overwrites it
    }
}

template <class T>
__global__ void sum_rows_thread_kernel(const T* x, T* out, int64_t rows, int64_t count, double scale) {
    SSMTUNE_GRID_LOOP(r, rows) out[r] = T(lane_partial<double>(x + r * count, count, 0, 1) * scale);
}

template <class T>
__global__ void max_rows_kernel(const T* x, T* out, int64_t* index, int64_t rows, int64_t count) {
    __shared__ T best[kThreads];
    __shared__ int64_t best_index[kThreads];
    const int lane = int(threadIdx.x);
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* row = x + r * count;
        T b = row[0];  // count > 0 (checked by the op)
        int64_t bi = 0;
        for (int64_t j = lane; j < count; j += kThreads)
            if (max_candidate_wins(row[j], j, b, bi)) { b = row[j]; bi = j; }
        best[lane] = b;
        best_index[lane] = bi;
        __syncthreads();
        for (int half = kThreads / 2; half > 0; half /= 2) {
            if (lane < half && max_candidate_wins(best[lane + half], best_index[lane + half], best[lane], best_index[lane])) {
                best[lane] = best[lane + half];
                best_index[lane] = best_index[lane + half];
            }
            __syncthreads();
        }
        if (lane == 0) {
            out[r] = best[0];
            index[r] = best_index[0];
        }
        __syncthreads();
    }
}

template <class T>
__global__ void scatter_rows_kernel(const T* g, const int64_t* index, T* dx, int64_t rows, int64_t count) {
    SSMTUNE_GRID_LOOP(i, rows * count) {
        const int64_t r = i / count;
        dx[i] = (i - r * count) == index[r] ? g[r] : T(0);
    }
}

template <class T>
__global__ void sum_squares_kernel(const T* x, int64_t n, int64_t chunk, double* partial_out) {
    __shared__ double partials[kThreads];
    const int64_t chunks = (n + chunk - 1) / chunk;
    for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
        const int64_t start = c * chunk, len = (start + chunk < n ? chunk : n - start);
        double acc = 0;
        for (int64_t j = threadIdx.x; j < len; j += kThreads) acc += double(x[start + j]) * double(x[start + j]);
        partials[threadIdx.x] = acc;
        __syncthreads();
        for (int half = kThreads / 2; half > 0; half /= 2) {
            tree_pass(partials, int(threadIdx.x), half);
            __syncthreads();
        }
        if (threadIdx.x == 0) partial_out[c] = partials[0];
        __syncthreads();
    }
}

}  // namespace

void sum_rows(int device, DType dtype, const void* x, void* out, int64_t rows, int64_t count, double scale) {
    if (rows == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "sum_rows", [&](auto tag) {
        using T = decltype(tag);
        if (count < kRowsPerThreadBelow)
            SSMTUNE_LAUNCH(grid_for(rows), kThreads, s, sum_rows_thread_kernel<T>)(
                static_cast<const T*>(x), static_cast<T*>(out), rows, count, scale);
        else
            SSMTUNE_LAUNCH(row_blocks(rows), kThreads, s, sum_rows_block_kernel<T>)(
                static_cast<const T*>(x), static_cast<T*>(out), rows, count, scale);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void max_rows(int device, DType dtype, const void* x, void* out, int64_t* index, int64_t rows, int64_t count) {
    if (rows == 0) return;
    SSMTUNE_CHECK(count > 0, "max_rows: rows of length 0 have no maximum");
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "max_rows", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(row_blocks(rows), kThreads, s, max_rows_kernel<T>)(
            static_cast<const T*>(x), static_cast<T*>(out), index, rows, count);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void scatter_rows(int device, DType dtype, const void* g, const int64_t* index, void* dx, int64_t rows, int64_t count) {
    if (rows * count == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "scatter_rows", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(grid_for(rows * count), kThreads, s, scatter_rows_kernel<T>)(
            static_cast<const T*>(g), index, static_cast<T*>(dx), rows, count);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void sum_squares_chunks(int device, DType dtype, const void* x, int64_t n, int64_t chunk, double* host_partials) {
    const int64_t chunks = (n + chunk - 1) / chunk;
    if (chunks == 0) return;
    cudaStream_t s = stream(device);
    double* partials = nullptr;
    SSMTUNE_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&partials), size_t(chunks) * sizeof(double), s));
    dispatch_f32_f64(dtype, "sum_squares_chunks", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(row_blocks(chunks), kThreads, s, sum_squares_kernel<T>)(
            static_cast<const T*>(x), n, chunk, partials);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
    SSMTUNE_CUDA_CHECK(cudaMemcpyAsync(host_partials, partials, size_t(chunks) * sizeof(double),
                                       cudaMemcpyDeviceToHost, s));
    SSMTUNE_CUDA_CHECK(cudaFreeAsync(partials, s));
    SSMTUNE_CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace ssmtune::cuda
