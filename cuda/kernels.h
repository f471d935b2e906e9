// Host launchers of the general CUDA kernels (the CUDA backend issue): raw device pointers and sizes, no Eigen,
// no CUDA types (the scalar math comes from ops/elementwise_math.h and autograd/optim_math.h, shared with the CPU), so ops/ and autograd/ include this in every build. Every launcher runs on the device's one
// stream (cuda/runtime.h), asynchronously unless it says otherwise; dtype is F32 or F64 unless it says otherwise.
//
// In a build without CUDA each launcher is an inline body that throws: no tensor can live on a GPU there, so the
// ops' `if (x.device().is_cuda())` branches are never taken, but they still compile and link.
// Kernels: elementwise.cu (fill, strided copy, convert, unary, binary, in-place add), reduce.cu (row sums and
// maxima, the squared-norm partials), softmax.cu (softmax rows, cross-entropy), matmul.cu (cuBLAS GEMM),
// optim.cu (AdamW, SGD, scale). Not here: the SSM kernels (CUDA SSM issue).
#pragma once

#include <cstdint>

#include "autograd/optim_math.h"
#include "cuda/index_math.h"
#include "engine/dtype.h"
#include "ops/elementwise_math.h"

#ifdef SSMTUNE_WITH_CUDA
#define SSMTUNE_LAUNCHER
#define SSMTUNE_LAUNCHER_BODY ;
#else
namespace ssmtune::cuda {
[[noreturn]] void not_built();  // cuda/runtime_stub.cpp
}
#define SSMTUNE_LAUNCHER inline
#define SSMTUNE_LAUNCHER_BODY \
    { ::ssmtune::cuda::not_built(); }
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#endif
#endif

