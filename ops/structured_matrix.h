// Structured matrices for SURM (Sehanobish et al. 2024, "Structured Unrestricted-Rank Matrices for PEFT",
// reference/peft-methods.md §5): fast products y = W x with W circulant (or C3A-style block circulant),
// skew-circulant, symmetric Toeplitz, Kronecker or low displacement rank (Σ circ·skewcirc), plus dense
// materializers for merging ΔW into a base weight. Files: ops/structured_matrix.cpp.
//
// Every product acts on the last dim of x (any leading dims: [B, L, n], [n], ...) and returns the input dtype
// (F32 or F64; the FFTs run in double). The dense materializers are the specification: each fast product
// equals x @ denseᵀ, and on a GPU the products are computed that way (the dense materializer's index gathers and one
// cuBLAS GEMM, with autograd's backward): O(out·in) per row, the adapted layer's own GEMM cost, instead of the CPU's
// O(n log n) FFTs. Not here: the SURM adapter itself (peft/), FFT-based CUDA kernels, real-to-complex FFTs.
#pragma once

#include "engine/tensor.h"

namespace ssmtune::ops {

// ---- fused products, forward + hand-written backward ----

// c [P, Q, b], x [..., Q*b] -> [..., P*b]:  y_i = Σ_j circ(c[i, j]) x_j, with x_j the j-th length-b block of x
// and circ(v)[r, s] = v[(r − s) mod b] (first column v). P = Q = 1 is the plain circulant; P, Q > 1 tiles an
// out = P*b by in = Q*b layer with circulant blocks (C3A).
Tensor block_circulant_matmul(const Tensor& c, const Tensor& x);
// s [n], x [..., n] -> [..., n]:  skewcirc(s)[r, t] = s[r − t] if r >= t, else −s[n + r − t] (negacyclic).
Tensor skew_circulant_matmul(const Tensor& s, const Tensor& x);
// v [n], x [..., n] -> [..., n]:  T[r, t] = v[|r − t|] (first row = first column = v).
Tensor symmetric_toeplitz_matmul(const Tensor& v, const Tensor& x);

// ---- composites (built from the ops above and matmul; autograd does their backward) ----

// ΔW = Bk ⊗ Ak with Bk [p, q], Ak [m, k]; x [..., q*k] -> [..., p*m] without forming ΔW (y = Bk X Akᵀ with
// X = x viewed as [..., q, k]).
Tensor kronecker_matmul(const Tensor& Bk, const Tensor& Ak, const Tensor& x);
// g [k, n], s [k, n], x [..., n] -> [..., n]:  y = Σ_i circ(g_i) · skewcirc(s_i) x.
Tensor ldr_matmul(const Tensor& g, const Tensor& s, const Tensor& x);

// ---- dense materializers (for merging and as test references; differentiable: index gathers and matmul) ----

Tensor block_circulant_dense(const Tensor& c);          // c [P, Q, b] -> [P*b, Q*b]
Tensor skew_circulant_dense(const Tensor& s);           // s [n] -> [n, n]
Tensor symmetric_toeplitz_dense(const Tensor& v);       // v [n] -> [n, n]
Tensor kronecker_dense(const Tensor& Bk, const Tensor& Ak);  // [p, q], [m, k] -> [p*m, q*k]
Tensor ldr_dense(const Tensor& g, const Tensor& s);     // g, s [k, n] -> [n, n] = Σ_i circ(g_i) skewcirc(s_i)

}  // namespace ssmtune::ops
