// Small helpers shared by the op files: argument checks, float dispatch, dimension wrapping, threading.
//
// Not here: any math. Every op file includes this and "ops/ops.h".
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "autograd/node.h"
#include "engine/tensor.h"

namespace ssmtune::ops {

// Ops with a CUDA kernel pass kCudaKernel: their inputs may then live on a GPU (else CPU only).
constexpr bool kCudaKernel = true;
// Throws unless t is a defined F32/F64 tensor on the CPU (or on a GPU when the op has a CUDA kernel).
void check_float_input(const Tensor& t, const char* op, const char* arg, bool has_cuda_kernel = false);
// Throws unless a and b share dtype and device (names both tensors).
void check_same_kind(const Tensor& a, const Tensor& b, const char* op);
// Maps a possibly negative dim into [0, rank); throws with the op name when out of range.
int64_t wrap_dim(int64_t dim, int64_t rank, const char* op);

// Calls fn(type_tag<float>) or fn(type_tag<double>).
template <class Fn>
decltype(auto) dispatch_float(DType t, Fn&& fn) {
    if (t == DType::F64) return fn(type_tag<double>{});
    return fn(type_tag<float>{});
}

// Minimum work per thread before OpenMP splits a loop (elements); keeps tiny ops single-threaded.
constexpr int64_t kParallelGrain = 32768;

}  // namespace ssmtune::ops

namespace ssmtune::ops {

// Strides of `t` seen through broadcasting to `out_shape` (0 where t has size 1 or lacks the dim).
Shape broadcast_strides(const Tensor& t, const Shape& out_shape);

// Calls fn(i, offs) for every element i (row-major) of out_shape, where offs[k] is the element offset of
// operand k (given by its broadcast strides and offset). Rows of the last dim are split across threads when
// the tensor is large; each element is visited once, so results do not depend on the thread count.
template <size_t N, class Fn>
void for_each_broadcast(const Shape& out_shape, const std::array<Shape, N>& strides,
                        const std::array<int64_t, N>& offsets, Fn&& fn) {
    const int64_t total = shape_numel(out_shape);
    if (total == 0) return;
    const int64_t rank = int64_t(out_shape.size());
    const int64_t inner = rank == 0 ? 1 : out_shape[size_t(rank - 1)];
    const int64_t rows = total / inner;
#pragma omp parallel for schedule(static) if (total > kParallelGrain)
    for (int64_t row = 0; row < rows; ++row) {
        std::array<int64_t, N> offs = offsets;
        int64_t rest = row;
        for (int64_t d = rank - 2; d >= 0; --d) {
            const int64_t idx = rest % out_shape[size_t(d)];
            rest /= out_shape[size_t(d)];
            for (size_t k = 0; k < N; ++k) offs[k] += idx * strides[k][size_t(d)];
        }
        std::array<int64_t, N> inner_stride{};
        for (size_t k = 0; k < N; ++k) inner_stride[k] = rank == 0 ? 0 : strides[k][size_t(rank - 1)];
        for (int64_t i = 0; i < inner; ++i) {
            fn(row * inner + i, offs);
            for (size_t k = 0; k < N; ++k) offs[k] += inner_stride[k];
        }
    }
}

}  // namespace ssmtune::ops
