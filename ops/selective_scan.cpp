// Mamba's selective scan (Gu & Dao 2023, Algorithm 2; mamba_ssm's selective_scan_ref semantics), with the
// state-based PEFT extras (initial state h0, state offset h′, output offset y′) and a hand-written backward.
//
//   Δ_t = softplus(δ_t + bias) (or δ_t + bias);   h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t u_t   (per channel e, N states)
//   y_t = C_t·(h_t + h′) + D u_t + y′;   out_t = y_t · SiLU(z_t)
// Forward walks groups of kVec channels of one batch row over time side by side (the SIMD lanes are channels,
// B_t and C_t are broadcast; Δ = softplus and SiLU(z) are computed for the whole sequence first, vectorised over
// time), saving the state every `checkpoint_every` steps (memory B·E·N·L/chunk, never B·E·L·N). Backward walks each
// group's chunks right to left: it recomputes the chunk's states and decays exp(Δ A) from its checkpoint, then runs
// the adjoint recurrence gh_t = C_t gy_t + exp(Δ_{t+1} A) gh_{t+1} (reference/ssm-models.md §1.4), taking h_{t−1}
// from the recomputed states (no division) and reusing the decays (one exp per state and step in each direction).
// Determinism: lanes are grouped in fixed blocks of kLaneBlock channels; reductions over channels (dB, dC) go
// through per-channel-slot accumulators summed in slot order, then per-block partial buffers, and reductions over
// the batch (dA, dD, dbias, dh′, dy′, dh0) through per-batch partials, all summed in a fixed order, so results do
// not depend on the thread count.
// CPU level: the float work items (forward_group, backward_block) have AVX2 copies (forward_group_avx2, ...), used
// when engine/cpu_isa.h says so; no FMA and the same per-element operations, so the bits match the baseline copy.
// Tensors on a GPU go to ops/selective_scan_cuda.cpp (block-level parallel scans, cuda/selective_scan.cu).
// Not here: complex A, grouped B/C (G > 1), the fused conv/projections of mamba_ssm's MambaInnerFn.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "engine/cpu_isa.h"
#include "ops/ops.h"
#include "ops/scan_common.h"
#include "ops/ssm.h"

