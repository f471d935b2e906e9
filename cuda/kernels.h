// Host launchers of the CUDA kernels: raw device pointers and sizes, no Eigen, no CUDA types (the scalar math comes
// from ops/elementwise_math.h, autograd/optim_math.h and ops/scan_combine.h, shared with the CPU), so ops/ and
// autograd/ include this in every build. Every launcher takes the CUDA device index first and runs on that device's
// one stream (cuda/runtime.h), asynchronously unless it says otherwise; dtype is F32 or F64 unless it says otherwise.
//
// In a build without CUDA each launcher is an inline body that throws: no tensor can live on a GPU there, so the
// ops' `if (x.device().is_cuda())` branches are never taken, but they still compile and link.
// Kernels: elementwise.cu (fill, strided copy, convert, unary, binary, in-place add), reduce.cu (row sums and
// maxima, the squared-norm partials), softmax.cu (softmax rows, cross-entropy), matmul.cu (cuBLAS GEMM),
// gather.cu (index_select/embedding, masks, where, dropout), norm.cu (rmsnorm, layernorm), conv1d.cu (Mamba's
// depthwise causal conv), optim.cu (AdamW, SGD, scale); the SSM kernels selective_scan.cu, longhorn_scan.cu
// and s4d.cu.
// Not here: anything without its own kernel (the S4D initial-state response reuses the Vandermonde kernels shifted by
// one power, ops/s4d_state.cpp; SURM's structured products run as a GEMM). The host emulation compiles these same
// declarations into ssmtune::cuda_emu (cuda/emulation/host_simt.h, tests/emulation/emulated_kernels.h).
#pragma once
#define SSMTUNE_CUDA_KERNELS_H_SEEN  // tests/emulation/emulated_kernels.h checks it

#include <cstdint>

#include "autograd/optim_math.h"
#include "cuda/index_math.h"
#include "engine/dtype.h"
#include "ops/elementwise_math.h"

#if defined(SSMTUNE_WITH_CUDA) || defined(SSMTUNE_CUDA_EMULATION)
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

// ---- gather.cu ----
// x [P, n, Q] contiguous (any dtype), idx [K] in [0, n) -> out [P, K, Q]: out[p, k, q] = x[p, idx[k], q].
SSMTUNE_LAUNCHER void index_select_forward(int device, DType dtype, const void* x, const int64_t* idx, void* out,
                                           int64_t P, int64_t n, int64_t K, int64_t Q) SSMTUNE_LAUNCHER_BODY
// dx [P, n, Q] = Σ over the positions k listed for row r (offsets/positions from build_index_lists, in order)
// of g [P, K, Q]: the CPU's accumulation order, no atomics.
SSMTUNE_LAUNCHER void index_select_backward(int device, DType dtype, const void* g, const int64_t* offsets,
                                            const int64_t* positions, void* dx, int64_t P, int64_t n, int64_t K,
                                            int64_t Q) SSMTUNE_LAUNCHER_BODY
// mask (operand 0, contiguous U8) = cond (operand 1, any dtype, broadcast) != 0; NaN counts as nonzero.
SSMTUNE_LAUNCHER void nonzero_mask(int device, DType cond_dtype, const void* cond, uint8_t* mask, int64_t n,
                                   const StridedIndexer<2>& ix) SSMTUNE_LAUNCHER_BODY
// out (operand 0, contiguous) = (mask[i] != 0) == keep ? a (operand 1) : b (operand 2), broadcast.
SSMTUNE_LAUNCHER void select_by_mask(int device, DType dtype, const uint8_t* mask, bool keep, const void* a,
                                     const void* b, void* out, int64_t n, const StridedIndexer<3>& ix) SSMTUNE_LAUNCHER_BODY
// mask[i] = philox_uniform(seed, first + i) >= p (dropout's keep mask, the CPU's draws).
SSMTUNE_LAUNCHER void dropout_mask(int device, uint8_t* mask, int64_t n, uint64_t seed, uint64_t first,
                                   double p) SSMTUNE_LAUNCHER_BODY
