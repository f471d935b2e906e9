// The float GEMM of matmul.cpp built a second time, for CPUs with AVX2 and FMA (engine/cpu_isa.h): Eigen is
// header-only and chooses its SIMD width when compiled, so this file alone is compiled with -mavx2 -mfma
// (CMakeLists.txt), and matmul.cpp calls it when cpu_isa() is avx2.
//
// Eigen is included under another namespace name (`Eigen` is a macro for ssmtune_eigen_avx2 in this file). Inline
// and template functions are emitted once per object file and the linker keeps one copy per name; were the names
// the same as matmul.cpp's baseline Eigen, the linker could keep this file's AVX2 copy for both, and the baseline
// path would then run AVX2 instructions on a CPU without them. So this file includes nothing but Eigen, <cstdint>
// and two declaration-only headers, and the ctest cpu_dispatch_weak_symbols (tests/check_avx2_symbols.cmake) checks
// its object's weak functions for AVX code. Not here: other types (float64 keeps the baseline GEMM), threading
// decisions (those stay in matmul.cpp; Eigen threads a lone GEMM as there).
#include "engine/cpu_isa.h"
#include "ops/matmul_avx2.h"

#if SSMTUNE_CPU_DISPATCH

#include <cstdint>

#define Eigen ssmtune_eigen_avx2
#include <Eigen/Core>

namespace ssmtune::detail {

namespace {
using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const RowMajor, Eigen::Unaligned, Eigen::OuterStride<>>;
using Map = Eigen::Map<RowMajor>;
}  // namespace

void gemm_accumulate_avx2(float* out, int64_t M, int64_t N, int64_t K, const float* a, int64_t lda,
                          bool a_transposed, const float* b, int64_t ldb, bool b_transposed) {
    Map o(out, M, N);
    const auto with_b = [&](const auto& am) {
        if (b_transposed) o.noalias() += am * ConstMap(b, N, K, Eigen::OuterStride<>(ldb)).transpose();
        else o.noalias() += am * ConstMap(b, K, N, Eigen::OuterStride<>(ldb));
    };
    if (a_transposed) with_b(ConstMap(a, K, M, Eigen::OuterStride<>(lda)).transpose());
    else with_b(ConstMap(a, M, K, Eigen::OuterStride<>(lda)));
}

}  // namespace ssmtune::detail

#endif  // SSMTUNE_CPU_DISPATCH