namespace ssmtune::ops {

namespace {

using scan_detail::kLaneBlock;
using scan_detail::scan_exp;
using scan_detail::scan_softplus;
using scan_detail::sigmoid;

// Validated, contiguous arguments; B and C transposed to [B, L, N] so each time step reads N contiguous values.
struct ScanArgs {
    Tensor u, delta, A, Bt, Ct, D, z, bias, h0, hoff, yoff;
    bool softplus = false, h0_batched = false;
    int64_t B = 0, E = 0, N = 0, L = 0, ck = 1, nck = 0;
};

ScanArgs prepare(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                 const SelectiveScanOptions& o) {
    check_float_input(u, "selective_scan", "u");
    SSMTUNE_CHECK(u.dim() == 3, "selective_scan: u must be [B, E, L], got ", u.describe());
    SSMTUNE_CHECK(A.dim() == 2, "selective_scan: A must be [E, N], got ", A.describe());
    ScanArgs a;
    a.B = u.size(0), a.E = u.size(1), a.L = u.size(2), a.N = A.size(1);
    SSMTUNE_CHECK(o.checkpoint_every >= 1, "selective_scan: checkpoint_every must be >= 1");
    a.ck = o.checkpoint_every;
    a.nck = (a.L + a.ck - 1) / a.ck;
    const auto take = [&](const Tensor& t, const Shape& shape, const char* name) {
        return scan_detail::take_arg(t, u, shape, "selective_scan", name);
    };
    a.u = u.detach().contiguous();
    a.delta = take(delta, {a.B, a.E, a.L}, "delta");
    SSMTUNE_CHECK(a.delta.defined(), "selective_scan: delta is required");
    a.A = take(A, {a.E, a.N}, "A");
    SSMTUNE_CHECK(B.defined() && C.defined(), "selective_scan: B and C are required");
    a.Bt = take(B, {a.B, a.N, a.L}, "B").transpose(1, 2).contiguous();
    a.Ct = take(C, {a.B, a.N, a.L}, "C").transpose(1, 2).contiguous();
    a.D = take(o.D, {a.E}, "D");
    a.z = take(o.z, {a.B, a.E, a.L}, "z");
    a.bias = take(o.delta_bias, {a.E}, "delta_bias");
    a.softplus = o.delta_softplus;
    if (o.h0.defined()) {
        a.h0_batched = o.h0.dim() == 3;
        a.h0 = take(o.h0, a.h0_batched ? Shape{a.B, a.E, a.N} : Shape{a.E, a.N}, "h0");
    }
    a.hoff = take(o.state_offset, {a.E, a.N}, "state_offset");
    a.yoff = take(o.output_offset, {a.E}, "output_offset");
    return a;
}

// Δ_t for every step of lane (b, e) into dt[L], and ∂Δ_t/∂δ_t into slope[L] when given (σ(δ_t + bias) under
// softplus, 1 above its threshold of 20 or without softplus): one vectorisable pass over time instead of a softplus
// inside the recurrence.
template <class T>
void lane_deltas(const ScanArgs& a, const T* delta, const T* bias, int64_t lane, int64_t e, T* dt, T* slope) {
    const T* d = delta + lane * a.L;
    const T b = bias ? bias[e] : T(0);
    if (a.softplus) {
#pragma omp simd
        for (int64_t t = 0; t < a.L; ++t) dt[t] = scan_softplus(d[t] + b);
        if (slope) {
#pragma omp simd
            for (int64_t t = 0; t < a.L; ++t) slope[t] = d[t] + b > T(20) ? T(1) : sigmoid(d[t] + b);
        }
    } else {
#pragma omp simd
        for (int64_t t = 0; t < a.L; ++t) dt[t] = d[t] + b;
        if (slope) std::fill_n(slope, a.L, T(1));
    }
}

// SiLU(z_t) = z_t σ(z_t) for every step of a lane into gate[L] (σ(z_t) into sig[L] when given).
template <class T>
void lane_gates(const T* z, int64_t L, T* gate, T* sig) {
#pragma omp simd
    for (int64_t t = 0; t < L; ++t) {
        const T s = sigmoid(z[t]);
        gate[t] = z[t] * s;
        if (sig) sig[t] = s;
    }
}

// Channels scanned together: the recurrences of kVec channels of one batch row advance side by side, so every
// inner loop runs over those channels (vertical SIMD, no horizontal sums) with B_t, C_t broadcast across them.
constexpr int64_t kVec = 8;

// One group of up to kVec channels e0 .. e0 + width − 1 of batch row b, with its per-channel inputs laid out
// time-major ([L][kVec], [N][kVec]) and padded with zeros past `width` (a padded channel has Δ = 0, A = 0, u = 0,
// and receives zero output gradient, so it computes zeros and is never written back).
template <class T>
struct ChannelGroup {
    int64_t b = 0, e0 = 0, width = 0;
    std::vector<T> dt, u, gate, sig, slope;  // [L][kVec]: Δ_t, u_t, SiLU(z_t), σ(z_t), ∂Δ_t/∂δ_t
    std::vector<T> A, hoff;                  // [N][kVec] (hoff zeros when absent)
    T D[kVec] = {}, yoff[kVec] = {};