// out[i] = mask[i] ? src[i] · scale : 0 (contiguous).
SSMTUNE_LAUNCHER void apply_mask(int device, DType dtype, const void* src, const uint8_t* mask, double scale, void* out,
                                 int64_t n) SSMTUNE_LAUNCHER_BODY

// ---- norm.cu ----  x, g, out, dx: [rows, D] contiguous; rstd, xhat: double device buffers
SSMTUNE_LAUNCHER void rmsnorm_forward(int device, DType dtype, const void* x, const void* w, void* out, double* rstd,
                                      int64_t rows, int64_t D, double eps) SSMTUNE_LAUNCHER_BODY
SSMTUNE_LAUNCHER void rmsnorm_backward_dx(int device, DType dtype, const void* g, const void* x, const void* w,
                                          const double* rstd, void* dx, int64_t rows, int64_t D) SSMTUNE_LAUNCHER_BODY
// w, b may be null (no affine part).
SSMTUNE_LAUNCHER void layernorm_forward(int device, DType dtype, const void* x, const void* w, const void* b, void* out,
                                        double* xhat, double* rstd, int64_t rows, int64_t D,
                                        double eps) SSMTUNE_LAUNCHER_BODY
SSMTUNE_LAUNCHER void layernorm_backward_dx(int device, DType dtype, const void* g, const void* w, const double* xhat,
                                            const double* rstd, void* dx, int64_t rows, int64_t D) SSMTUNE_LAUNCHER_BODY
// out[j] = Σ_r term(r, j), rows in order, one thread per column (the CPU's order): kind 0 = g·x·rstd[r]
// (rmsnorm dw; other = x), 1 = g·xhat (layernorm dw; xhat given), 2 = g (layernorm db).
SSMTUNE_LAUNCHER void norm_column_sums(int device, DType dtype, int kind, const void* g, const void* other,
                                       const double* xhat, const double* rstd, void* out, int64_t rows,
                                       int64_t D) SSMTUNE_LAUNCHER_BODY

// ---- conv1d.cu ----  x, g, out, dx: [B, C, L]; w: [C, K] contiguous, K <= kMaxConvWidth; bias/dw/dbias may be null
constexpr int64_t kMaxConvWidth = 8;
SSMTUNE_LAUNCHER void causal_conv1d_forward(int device, DType dtype, const void* x, const void* w, const void* bias,
                                            void* out, int64_t B, int64_t C, int64_t L, int64_t K) SSMTUNE_LAUNCHER_BODY
SSMTUNE_LAUNCHER void causal_conv1d_backward(int device, DType dtype, const void* g, const void* x, const void* w,
                                             void* dx, void* dw, void* dbias, int64_t B, int64_t C, int64_t L,
                                             int64_t K) SSMTUNE_LAUNCHER_BODY