namespace ssmtune::cuda {

// ---- elementwise.cu ----
// dst[i] = value for i < n (any dtype except BOOL).
SSMTUNE_LAUNCHER void fill(int device, void* dst, DType dtype, int64_t n, double value) SSMTUNE_LAUNCHER_BODY
// dst[off0(i)] = src[off1(i)] for every element i of the indexer (operand 0 = dst, 1 = src), any dtype.
SSMTUNE_LAUNCHER void copy_strided(int device, void* dst, const void* src, DType dtype, int64_t n,
                                   const StridedIndexer<2>& ix) SSMTUNE_LAUNCHER_BODY
// dst[i] = src[i] converted (contiguous, n elements), F32/F64/I32/I64 both ways.
SSMTUNE_LAUNCHER void convert(int device, void* dst, DType to, const void* src, DType from, int64_t n) SSMTUNE_LAUNCHER_BODY
SSMTUNE_LAUNCHER void unary_forward(int device, ops::UnaryKind kind, const ops::UnaryParams& prm, DType dtype, const void* x,
                                    void* y, int64_t n) SSMTUNE_LAUNCHER_BODY
// dx = g ⊙ f'(x, y), all contiguous.
SSMTUNE_LAUNCHER void unary_backward(int device, ops::UnaryKind kind, const ops::UnaryParams& prm, DType dtype, const void* g,
                                     const void* x, const void* y, void* dx, int64_t n) SSMTUNE_LAUNCHER_BODY
// out (contiguous, operand 0) = a (operand 1) kind b (operand 2), broadcast through the indexer's strides.
SSMTUNE_LAUNCHER void binary_forward(int device, ops::BinaryKind kind, DType dtype, const void* a, const void* b, void* out,
                                     int64_t n, const StridedIndexer<3>& ix) SSMTUNE_LAUNCHER_BODY
// dst (operand 0) += src (operand 1); each dst element is written by one thread (dst has no stride-0 dim).
SSMTUNE_LAUNCHER void add_inplace(int device, DType dtype, void* dst, const void* src, int64_t n,
                                  const StridedIndexer<2>& ix) SSMTUNE_LAUNCHER_BODY

// ---- reduce.cu ----  x is [rows, count] contiguous; one block per row, fixed order (lane_partial + tree_pass)
SSMTUNE_LAUNCHER void sum_rows(int device, DType dtype, const void* x, void* out, int64_t rows, int64_t count,
                               double scale) SSMTUNE_LAUNCHER_BODY
// out[r] = max of row r, index[r] (I64) = its first position; NaN counts as the largest, as on the CPU.
SSMTUNE_LAUNCHER void max_rows(int device, DType dtype, const void* x, void* out, int64_t* index, int64_t rows,
                               int64_t count) SSMTUNE_LAUNCHER_BODY
// dx [rows, count] = 0 except dx[r, index[r]] = g[r].
SSMTUNE_LAUNCHER void scatter_rows(int device, DType dtype, const void* g, const int64_t* index, void* dx, int64_t rows,
                                   int64_t count) SSMTUNE_LAUNCHER_BODY
// partial[c] = Σ x[i]² over chunk c = [c·chunk, (c+1)·chunk) ∩ [0, n), in double. Synchronous: partial is host memory.
SSMTUNE_LAUNCHER void sum_squares_chunks(int device, DType dtype, const void* x, int64_t n, int64_t chunk,
                                         double* host_partials) SSMTUNE_LAUNCHER_BODY

// ---- softmax.cu ----  x, y: [rows, n] contiguous
SSMTUNE_LAUNCHER void softmax_rows(int device, DType dtype, const void* x, void* y, int64_t rows, int64_t n,
                                   bool log_space) SSMTUNE_LAUNCHER_BODY
// loss_rows[m] = −logp[m, target[m]], 0 where target[m] == ignore_index (targets already range-checked).
SSMTUNE_LAUNCHER void nll_rows(int device, DType dtype, const void* logp, const int64_t* target, void* loss_rows, int64_t rows,
                               int64_t n, int64_t ignore_index) SSMTUNE_LAUNCHER_BODY
// d[m, j] = (exp(logp[m, j]) − [j = target[m]]) · scale, 0 on ignored rows.
SSMTUNE_LAUNCHER void cross_entropy_backward(int device, DType dtype, const void* logp, const int64_t* target, void* d,
                                             int64_t rows, int64_t n, int64_t ignore_index,
                                             double scale) SSMTUNE_LAUNCHER_BODY

// ---- matmul.cu ----  cuBLAS, column-major view of row-major data; TF32 off.
// For each of `batch` entries: C[M, N] (row-major, ld N) = op(A) op(B) (+ C when accumulate), where op(A) is
// [M, K] read from A (row-major [M, K] with ld lda, or [K, M] when trans_a) and likewise B. Strides in elements.
SSMTUNE_LAUNCHER void gemm(int device, DType dtype, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A,
                           int64_t lda, int64_t stride_a, const void* B, int64_t ldb, int64_t stride_b, void* C,
                           int64_t stride_c, int64_t batch, bool accumulate) SSMTUNE_LAUNCHER_BODY

// ---- optim.cu ----  p, g, buffers: n contiguous elements of one dtype
SSMTUNE_LAUNCHER void adamw_update(int device, DType dtype, void* p, const void* g, void* m, void* v, void* vmax, int64_t n,
                                   const autograd::AdamScalars& s) SSMTUNE_LAUNCHER_BODY
SSMTUNE_LAUNCHER void sgd_update(int device, DType dtype, void* p, const void* g, void* buf, int64_t n,
                                 const autograd::SgdScalars& s) SSMTUNE_LAUNCHER_BODY
SSMTUNE_LAUNCHER void scale_inplace(int device, DType dtype, void* x, int64_t n, double factor) SSMTUNE_LAUNCHER_BODY

}  // namespace ssmtune::cuda

#ifndef SSMTUNE_WITH_CUDA
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#endif
#undef SSMTUNE_LAUNCHER
#undef SSMTUNE_LAUNCHER_BODY