    // Gathers the group's inputs; `backward` also fills sig and slope.
    void load(const ScanArgs& a, int64_t b_, int64_t e0_, bool backward) {
        b = b_, e0 = e0_, width = std::min(kVec, a.E - e0);
        const int64_t L = a.L, N = a.N;
        const T *u_in = a.u.data<T>(), *delta = a.delta.data<T>(), *A_in = a.A.data<T>();
        const T* z = a.z.defined() ? a.z.data<T>() : nullptr;
        const T* bias = a.bias.defined() ? a.bias.data<T>() : nullptr;
        const auto fresh = [](std::vector<T>& v, int64_t n) { v.assign(static_cast<size_t>(n), T(0)); };
        fresh(dt, L * kVec), fresh(u, L * kVec), fresh(A, N * kVec), fresh(hoff, N * kVec);
        if (z) fresh(gate, L * kVec);
        if (z && backward) fresh(sig, L * kVec);
        if (backward) fresh(slope, L * kVec);
        std::vector<T> row(static_cast<size_t>(L)), row2(static_cast<size_t>(L));
        for (int64_t w = 0; w < width; ++w) {
            const int64_t e = e0 + w, lane = b * a.E + e;
            lane_deltas<T>(a, delta, bias, lane, e, row.data(), backward ? row2.data() : nullptr);
            for (int64_t t = 0; t < L; ++t) {
                dt[size_t(t * kVec + w)] = row[size_t(t)];
                u[size_t(t * kVec + w)] = u_in[lane * L + t];
                if (backward) slope[size_t(t * kVec + w)] = row2[size_t(t)];
            }
            if (z) {
                lane_gates<T>(z + lane * L, L, row.data(), backward ? row2.data() : nullptr);
                for (int64_t t = 0; t < L; ++t) {
                    gate[size_t(t * kVec + w)] = row[size_t(t)];
                    if (backward) sig[size_t(t * kVec + w)] = row2[size_t(t)];
                }
            }
            for (int64_t n = 0; n < N; ++n) {
                A[size_t(n * kVec + w)] = A_in[e * N + n];
                if (a.hoff.defined()) hoff[size_t(n * kVec + w)] = a.hoff.data<T>()[e * N + n];
            }
            D[w] = a.D.defined() ? a.D.data<T>()[e] : T(0);
            yoff[w] = a.yoff.defined() ? a.yoff.data<T>()[e] : T(0);
        }
    }
};

// One step of the group's recurrences: h[n][·] ← exp(Δ A[n]) ⊙ h[n][·] + Δ B_t[n] u, writing the decays when
// `decay` is given. h, decay: [N][kVec].
template <class T>
inline void group_step(const ChannelGroup<T>& g, int64_t N, int64_t t, const T* Bn, T* h, T* decay) {
    const T *dt = g.dt.data() + t * kVec, *u = g.u.data() + t * kVec;
    T dtu[kVec];
    for (int64_t w = 0; w < kVec; ++w) dtu[w] = dt[w] * u[w];
    for (int64_t n = 0; n < N; ++n) {
        const T bn = Bn[n];
        const T* An = g.A.data() + n * kVec;
        T* hn = h + n * kVec;
        if (decay) {
            T* dn = decay + n * kVec;
#pragma omp simd
            for (int64_t w = 0; w < kVec; ++w) {
                dn[w] = scan_exp(dt[w] * An[w]);
                hn[w] = dn[w] * hn[w] + dtu[w] * bn;
            }
        } else {
#pragma omp simd
            for (int64_t w = 0; w < kVec; ++w) hn[w] = scan_exp(dt[w] * An[w]) * hn[w] + dtu[w] * bn;
        }
    }
}

// The group's pre-gate outputs y[·] = C_t·(h + h′) + D u + y′ from the states h [N][kVec].
template <class T>
inline void group_output(const ChannelGroup<T>& g, int64_t N, int64_t t, const T* Cn, const T* h, T* y) {
    const T* u = g.u.data() + t * kVec;
    for (int64_t w = 0; w < kVec; ++w) y[w] = T(0);
    for (int64_t n = 0; n < N; ++n) {
        const T cn = Cn[n];
        const T *hn = h + n * kVec, *ho = g.hoff.data() + n * kVec;
#pragma omp simd
        for (int64_t w = 0; w < kVec; ++w) y[w] += cn * (hn[w] + ho[w]);
    }
    for (int64_t w = 0; w < kVec; ++w) y[w] += g.D[w] * u[w] + g.yoff[w];
}

// Forward of work item `item`: channel group item % groups of batch row item / groups.
template <class T>
void forward_group(const ScanArgs& a, int64_t item, T* out, T* last, T* ckpt) {
    const T *Bt = a.Bt.data<T>(), *Ct = a.Ct.data<T>();
    const T* h0 = a.h0.defined() ? a.h0.data<T>() : nullptr;
    const bool gated = a.z.defined();
    const int64_t E = a.E, N = a.N, L = a.L, groups = (E + kVec - 1) / kVec;
    ChannelGroup<T> g;
    g.load(a, item / groups, (item % groups) * kVec, false);
    const int64_t b = g.b;
    std::vector<T> h(static_cast<size_t>(N * kVec), T(0)), ys(static_cast<size_t>(L * kVec));
    for (int64_t w = 0; w < g.width; ++w)
        if (h0)
            for (int64_t n = 0; n < N; ++n)
                h[size_t(n * kVec + w)] = h0[((a.h0_batched ? b * E : 0) + g.e0 + w) * N + n];
    for (int64_t t = 0; t < L; ++t) {
        if (t % a.ck == 0)
            for (int64_t w = 0; w < g.width; ++w)
                for (int64_t n = 0; n < N; ++n)
                    ckpt[((b * E + g.e0 + w) * a.nck + t / a.ck) * N + n] = h[size_t(n * kVec + w)];
        group_step(g, N, t, Bt + (b * L + t) * N, h.data(), static_cast<T*>(nullptr));
        T* y = ys.data() + t * kVec;
        group_output(g, N, t, Ct + (b * L + t) * N, h.data(), y);
        if (gated)
            for (int64_t w = 0; w < kVec; ++w) y[w] *= g.gate[size_t(t * kVec + w)];
    }
    for (int64_t w = 0; w < g.width; ++w) {
        const int64_t lane = b * E + g.e0 + w;
        for (int64_t t = 0; t < L; ++t) out[lane * L + t] = ys[size_t(t * kVec + w)];
        if (last)
            for (int64_t n = 0; n < N; ++n) last[lane * N + n] = h[size_t(n * kVec + w)];
    }
}

#if SSMTUNE_CPU_DISPATCH
SSMTUNE_AVX2_KERNEL void forward_group_avx2(const ScanArgs& a, int64_t item, float* out, float* last, float* ckpt) {
    forward_group<float>(a, item, out, last, ckpt);
}
#endif

template <class T>
void scan_forward(const ScanArgs& a, T* out, T* last, T* ckpt) {
    const int64_t groups = (a.E + kVec - 1) / kVec;
    const bool avx2 = std::is_same<T, float>::value && cpu_isa() == CpuIsa::avx2;
    (void)avx2;
#pragma omp parallel for schedule(static) if (a.B * a.E * a.L * a.N > kParallelGrain)
    for (int64_t item = 0; item < a.B * groups; ++item) {
#if SSMTUNE_CPU_DISPATCH
        if constexpr (std::is_same<T, float>::value)
            if (avx2) {
                forward_group_avx2(a, item, out, last, ckpt);
                continue;
            }
#endif
        forward_group<T>(a, item, out, last, ckpt);
    }
}

// Gradients, one per scan input, in the order of the autograd record below.
struct ScanGrads {
    Tensor du, ddelta, dA, dB, dC, dD, dz, dbias, dh0, dhoff, dyoff;
};

// Where backward_block reads the saved states and output gradients and writes its gradients and partials.
template <class T>
struct BackwardIo {
    const T *ckpt = nullptr, *gout = nullptr, *glast = nullptr;  // glast: null without a last-state gradient
    T *du = nullptr, *dd = nullptr, *dz = nullptr;                // [B, E, L]; dz null without z
    T *pB = nullptr, *pC = nullptr;                               // per-item partials [items, L, N]
    T *pA = nullptr, *pH = nullptr, *pH0 = nullptr;               // per-batch partials [B, E, N]
    T *pD = nullptr, *pbias = nullptr, *pY = nullptr;             // per-batch partials [B, E]
};

// Backward of work item `item`: the kLaneBlock channels of block item % nblocks of batch row item / nblocks,
// kVec at a time.
template <class T>
void backward_block(const ScanArgs& a, const BackwardIo<T>& io, int64_t item) {
    const T *Bt = a.Bt.data<T>(), *Ct = a.Ct.data<T>(), *ckpt = io.ckpt, *gout = io.gout, *glast = io.glast;
    const T* z = a.z.defined() ? a.z.data<T>() : nullptr;
    const bool has_hoff = a.hoff.defined();
    const int64_t E = a.E, N = a.N, L = a.L, ck = a.ck, nblocks = (E + kLaneBlock - 1) / kLaneBlock;
    T *du = io.du, *dd = io.dd, *dz = io.dz, *pB = io.pB, *pC = io.pC, *pA = io.pA, *pH = io.pH, *pH0 = io.pH0;
    T *pD = io.pD, *pbias = io.pbias, *pY = io.pY;
    const int64_t b = item / nblocks, e_begin = (item % nblocks) * kLaneBlock, e_end = std::min(E, e_begin + kLaneBlock);
    const size_t NV = size_t(N * kVec);
    // Per group: recomputed states hs[i] ([N][kVec], state before step start+i) and decays of the chunk, the
    // adjoint gh, per-channel parameter gradients; per item: dB/dC per channel slot ([L][N][kVec]), summed over
    // the slots once at the end.
    std::vector<T> hs(size_t(ck + 1) * NV), decays(size_t(ck) * NV), gh(NV), dA_acc(NV), dH_acc(NV);
    std::vector<T> dB_acc(size_t(L) * NV, T(0)), dC_acc(size_t(L) * NV, T(0));
    std::vector<T> du_g(size_t(L * kVec)), dd_g(size_t(L * kVec)), dz_g(z ? size_t(L * kVec) : 0);
    ChannelGroup<T> grp;
    for (int64_t e0 = e_begin; e0 < e_end; e0 += kVec) {
        grp.load(a, b, e0, true);
        const int64_t width = std::min(kVec, e_end - e0);
        std::vector<T> go(size_t(L * kVec), T(0));  // output gradient, time-major
        for (int64_t w = 0; w < width; ++w)
            for (int64_t t = 0; t < L; ++t) go[size_t(t * kVec + w)] = gout[(b * E + e0 + w) * L + t];
        std::fill(gh.begin(), gh.end(), T(0));
        if (glast)
            for (int64_t w = 0; w < width; ++w)
                for (int64_t n = 0; n < N; ++n) gh[size_t(n * kVec + w)] = glast[(b * E + e0 + w) * N + n];
        std::fill(dA_acc.begin(), dA_acc.end(), T(0));
        std::fill(dH_acc.begin(), dH_acc.end(), T(0));
        T accD[kVec] = {}, accY[kVec] = {}, accBias[kVec] = {};
        for (int64_t c = a.nck - 1; c >= 0; --c) {
            const int64_t start = c * ck, len = std::min(ck, L - start);
            std::fill(hs.begin(), hs.begin() + NV, T(0));
            for (int64_t w = 0; w < width; ++w)
                for (int64_t n = 0; n < N; ++n)
                    hs[size_t(n * kVec + w)] = ckpt[((b * E + e0 + w) * a.nck + c) * N + n];
            for (int64_t i = 0; i < len; ++i) {  // recompute: hs[i + 1] from hs[i], keeping the decays
                std::copy_n(hs.data() + i * NV, NV, hs.data() + (i + 1) * NV);
                group_step(grp, N, start + i, Bt + (b * L + start + i) * N, hs.data() + (i + 1) * NV,
                           decays.data() + i * NV);
            }
            for (int64_t i = len - 1; i >= 0; --i) {
                const int64_t t = start + i;
                const T *Bn = Bt + (b * L + t) * N, *Cn = Ct + (b * L + t) * N;
                const T *h_t = hs.data() + (i + 1) * NV, *h_prev = hs.data() + i * NV, *dec = decays.data() + i * NV;
                const T *dt = grp.dt.data() + t * kVec, *u = grp.u.data() + t * kVec;
                // Output side: out = y · SiLU(z)  →  gy, gz.
                T gy[kVec];
                for (int64_t w = 0; w < kVec; ++w) gy[w] = go[size_t(t * kVec + w)];
                if (z) {
                    T y[kVec];
                    group_output(grp, N, t, Cn, h_t, y);
                    for (int64_t w = 0; w < width; ++w) {
                        const T zz = z[(b * E + e0 + w) * L + t], s = grp.sig[size_t(t * kVec + w)];
                        dz_g[size_t(t * kVec + w)] = gy[w] * y[w] * s * (T(1) + zz * (T(1) - s));
                    }
                    for (int64_t w = 0; w < kVec; ++w) gy[w] *= grp.gate[size_t(t * kVec + w)];
                }
                T gdt[kVec] = {}, gu[kVec] = {}, dtu[kVec];
                for (int64_t w = 0; w < kVec; ++w) {
                    accD[w] += gy[w] * u[w];
                    accY[w] += gy[w];
                    dtu[w] = dt[w] * u[w];
                }
                T *dBt = dB_acc.data() + size_t(t) * NV, *dCt = dC_acc.data() + size_t(t) * NV;
                for (int64_t n = 0; n < N; ++n) {
                    const T bn = Bn[n], cn = Cn[n];
                    const size_t o = size_t(n * kVec);
                    const T *An = grp.A.data() + o, *ho = grp.hoff.data() + o;
                    if (has_hoff) {
#pragma omp simd
                        for (int64_t w = 0; w < kVec; ++w) dH_acc[o + w] += gy[w] * cn;
                    }
#pragma omp simd
                    for (int64_t w = 0; w < kVec; ++w) {
                        dCt[o + w] += gy[w] * (h_t[o + w] + ho[w]);
                        const T ghn = gh[o + w] + cn * gy[w];  // total ∂L/∂h_t
                        const T ga = ghn * h_prev[o + w];       // ∂L/∂(decay)
                        gdt[w] += ga * dec[o + w] * An[w] + ghn * bn * u[w];
                        dA_acc[o + w] += ga * dec[o + w] * dt[w];
                        dBt[o + w] += ghn * dtu[w];
                        gu[w] += ghn * dt[w] * bn;
                        gh[o + w] = ghn * dec[o + w];          // ∂L/∂h_{t−1} through this step
                    }
                }
                for (int64_t w = 0; w < kVec; ++w) {
                    du_g[size_t(t * kVec + w)] = gu[w] + gy[w] * grp.D[w];
                    const T gdt_raw = gdt[w] * grp.slope[size_t(t * kVec + w)];
                    dd_g[size_t(t * kVec + w)] = gdt_raw;
                    accBias[w] += gdt_raw;
                }
            }
        }
        for (int64_t w = 0; w < width; ++w) {
            const int64_t lane = b * E + e0 + w;
            for (int64_t t = 0; t < L; ++t) {
                du[lane * L + t] = du_g[size_t(t * kVec + w)];
                dd[lane * L + t] = dd_g[size_t(t * kVec + w)];
                if (z) dz[lane * L + t] = dz_g[size_t(t * kVec + w)];
            }
            for (int64_t n = 0; n < N; ++n) {
                pA[lane * N + n] = dA_acc[size_t(n * kVec + w)];
                if (has_hoff) pH[lane * N + n] = dH_acc[size_t(n * kVec + w)];
                pH0[lane * N + n] = gh[size_t(n * kVec + w)];
            }
            pD[lane] = accD[w];
            pY[lane] = accY[w];
            pbias[lane] = accBias[w];
        }
    }
    // dB, dC of this item: the channel slots summed in order.
    T* item_dB = pB + item * L * N;
    T* item_dC = pC + item * L * N;
    for (int64_t tn = 0; tn < L * N; ++tn)
        for (int64_t w = 0; w < kVec; ++w) {
            item_dB[tn] += dB_acc[size_t(tn * kVec + w)];
            item_dC[tn] += dC_acc[size_t(tn * kVec + w)];
        }
}

#if SSMTUNE_CPU_DISPATCH
SSMTUNE_AVX2_KERNEL void backward_block_avx2(const ScanArgs& a, const BackwardIo<float>& io, int64_t item) {
    backward_block<float>(a, io, item);
}
#endif

template <class T>
ScanGrads scan_backward(const ScanArgs& a, const Tensor& ckpt_t, const Tensor& gout_t, const Tensor& glast_t) {
    const bool has_hoff = a.hoff.defined(), has_z = a.z.defined();
    const int64_t Bsz = a.B, E = a.E, N = a.N, L = a.L;
    const int64_t nblocks = (E + kLaneBlock - 1) / kLaneBlock, items = Bsz * nblocks;
    const DType dt_type = a.u.dtype();

    ScanGrads g;
    g.du = Tensor::empty({Bsz, E, L}, dt_type);
    g.ddelta = Tensor::empty({Bsz, E, L}, dt_type);
    if (has_z) g.dz = Tensor::empty({Bsz, E, L}, dt_type);
    // Partials: over channel blocks for dB/dC ([items, L, N]); over the batch for per-channel parameters.
    Tensor dB_part = Tensor::zeros({items, L, N}, dt_type), dC_part = Tensor::zeros({items, L, N}, dt_type);
    Tensor dA_part = Tensor::zeros({Bsz, E, N}, dt_type), dhoff_part = Tensor::zeros({Bsz, E, N}, dt_type);
    Tensor dD_part = Tensor::zeros({Bsz, E}, dt_type), dbias_part = Tensor::zeros({Bsz, E}, dt_type),
           dyoff_part = Tensor::zeros({Bsz, E}, dt_type), dh0_all = Tensor::zeros({Bsz, E, N}, dt_type);
    BackwardIo<T> io;
    io.ckpt = ckpt_t.data<T>(), io.gout = gout_t.data<T>(), io.glast = glast_t.defined() ? glast_t.data<T>() : nullptr;
    io.du = g.du.data<T>(), io.dd = g.ddelta.data<T>(), io.dz = has_z ? g.dz.data<T>() : nullptr;
    io.pB = dB_part.data<T>(), io.pC = dC_part.data<T>(), io.pA = dA_part.data<T>(), io.pH = dhoff_part.data<T>();
    io.pH0 = dh0_all.data<T>(), io.pD = dD_part.data<T>(), io.pbias = dbias_part.data<T>();
    io.pY = dyoff_part.data<T>();
    const bool avx2 = std::is_same<T, float>::value && cpu_isa() == CpuIsa::avx2;
    (void)avx2;

#pragma omp parallel for schedule(static) if (Bsz * E * L * N > kParallelGrain)
    for (int64_t item = 0; item < items; ++item) {
#if SSMTUNE_CPU_DISPATCH
        if constexpr (std::is_same<T, float>::value)
            if (avx2) {
                backward_block_avx2(a, io, item);
                continue;
            }
#endif
        backward_block<T>(a, io, item);
    }

    // Fixed-order reductions of the partials.
    g.dB = Tensor::zeros({Bsz, N, L}, dt_type);
    g.dC = Tensor::zeros({Bsz, N, L}, dt_type);
    T *gB = g.dB.data<T>(), *gC = g.dC.data<T>();
    for (int64_t b = 0; b < Bsz; ++b)
        for (int64_t blk = 0; blk < nblocks; ++blk)
            for (int64_t t = 0; t < L; ++t)
                for (int64_t n = 0; n < N; ++n) {
                    gB[(b * N + n) * L + t] += io.pB[((b * nblocks + blk) * L + t) * N + n];
                    gC[(b * N + n) * L + t] += io.pC[((b * nblocks + blk) * L + t) * N + n];
                }
    const auto sum_over_batch = [](const Tensor& part, const Shape& shape) {
        return scan_detail::sum_leading<T>(part, shape);
    };
    g.dA = sum_over_batch(dA_part, {E, N});
    if (a.D.defined()) g.dD = sum_over_batch(dD_part, {E});
    if (a.bias.defined()) g.dbias = sum_over_batch(dbias_part, {E});
    if (has_hoff) g.dhoff = sum_over_batch(dhoff_part, {E, N});
    if (a.yoff.defined()) g.dyoff = sum_over_batch(dyoff_part, {E});
    if (a.h0.defined()) g.dh0 = a.h0_batched ? dh0_all : sum_over_batch(dh0_all, {E, N});
    return g;
}

}  // namespace

namespace detail {
// Tensors on a GPU: ops/selective_scan_cuda.cpp (kernels in cuda/selective_scan.cu).
SelectiveScanResult selective_scan_cuda(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                        const Tensor& C, const SelectiveScanOptions& options);
}  // namespace detail

SelectiveScanResult selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                   const Tensor& C, const SelectiveScanOptions& options) {
    if (u.defined() && u.device().is_cuda()) return detail::selective_scan_cuda(u, delta, A, B, C, options);
    const ScanArgs args = prepare(u, delta, A, B, C, options);
    SelectiveScanResult result;
    result.out = Tensor::empty({args.B, args.E, args.L}, u.dtype());
    if (options.return_last_state) result.last_state = Tensor::empty({args.B, args.E, args.N}, u.dtype());
    Tensor ckpt = Tensor::empty({args.B, args.E, args.nck, args.N}, u.dtype());
    dispatch_float(u.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        scan_forward<T>(args, result.out.data<T>(),
                        options.return_last_state ? result.last_state.data<T>() : nullptr, ckpt.data<T>());
    });
    std::vector<Tensor> outputs = {result.out};
    if (options.return_last_state) outputs.push_back(result.last_state);
    const SelectiveScanOptions& o = options;
    autograd::record("selective_scan",
                     {u, delta, A, B, C, o.D, o.z, o.delta_bias, o.h0, o.state_offset, o.output_offset}, outputs,
                     [args, ckpt, has_last = o.return_last_state](const auto& g, const auto& needs) {
                         const Tensor gout = g[0].contiguous();
                         const Tensor glast = has_last ? g[1].contiguous() : Tensor();
                         ScanGrads r = dispatch_float(args.u.dtype(), [&](auto tag) {
                             using T = typename decltype(tag)::type;
                             return scan_backward<T>(args, ckpt, gout, glast);
                         });
                         std::vector<Tensor> all = {r.du, r.ddelta, r.dA, r.dB, r.dC, r.dD,
                                                    r.dz, r.dbias, r.dh0, r.dhoff, r.dyoff};
                         for (size_t i = 0; i < all.size(); ++i)
                             if (!needs[i]) all[i] = Tensor();
                         return all;
                     });
    return result;
}