// ---- selective_scan.cu ----  Mamba's selective scan (ops/ssm.h), a block-level parallel scan per channel
// Inputs as the CPU op's, contiguous: u, delta, z [B, E, L]; A [E, N]; B, C [B, N, L]; D, delta_bias, y′ [E];
// h0 [E, N] or [B, E, N]; h′ [E, N]. Optional pointers are null. N <= kScanMaxStates.
struct SelectiveScanParams {
    const void *u = nullptr, *delta = nullptr, *A = nullptr, *B = nullptr, *C = nullptr, *D = nullptr, *z = nullptr,
               *delta_bias = nullptr, *h0 = nullptr, *state_offset = nullptr, *output_offset = nullptr;
    int64_t batch = 0, E = 0, N = 0, L = 0;
    bool softplus = false, h0_batched = false;
};
constexpr int64_t kScanMaxStates = 64;
constexpr int64_t kScanChunk = 512;  // time steps per block-scan chunk (128 threads × 4 steps)
// Channels one backward block walks in order; dB, dC partials are per group: [B, groups, N, L].
constexpr int64_t kScanGroupChannels = 32;
inline int64_t scan_backward_groups(int64_t E) { return (E + kScanGroupChannels - 1) / kScanGroupChannels; }
// Gradient buffers of selective_scan_backward (null when not wanted, except the ones marked always).
struct SelectiveScanGrads {
    void *du = nullptr, *ddelta = nullptr, *dz = nullptr;  // [B, E, L]; du, ddelta always
    void *dB_part = nullptr, *dC_part = nullptr;           // [B, groups, N, L], written whole by the kernel; always
    void *dA_part = nullptr, *dstate_offset_part = nullptr, *dh0_part = nullptr;  // [B, E, N]; dA_part, dh0_part always
    void *dD_part = nullptr, *ddelta_bias_part = nullptr, *doutput_offset_part = nullptr;  // [B, E]; always
};
// out [B, E, L]; y_pre [B, E, L] (y before the gate, for the backward; null when not needed); last [B, E, N] or
// null; chunk_states [B, E, ceil(L / kScanChunk), N] (the state after each chunk, for the backward).
SSMTUNE_LAUNCHER void selective_scan_forward(int device, DType dtype, const SelectiveScanParams& p, void* out,
                                             void* y_pre, void* last, void* chunk_states) SSMTUNE_LAUNCHER_BODY
// A naive baseline the benchmark compares with: one thread per (b, e) channel looping over time and states
// (mamba_ssm's selective_scan_ref order), out [B, E, L] and last [B, E, N] (or null). Same semantics as above.
SSMTUNE_LAUNCHER void selective_scan_forward_sequential(int device, DType dtype, const SelectiveScanParams& p,
                                                        void* out, void* last) SSMTUNE_LAUNCHER_BODY
// The other naive baseline: one thread per (b, e, n) state looping over time, writing each state's term of y to
// state_terms [B, E, N, L] (a caller's buffer, B·E·N·L elements), then one thread per (b, e, t) summing the terms
// over n in order. out [B, E, L]; last [B, E, N] or null. Same semantics as above.
SSMTUNE_LAUNCHER void selective_scan_forward_per_state(int device, DType dtype, const SelectiveScanParams& p,
                                                       void* out, void* last, void* state_terms) SSMTUNE_LAUNCHER_BODY
// gout [B, E, L]; glast [B, E, N] or null. Recomputes each chunk's states from chunk_states, runs the adjoint
// recurrence as a reverse block scan, and writes the gradients and per-(b, e) / per-group partials.
SSMTUNE_LAUNCHER void selective_scan_backward(int device, DType dtype, const SelectiveScanParams& p,
                                              const void* chunk_states, const void* y_pre, const void* gout,
                                              const void* glast, const SelectiveScanGrads& g) SSMTUNE_LAUNCHER_BODY

// ---- longhorn_scan.cu ----  Longhorn's scan (ops/ssm.h) on the selective scan's block machinery (block_scan.cuh)
// Inputs as the CPU op's, contiguous: x, dt, z [B, E, L]; k, q [B, N, L]; D, dt_bias, y′ [E]; h0 [E, N] or
// [B, E, N]; h′ [E, N]. Optional pointers are null. N <= kScanMaxStates; chunks of kScanChunk steps.
struct LonghornScanParams {
    const void *x = nullptr, *dt = nullptr, *k = nullptr, *q = nullptr, *D = nullptr, *z = nullptr,
               *dt_bias = nullptr, *h0 = nullptr, *state_offset = nullptr, *output_offset = nullptr;
    int64_t batch = 0, E = 0, N = 0, L = 0;
    bool h0_batched = false;
};
// Gradient buffers of longhorn_scan_backward (null when not wanted, except the ones marked always). The caller
// finishes dk = Σ_groups dk_part + 2 k Σ_groups dS_part (the normaliser ε = β / (1 + β Σ k²)).
struct LonghornScanGrads {
    void *dx = nullptr, *ddt = nullptr, *dz = nullptr;                  // [B, E, L]; dx, ddt always
    void *dk_part = nullptr, *dq_part = nullptr;                        // [B, groups, N, L], written whole; always
    void *dS_part = nullptr;                                            // [B, groups, L], written whole; always
    void *dh0_part = nullptr, *dstate_offset_part = nullptr;            // [B, E, N]; dh0_part always
    void *dD_part = nullptr, *ddt_bias_part = nullptr, *doutput_offset_part = nullptr;  // [B, E]; always
};
// out [B, E, L]; y_pre [B, E, L] (y before the gate, or null); last [B, E, N] or null; chunk_states
// [B, E, ceil(L / kScanChunk), N] (the state after each chunk, for the backward).
SSMTUNE_LAUNCHER void longhorn_scan_forward(int device, DType dtype, const LonghornScanParams& p, void* out,
                                            void* y_pre, void* last, void* chunk_states) SSMTUNE_LAUNCHER_BODY
