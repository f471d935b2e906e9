// GEMM on the GPU (cuda/kernels.h) through cuBLAS's strided-batched GEMM, float or double.
//
// Our matrices are row-major; cuBLAS is column-major. A row-major C[M, N] is a column-major C^T[N, M], and
// C^T = op(B)^T op(A)^T, so the call passes B first with (m, n, k) = (N, M, K): a row-major operand read as is
// becomes CUBLAS_OP_N, one read transposed becomes CUBLAS_OP_T, with the same leading dimensions. The handle's math
// mode is the default (no TF32), so float GEMMs round like the CPU's, up to summation order.
// Not here: operand layout choice and batching (ops/matmul.cpp), half precision, cuBLASLt epilogues.
#include "cuda/kernels.h"
#include "cuda/launch.cuh"

namespace ssmtune::cuda {

void gemm(int device, DType dtype, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A,
          int64_t lda, int64_t stride_a, const void* B, int64_t ldb, int64_t stride_b, void* C, int64_t stride_c,
          int64_t batch, bool accumulate) {
    if (M == 0 || N == 0 || batch == 0) return;
    if (K == 0) {  // an empty sum: C = 0 (or unchanged when accumulating)
        if (!accumulate) fill(device, C, dtype, stride_c * (batch - 1) + M * N, 0.0);
        return;
    }
    SSMTUNE_CHECK(M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX && batch <= INT32_MAX,
                  "gemm: a dimension exceeds cuBLAS's 32-bit sizes (M ", M, ", N ", N, ", K ", K, ", batch ", batch,
                  "); fix: split the product");
    cublasHandle_t h = cublas(device);
    const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    dispatch_f32_f64(dtype, "gemm", [&](auto tag) {
        using T = decltype(tag);
        const T alpha = T(1), beta = accumulate ? T(1) : T(0);
        if constexpr (sizeof(T) == 4) {
            SSMTUNE_CUBLAS_CHECK(lib::cublasSgemmStridedBatched(
                h, op_b, op_a, int(N), int(M), int(K), &alpha, static_cast<const float*>(B), int(ldb), stride_b,
                static_cast<const float*>(A), int(lda), stride_a, &beta, static_cast<float*>(C), int(N), stride_c,
                int(batch)));
        } else {
            SSMTUNE_CUBLAS_CHECK(lib::cublasDgemmStridedBatched(
                h, op_b, op_a, int(N), int(M), int(K), &alpha, static_cast<const double*>(B), int(ldb), stride_b,
                static_cast<const double*>(A), int(lda), stride_a, &beta, static_cast<double*>(C), int(N), stride_c,
                int(batch)));
        }
    });
}

}  // namespace ssmtune::cuda
