// Gathers, scatters and masks on the GPU (cuda/kernels.h): index_select (and embedding, which is index_select of
// the table's rows) forward and backward, the nonzero mask and masked select of where/masked_fill, dropout's mask.
//
// The scatter-add backward uses no atomics: the host groups the positions by target row (build_index_lists in
// cuda/index_math.h, CPU-tested) and one thread per target element sums its group in increasing position, from
// zero, in T: the same additions in the same order as the CPU loop, so the results are bit-identical to it.
// Dropout's mask is philox_uniform(seed, first + i) >= p, the CPU's draw for element i (engine/rng.h).
// Not here: gathers with a full index tensor, padding_idx.
#include "cuda/kernels.h"
#include "cuda/launch.cuh"
#include "engine/rng.h"

namespace ssmtune::cuda {

namespace {

template <class U>
__global__ void index_select_kernel(const U* x, const int64_t* idx, U* out, int64_t P, int64_t n, int64_t K,
                                    int64_t Q) {
    SSMTUNE_GRID_LOOP(i, P * K * Q) {
        const int64_t q = i % Q, pk = i / Q, k = pk % K, p = pk / K;
        out[i] = x[(p * n + idx[k]) * Q + q];
    }
}

template <class T>
__global__ void index_select_backward_kernel(const T* g, const int64_t* offsets, const int64_t* positions, T* dx,
                                             int64_t P, int64_t n, int64_t K, int64_t Q) {
    SSMTUNE_GRID_LOOP(i, P * n * Q) {
        const int64_t q = i % Q, pr = i / Q, r = pr % n, p = pr / n;
        T acc = T(0);
        for (int64_t m = offsets[r]; m < offsets[r + 1]; ++m) acc += g[(p * K + positions[m]) * Q + q];
        dx[i] = acc;
    }
}

template <class C>
__device__ inline bool is_nonzero(C v) { return v != C(0); }

template <class C>
__global__ void nonzero_mask_kernel(const C* cond, uint8_t* mask, int64_t n, StridedIndexer<2> ix) {
    SSMTUNE_GRID_LOOP(i, n) {
        int64_t off[2];
        ix.operand_offsets(i, off);
        mask[off[0]] = is_nonzero(cond[off[1]]) ? 1 : 0;
    }
}

// F16 / BF16 read as bits: nonzero unless ±0 (NaN is nonzero).
__global__ void nonzero_mask_16bit_kernel(const uint16_t* cond, uint8_t* mask, int64_t n, StridedIndexer<2> ix) {
    SSMTUNE_GRID_LOOP(i, n) {
        int64_t off[2];
        ix.operand_offsets(i, off);
        mask[off[0]] = (cond[off[1]] & 0x7FFFu) != 0 ? 1 : 0;
    }
}

template <class T>
__global__ void select_kernel(const uint8_t* mask, bool keep, const T* a, const T* b, T* out, int64_t n,
                              StridedIndexer<3> ix) {
    SSMTUNE_GRID_LOOP(i, n) {
        int64_t off[3];
        ix.operand_offsets(i, off);
        out[off[0]] = (mask[i] != 0) == keep ? a[off[1]] : b[off[2]];
    }
}

__global__ void dropout_mask_kernel(uint8_t* mask, int64_t n, uint64_t seed, uint64_t first, double p) {
    SSMTUNE_GRID_LOOP(i, n) mask[i] = philox_uniform(seed, first + uint64_t(i)) >= p ? 1 : 0;
}

template <class T>
__global__ void apply_mask_kernel(const T* src, const uint8_t* mask, T scale, T* out, int64_t n) {
    SSMTUNE_GRID_LOOP(i, n) out[i] = mask[i] ? src[i] * scale : T(0);
}

}  // namespace

void index_select_forward(int device, DType dtype, const void* x, const int64_t* idx, void* out, int64_t P, int64_t n,
                          int64_t K, int64_t Q) {
    const int64_t total = P * K * Q;
    if (total == 0) return;
    cudaStream_t s = stream(device);
    dispatch_bits(dtype, [&](auto u) {
        using U = decltype(u);
        SSMTUNE_LAUNCH(grid_for(total), kThreads, s, index_select_kernel<U>)(
            static_cast<const U*>(x), idx, static_cast<U*>(out), P, n, K, Q);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void index_select_backward(int device, DType dtype, const void* g, const int64_t* offsets, const int64_t* positions,
                           void* dx, int64_t P, int64_t n, int64_t K, int64_t Q) {
    const int64_t total = P * n * Q;
    if (total == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "index_select_backward", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(grid_for(total), kThreads, s, index_select_backward_kernel<T>)(
            static_cast<const T*>(g), offsets, positions, static_cast<T*>(dx), P, n, K, Q);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void nonzero_mask(int device, DType cond_dtype, const void* cond, uint8_t* mask, int64_t n, const StridedIndexer<2>& ix) {
    if (n == 0) return;
    cudaStream_t s = stream(device);
    const unsigned grid = grid_for(n);
    const auto launch = [&](auto tag) {  // the condition's element type C
        using C = decltype(tag);
        SSMTUNE_LAUNCH(grid, kThreads, s, nonzero_mask_kernel<C>)(static_cast<const C*>(cond), mask, n, ix);
    };
    switch (cond_dtype) {
        case DType::F32: launch(float{}); break;
        case DType::F64: launch(double{}); break;
        case DType::I64: launch(int64_t{}); break;
        case DType::I32: launch(int32_t{}); break;
        case DType::I16: launch(int16_t{}); break;
        case DType::I8: launch(int8_t{}); break;
        case DType::U8:
        case DType::BOOL: launch(uint8_t{}); break;
        case DType::F16:
        case DType::BF16:
            SSMTUNE_LAUNCH(grid, kThreads, s, nonzero_mask_16bit_kernel)(
                static_cast<const uint16_t*>(cond), mask, n, ix);
            break;
    }
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void select_by_mask(int device, DType dtype, const uint8_t* mask, bool keep, const void* a, const void* b, void* out,
                    int64_t n, const StridedIndexer<3>& ix) {
    if (n == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "select_by_mask", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(grid_for(n), kThreads, s, select_kernel<T>)(
            mask, keep, static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), n, ix);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void dropout_mask(int device, uint8_t* mask, int64_t n, uint64_t seed, uint64_t first, double p) {
    if (n == 0) return;
    SSMTUNE_LAUNCH(grid_for(n), kThreads, stream(device), dropout_mask_kernel)(mask, n, seed, first, p);
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void apply_mask(int device, DType dtype, const void* src, const uint8_t* mask, double scale, void* out, int64_t n) {
    if (n == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "apply_mask", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(grid_for(n), kThreads, s, apply_mask_kernel<T>)(
            static_cast<const T*>(src), mask, T(scale), static_cast<T*>(out), n);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

}  // namespace ssmtune::cuda