// gout [B, E, L]; glast [B, E, N] or null. Groups of channels as scan_backward_groups(E).
SSMTUNE_LAUNCHER void longhorn_scan_backward(int device, DType dtype, const LonghornScanParams& p,
                                             const void* chunk_states, const void* y_pre, const void* gout,
                                             const void* glast, const LonghornScanGrads& g) SSMTUNE_LAUNCHER_BODY

// ---- s4d.cu ----  S4D's Vandermonde kernel and the causal long convolution (ops/s4d_kernel.cpp, long_conv.cpp)
// modes [H, M, 4] doubles (Re W, Im W, Re λ, Im λ, made on the host) -> K [H, L] = 2·Re Σ_n W_n e^{λ_n l}, in double.
SSMTUNE_LAUNCHER void s4d_vandermonde(int device, DType dtype, const double* modes, void* K, int64_t H, int64_t M,
                                      int64_t L) SSMTUNE_LAUNCHER_BODY
// sums [H, M, 4] doubles = (Σ_l gK conj(e^{λl}), Σ_l gK l conj(e^{λl})) as (re, im, re, im); gK [H, L].
SSMTUNE_LAUNCHER void s4d_vandermonde_backward(int device, DType dtype, const double* modes, const void* gK,
                                               double* sums, int64_t H, int64_t M, int64_t L) SSMTUNE_LAUNCHER_BODY
// The three maps of the causal convolution (a [B, H, L], k [H, Lk] or [B, H, L], in T): mode 0 y = k * a (causal),
// mode 1 du = correlation of a (= gy) with k, both -> out [B, H, L]; mode 2 dK = Σ_b correlation of a (= gy) with
// k (= u) -> out [H, Lk]. fft: through cuFFT in double with size n = next_pow2(L + Lk − 1), else direct sums.
SSMTUNE_LAUNCHER void long_conv(int device, DType dtype, int mode, bool fft, const void* a, const void* k, void* out,
                                int64_t B, int64_t H, int64_t L, int64_t Lk) SSMTUNE_LAUNCHER_BODY

// ---- optim.cu ----  p, g, buffers: n contiguous elements of one dtype
SSMTUNE_LAUNCHER void adamw_update(int device, DType dtype, void* p, const void* g, void* m, void* v, void* vmax, int64_t n,
                                   const autograd::AdamScalars& s) SSMTUNE_LAUNCHER_BODY
SSMTUNE_LAUNCHER void sgd_update(int device, DType dtype, void* p, const void* g, void* buf, int64_t n,
                                 const autograd::SgdScalars& s) SSMTUNE_LAUNCHER_BODY
SSMTUNE_LAUNCHER void scale_inplace(int device, DType dtype, void* x, int64_t n, double factor) SSMTUNE_LAUNCHER_BODY

}  // namespace ssmtune::cuda

#if !defined(SSMTUNE_WITH_CUDA) && !defined(SSMTUNE_CUDA_EMULATION)  // the same test as the push above
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#endif
#undef SSMTUNE_LAUNCHER
#undef SSMTUNE_LAUNCHER_BODY
