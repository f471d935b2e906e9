// Elementwise CUDA kernels (cuda/kernels.h): fill, strided copy, dtype conversion, the unary ops forward and
// backward, the broadcast binary ops and in-place accumulation. Grid-stride loops, one thread per element;
// no reductions, so every result is the same whatever the launch shape.
// The unary math is ops/elementwise_math.h, the same functions the CPU loops call (in double, rounded to T);
// broadcasting is StridedIndexer from cuda/index_math.h (CPU-tested). Not here: reductions (reduce.cu).
#include <cstring>

#include "cuda/kernels.h"
#include "cuda/launch.cuh"

namespace ssmtune::cuda {

namespace {

template <class U>
__global__ void fill_kernel(U* dst, int64_t n, U value) {
    SSMTUNE_GRID_LOOP(i, n) dst[i] = value;
}

template <class U>
__global__ void copy_strided_kernel(U* dst, const U* src, int64_t n, StridedIndexer<2> ix) {
    SSMTUNE_GRID_LOOP(i, n) {
        int64_t off[2];
        ix.operand_offsets(i, off);
        dst[off[0]] = src[off[1]];
    }
}

template <class To, class From>
__global__ void convert_kernel(To* dst, const From* src, int64_t n) {
    SSMTUNE_GRID_LOOP(i, n) dst[i] = To(src[i]);
}

template <class T>
__global__ void unary_forward_kernel(ops::UnaryKind kind, ops::UnaryParams prm, const T* x, T* y, int64_t n) {
    SSMTUNE_GRID_LOOP(i, n) y[i] = T(ops::unary_value(kind, double(x[i]), prm));
}

template <class T>
__global__ void unary_backward_kernel(ops::UnaryKind kind, ops::UnaryParams prm, const T* g, const T* x, const T* y,
                                      T* dx, int64_t n) {
    SSMTUNE_GRID_LOOP(i, n) dx[i] = T(double(g[i]) * ops::unary_slope(kind, double(x[i]), double(y[i]), prm));
}

template <class T>
__global__ void binary_kernel(ops::BinaryKind kind, const T* a, const T* b, T* out, int64_t n, StridedIndexer<3> ix) {
    SSMTUNE_GRID_LOOP(i, n) {
        int64_t off[3];
        ix.operand_offsets(i, off);
        out[off[0]] = ops::binary_value<T>(kind, a[off[1]], b[off[2]]);
    }
}

template <class T>
__global__ void add_inplace_kernel(T* dst, const T* src, int64_t n, StridedIndexer<2> ix) {
    SSMTUNE_GRID_LOOP(i, n) {
        int64_t off[2];
        ix.operand_offsets(i, off);
        dst[off[0]] += src[off[1]];
    }
}

// Calls fn(T{}) for the dtypes convert() handles.
template <class Fn>
void dispatch_numeric(DType dtype, Fn&& fn) {
    switch (dtype) {
        case DType::F32: fn(float{}); break;
        case DType::F64: fn(double{}); break;
        case DType::I32: fn(int32_t{}); break;
        case DType::I64: fn(int64_t{}); break;
        default:
            SSMTUNE_FAIL("convert: CUDA conversion between F32, F64, I32 and I64 only, got ", dtype_name(dtype),
                         "; fix: convert on the host (.to(Device::cpu()).to(dtype))");
    }
}

}  // namespace

void fill(int device, void* dst, DType dtype, int64_t n, double value) {
    if (n == 0) return;
    // The value's bits in the dtype, made on the host with the engine's own conversions.
    uint64_t bits = 0;
    dispatch_any_dtype(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T v = T(value);
        std::memcpy(&bits, &v, sizeof(T));
    });
    cudaStream_t s = stream(device);
    dispatch_bits(dtype, [&](auto u) {
        using U = decltype(u);
        U pattern;
        std::memcpy(&pattern, &bits, sizeof(U));
        SSMTUNE_LAUNCH(grid_for(n), kThreads, s, fill_kernel<U>)(static_cast<U*>(dst), n, pattern);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void copy_strided(int device, void* dst, const void* src, DType dtype, int64_t n, const StridedIndexer<2>& ix) {
    if (n == 0) return;
    cudaStream_t s = stream(device);
    dispatch_bits(dtype, [&](auto u) {
        using U = decltype(u);
        SSMTUNE_LAUNCH(grid_for(n), kThreads, s, copy_strided_kernel<U>)(
            static_cast<U*>(dst), static_cast<const U*>(src), n, ix);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void convert(int device, void* dst, DType to, const void* src, DType from, int64_t n) {
    if (n == 0) return;
    cudaStream_t s = stream(device);
    dispatch_numeric(to, [&](auto to_tag) {
        dispatch_numeric(from, [&](auto from_tag) {
            using To = decltype(to_tag);
            using From = decltype(from_tag);
            SSMTUNE_LAUNCH(grid_for(n), kThreads, s, convert_kernel<To, From>)(
                static_cast<To*>(dst), static_cast<const From*>(src), n);
        });
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void unary_forward(int device, ops::UnaryKind kind, const ops::UnaryParams& prm, DType dtype, const void* x, void* y,
                   int64_t n) {
    if (n == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "unary_forward", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(grid_for(n), kThreads, s, unary_forward_kernel<T>)(
            kind, prm, static_cast<const T*>(x), static_cast<T*>(y), n);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void unary_backward(int device, ops::UnaryKind kind, const ops::UnaryParams& prm, DType dtype, const void* g,
                    const void* x, const void* y, void* dx, int64_t n) {
    if (n == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "unary_backward", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(grid_for(n), kThreads, s, unary_backward_kernel<T>)(
            kind, prm, static_cast<const T*>(g), static_cast<const T*>(x), static_cast<const T*>(y),
            static_cast<T*>(dx), n);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void binary_forward(int device, ops::BinaryKind kind, DType dtype, const void* a, const void* b, void* out, int64_t n,
                    const StridedIndexer<3>& ix) {
    if (n == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "binary_forward", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(grid_for(n), kThreads, s, binary_kernel<T>)(
            kind, static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), n, ix);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void add_inplace(int device, DType dtype, void* dst, const void* src, int64_t n, const StridedIndexer<2>& ix) {
    if (n == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "add_inplace", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(grid_for(n), kThreads, s, add_inplace_kernel<T>)(
            static_cast<T*>(dst), static_cast<const T*>(src), n, ix);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

}  // namespace ssmtune::cuda
