// The fused SSM ops: Mamba's selective scan, S4D's Vandermonde kernel and causal long convolution, and
// Longhorn's online-regression scan. Forward and hand-written backward for each, F32 and F64, CPU.
//
// Files: ops/selective_scan.cpp, ops/s4d_kernel.cpp, ops/long_conv.cpp, ops/longhorn_scan.cpp; the associative
// scan operator shared with CUDA is ops/scan_combine.h. Math and shapes: reference/ssm-models.md §0–§3 and
// DESIGN.md's glossary (B batch, E inner width, N state size, L length, H S4D channels).
// Tensors on a GPU run the CUDA kernels (cuda/selective_scan.cu, longhorn_scan.cu, s4d.cu), checked against these;
// the S4D initial-state response is CPU only.
// Not here: model wiring (models/).
#pragma once

#include <cstdint>

#include "engine/tensor.h"

namespace ssmtune::ops {

// ---- selective_scan.cpp ----
// h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t u_t;  y_t = C_t·(h_t + h′) + D u_t + y′;  out = y ⊙ SiLU(z).
// Δ = softplus(delta + delta_bias) when delta_softplus (threshold 20, as mamba_ssm), else delta + delta_bias.
// Same semantics as mamba_ssm's selective_scan_ref when the extras are absent. Optional tensors may be undefined.
struct SelectiveScanOptions {
    Tensor D;             // [E]
    Tensor z;             // [B, E, L] gate
    Tensor delta_bias;    // [E]
    bool delta_softplus = false;
    Tensor h0;            // [E, N] or [B, E, N] initial state (initial-state tuning)
    Tensor state_offset;  // [E, N] h′ (state-offset tuning, variant h)
    Tensor output_offset; // [E] y′ (state-offset tuning, variant y), added before the gate
    bool return_last_state = false;
    int64_t checkpoint_every = 64;  // backward recomputes states from checkpoints every this many steps
};
struct SelectiveScanResult {
    Tensor out;         // [B, E, L]
    Tensor last_state;  // [B, E, N] h_L when return_last_state (differentiable), else undefined
};
// u[B, E, L], delta[B, E, L], A[E, N], B[B, N, L], C[B, N, L].
SelectiveScanResult selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                   const Tensor& C, const SelectiveScanOptions& options = {});
// The specification: the same computation as plain sequential loops, forward only, no graph (tests and the
// CUDA checks compare against it).
SelectiveScanResult selective_scan_reference(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                             const Tensor& C, const SelectiveScanOptions& options = {});

// ---- s4d_kernel.cpp ----
// S4D's convolution kernel (Gu, Gupta, Goel, Ré 2022; reference/ssm-models.md §2): with Δ = exp(log_dt),
// A = −exp(log_A_real) + i·A_imag and z = ΔA (N/2 complex modes per channel, conjugate pairs implicit),
//   K[h, l] = 2·Re Σ_n W_n · exp(λ_n l),
//   ZOH:      W = C·(exp(z) − 1)/A,          λ = z
//   bilinear: W = C·Δ/(1 − z/2),             λ = log((1 + z/2)/(1 − z/2))
enum class S4DDiscretization { ZOH, Bilinear };
// log_dt[H], C[H, N/2, 2] (real, imaginary), log_A_real[H, N/2], A_imag[H, N/2] -> K[H, L].
Tensor s4d_kernel(const Tensor& log_dt, const Tensor& C, const Tensor& log_A_real, const Tensor& A_imag, int64_t L,
                  S4DDiscretization method = S4DDiscretization::ZOH);

// ---- s4d_state.cpp ----
// What a non-zero initial state contributes to the outputs of S4D's recurrence s_t = Ā s_{t−1} + B̄ u_t,
// y_t = 2·Re(C·s_t) + D u_t when s_{−1} = h0 (initial-state tuning of S4D; the zero-input response):
//   Y[h, l] = 2·Re Σ_n C_n · Ā_n^{l+1} · h0_n,   Ā = exp(ΔA) (ZOH) or (1 + ΔA/2)/(1 − ΔA/2) (bilinear),
// with Δ = exp(log_dt), A = −exp(log_A_real) + i·A_imag, as s4d_kernel. Hand-written backward to all five inputs.
// log_dt[H], C[H, N/2, 2], log_A_real[H, N/2], A_imag[H, N/2], h0[H, N/2, 2] (real, imaginary) -> Y[H, L].
Tensor s4d_initial_state_response(const Tensor& log_dt, const Tensor& C, const Tensor& log_A_real,
                                  const Tensor& A_imag, const Tensor& h0, int64_t L,
                                  S4DDiscretization disc = S4DDiscretization::ZOH);

// ---- long_conv.cpp ----
// Causal convolution of each channel with its own long kernel: y[b, h, t] = Σ_{l ≤ t, l < Lk} K[h, l] u[b, h, t − l].
enum class ConvAlgorithm { Auto, Direct, FFT };
// u[B, H, L], K[H, Lk] -> y[B, H, L]. Auto picks the direct sum for short inputs and the FFT otherwise.
Tensor causal_conv(const Tensor& u, const Tensor& K, ConvAlgorithm algorithm = ConvAlgorithm::Auto);

// ---- longhorn_scan.cpp ----
// Longhorn's closed-form online-regression recurrence (Liu et al. 2024; reference/ssm-models.md §3.1):
//   β = σ(dt + dt_bias);  ε = β / (1 + β Σ_n k_n²);  h_t = (1 − ε k²) ⊙ h_{t−1} + ε k x_t;
//   y_t = q_t·(h_t + h′) + D x_t + y′;  out = y ⊙ SiLU(z).
struct LonghornScanOptions {
    Tensor D;              // [E]
    Tensor z;              // [B, E, L] gate
    Tensor dt_bias;        // [E]
    Tensor h0;             // [E, N] or [B, E, N]
    Tensor state_offset;   // [E, N] h′
    Tensor output_offset;  // [E] y′
    bool return_last_state = false;
    int64_t checkpoint_every = 64;
};
using LonghornScanResult = SelectiveScanResult;
// x[B, E, L], dt[B, E, L] (β logits), k[B, N, L], q[B, N, L].
LonghornScanResult longhorn_scan(const Tensor& x, const Tensor& dt, const Tensor& k, const Tensor& q,
                                 const LonghornScanOptions& options = {});
LonghornScanResult longhorn_scan_reference(const Tensor& x, const Tensor& dt, const Tensor& k, const Tensor& q,
                                           const LonghornScanOptions& options = {});

}  // namespace ssmtune::ops
