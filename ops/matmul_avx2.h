// The float GEMM built for AVX2 + FMA (ops/matmul_avx2.cpp), called by ops/matmul.cpp when engine/cpu_isa.h says
// the CPU has them. Internal, not part of the API. It includes only <cstdint>: matmul_avx2.cpp may include
// nothing that instantiates inline code outside its renamed Eigen (see that file).
#pragma once

#include <cstdint>

namespace ssmtune::detail {
// The float GEMM out[M, N] += op(a) op(b), Eigen built for AVX2 + FMA (ops/matmul_avx2.cpp); op(a) is a[M, K] with
// leading dimension lda, or the transpose of a row-major [K, M] when a_transposed (likewise b, [K, N]).
void gemm_accumulate_avx2(float* out, int64_t M, int64_t N, int64_t K, const float* a, int64_t lda,
                          bool a_transposed, const float* b, int64_t ldb, bool b_transposed);
}  // namespace ssmtune::detail