SelectiveScanResult selective_scan_reference(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                             const Tensor& C, const SelectiveScanOptions& o) {
    // Plain sequential loops in double over the original layouts; the specification of the op.
    const ScanArgs a = prepare(u, delta, A, B, C, o);
    const auto v = [](const Tensor& t) { return t.defined() ? t.to_vector<double>() : std::vector<double>(); };
    const std::vector<double> uv = v(u), dv = v(delta), Av = v(A), Bv = v(B), Cv = v(C), Dv = v(o.D), zv = v(o.z),
                              bv = v(o.delta_bias), h0v = v(o.h0), hov = v(o.state_offset), yov = v(o.output_offset);
    std::vector<double> out(static_cast<size_t>(a.B * a.E * a.L)), last(static_cast<size_t>(a.B * a.E * a.N));
    for (int64_t b = 0; b < a.B; ++b)
        for (int64_t e = 0; e < a.E; ++e) {
            std::vector<double> h(static_cast<size_t>(a.N), 0.0);
            for (int64_t n = 0; n < a.N; ++n)
                if (!h0v.empty()) h[size_t(n)] = h0v[size_t(((a.h0_batched ? b * a.E : 0) + e) * a.N + n)];
            for (int64_t t = 0; t < a.L; ++t) {
                const size_t i = size_t((b * a.E + e) * a.L + t);
                double dt = dv[i] + (bv.empty() ? 0.0 : bv[size_t(e)]);
                if (o.delta_softplus) dt = dt <= 20 ? std::log1p(std::exp(dt)) : dt;
                double y = 0;
                for (int64_t n = 0; n < a.N; ++n) {
                    const double Bn = Bv[size_t((b * a.N + n) * a.L + t)], Cn = Cv[size_t((b * a.N + n) * a.L + t)];
                    h[size_t(n)] = std::exp(dt * Av[size_t(e * a.N + n)]) * h[size_t(n)] + dt * Bn * uv[i];
                    y += Cn * (h[size_t(n)] + (hov.empty() ? 0.0 : hov[size_t(e * a.N + n)]));
                }
                if (!Dv.empty()) y += Dv[size_t(e)] * uv[i];
                if (!yov.empty()) y += yov[size_t(e)];
                if (!zv.empty()) y *= zv[i] / (1.0 + std::exp(-zv[i]));
                out[i] = y;
            }
            for (int64_t n = 0; n < a.N; ++n) last[size_t((b * a.E + e) * a.N + n)] = h[size_t(n)];
        }
    SelectiveScanResult r;
    r.out = Tensor::from_vector<double>(out, {a.B, a.E, a.L}).to(u.dtype());
    if (o.return_last_state) r.last_state = Tensor::from_vector<double>(last, {a.B, a.E, a.N}).to(u.dtype());
    return r;
}

}  // namespace ssmtune::ops
