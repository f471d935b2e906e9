// For the .cu files: launch shapes, the grid-stride loop, and host-side dtype dispatch to kernel templates.
// Not here: the index math itself (cuda/index_math.h, CPU-tested).
#pragma once

#include <cstdint>

#include "cuda/index_math.h"
#include "cuda/runtime_internal.h"
#include "engine/dtype.h"

namespace ssmtune::cuda {

constexpr int kThreads = 256;  // threads per block of the elementwise and row kernels (a power of two)

// SSMTUNE_LAUNCH(grid, block, stream, kernel)(args...) is kernel<<<grid, block, 0, stream>>>(args...); in the host
// emulation (cuda/emulation/host_simt.h) the same launch runs the kernel on a team of host threads.
#ifdef SSMTUNE_CUDA_EMULATION
#define SSMTUNE_LAUNCH(grid, block, stream, ...) ((void)(stream), ::ssmtune_simt::launch(grid, block, __VA_ARGS__))
#else
#define SSMTUNE_LAUNCH(grid, block, stream, ...) __VA_ARGS__<<<grid, block, 0, stream>>>
#endif

// for (i = global thread; i < n; i += grid size)
#define SSMTUNE_GRID_LOOP(i, n)                                                                   \
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);                   \
         i += int64_t(blockDim.x) * gridDim.x)

// Sum of `value` over a block of kBlock lanes (threadIdx.x < kBlock) by the fixed tree of tree_pass
// (cuda/index_math.h, CPU-tested); every lane gets the total. `scratch` holds kBlock values; ends with a barrier, so
// it can be reused at once. Same inputs, same bits: no atomics.
template <int kBlock, class T>
__device__ T block_tree_sum(T value, T* scratch) {
    const int lane = int(threadIdx.x);
    scratch[lane] = value;
    __syncthreads();
    for (int half = kBlock / 2; half > 0; half /= 2) {
        tree_pass(scratch, lane, half);
        __syncthreads();
    }
    const T total = scratch[0];
    __syncthreads();  // every lane has read scratch[0] before it is reused
    return total;
}

inline unsigned grid_for(int64_t n) { return unsigned(launch_blocks(n, kThreads)); }
// Blocks for one-block-per-row kernels (each block loops over rows blockIdx.x, + gridDim.x, ...).
inline unsigned row_blocks(int64_t rows) { return unsigned(launch_blocks(rows, 1)); }

// Calls fn(float{}) or fn(double{}); any other dtype is an Error naming the launcher.
template <class Fn>
void dispatch_f32_f64(DType dtype, const char* launcher, Fn&& fn) {
    if (dtype == DType::F32) fn(float{});
    else if (dtype == DType::F64) fn(double{});
    else SSMTUNE_FAIL(launcher, ": CUDA kernel for F32 and F64 only, got ", dtype_name(dtype));
}

// Calls fn(U{}) with U an unsigned integer of the dtype's size: copies and gathers move bits, not values.
template <class Fn>
void dispatch_bits(DType dtype, Fn&& fn) {
    switch (dtype_size(dtype)) {
        case 1: fn(uint8_t{}); break;
        case 2: fn(uint16_t{}); break;
        case 4: fn(uint32_t{}); break;
        default: fn(uint64_t{}); break;
    }
}

}  // namespace ssmtune::cuda
