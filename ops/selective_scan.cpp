// Mamba's selective scan (Gu & Dao 2023, Algorithm 2; mamba_ssm's selective_scan_ref semantics), with the
// state-based PEFT extras (initial state h0, state offset h′, output offset y′) and a hand-written backward.
//
//   Δ_t = softplus(δ_t + bias) (or δ_t + bias);   h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t u_t   (per channel e, N states)
//   y_t = C_t·(h_t + h′) + D u_t + y′;   out_t = y_t · SiLU(z_t)
// Forward walks each (b, e) lane over time, saving the state every `checkpoint_every` steps (memory
// B·E·N·L/chunk, never B·E·L·N). Backward walks each lane's chunks right to left: it recomputes the chunk's
// states from its checkpoint, then runs the adjoint recurrence gh_t = C_t gy_t + exp(Δ_{t+1} A) gh_{t+1}
// (reference/ssm-models.md §1.4), taking h_{t−1} from the recomputed states (no division).
// Determinism: lanes are grouped in fixed blocks of kLaneBlock channels; reductions over channels (dB, dC) go
// through per-block partial buffers and reductions over the batch (dA, dD, dbias, dh′, dy′, dh0) through
// per-batch partials, all summed in a fixed order, so results do not depend on the thread count.
// Not here: complex A, grouped B/C (G > 1), the fused conv/projections of mamba_ssm's MambaInnerFn.
#include <algorithm>
#include <cmath>

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

template <class T>
void scan_forward(const ScanArgs& a, T* out, T* last, T* ckpt) {
    const T *u = a.u.data<T>(), *delta = a.delta.data<T>(), *A = a.A.data<T>(), *Bt = a.Bt.data<T>(),
            *Ct = a.Ct.data<T>();
    const T* D = a.D.defined() ? a.D.data<T>() : nullptr;
    const T* z = a.z.defined() ? a.z.data<T>() : nullptr;
    const T* bias = a.bias.defined() ? a.bias.data<T>() : nullptr;
    const T* h0 = a.h0.defined() ? a.h0.data<T>() : nullptr;
    const T* hoff = a.hoff.defined() ? a.hoff.data<T>() : nullptr;
    const T* yoff = a.yoff.defined() ? a.yoff.data<T>() : nullptr;
    const int64_t lanes = a.B * a.E, N = a.N, L = a.L;
#pragma omp parallel for schedule(static) if (lanes * L * N > kParallelGrain)
    for (int64_t lane = 0; lane < lanes; ++lane) {
        const int64_t b = lane / a.E, e = lane % a.E;
        std::vector<T> h(static_cast<size_t>(N), T(0)), dts(static_cast<size_t>(L)), gates(z ? size_t(L) : 0);
        if (h0) std::copy_n(h0 + (a.h0_batched ? lane : e) * N, N, h.data());
        lane_deltas<T>(a, delta, bias, lane, e, dts.data(), nullptr);
        if (z) lane_gates<T>(z + lane * L, L, gates.data(), nullptr);
        const T* An = A + e * N;
        for (int64_t t = 0; t < L; ++t) {
            if (t % a.ck == 0) std::copy_n(h.data(), N, ckpt + (lane * a.nck + t / a.ck) * N);
            const T dt = dts[size_t(t)], uu = u[lane * L + t];
            const T *Bn = Bt + (b * L + t) * N, *Cn = Ct + (b * L + t) * N;
            T* hp = h.data();
#pragma omp simd
            for (int64_t n = 0; n < N; ++n) hp[n] = scan_exp(dt * An[n]) * hp[n] + dt * Bn[n] * uu;
            T y = 0;
            if (hoff) {
                const T* ho = hoff + e * N;
#pragma omp simd reduction(+ : y)
                for (int64_t n = 0; n < N; ++n) y += Cn[n] * (hp[n] + ho[n]);
            } else {
#pragma omp simd reduction(+ : y)
                for (int64_t n = 0; n < N; ++n) y += Cn[n] * hp[n];
            }
            if (D) y += D[e] * uu;
            if (yoff) y += yoff[e];
            if (z) y *= gates[size_t(t)];
            out[lane * L + t] = y;
        }
        if (last) std::copy_n(h.data(), N, last + lane * N);
    }
}

// Gradients, one per scan input, in the order of the autograd record below.
struct ScanGrads {
    Tensor du, ddelta, dA, dB, dC, dD, dz, dbias, dh0, dhoff, dyoff;
};

template <class T>
ScanGrads scan_backward(const ScanArgs& a, const Tensor& ckpt_t, const Tensor& gout_t, const Tensor& glast_t) {
    const T *u = a.u.data<T>(), *delta = a.delta.data<T>(), *A = a.A.data<T>(), *Bt = a.Bt.data<T>(),
            *Ct = a.Ct.data<T>(), *ckpt = ckpt_t.data<T>(), *gout = gout_t.data<T>();
    const T* glast = glast_t.defined() ? glast_t.data<T>() : nullptr;
    const T* D = a.D.defined() ? a.D.data<T>() : nullptr;
    const T* z = a.z.defined() ? a.z.data<T>() : nullptr;
    const T* bias = a.bias.defined() ? a.bias.data<T>() : nullptr;
    const T* hoff = a.hoff.defined() ? a.hoff.data<T>() : nullptr;
    const T* yoff = a.yoff.defined() ? a.yoff.data<T>() : nullptr;
    const int64_t Bsz = a.B, E = a.E, N = a.N, L = a.L, ck = a.ck;
    const int64_t nblocks = (E + kLaneBlock - 1) / kLaneBlock, items = Bsz * nblocks;
    const DType dt_type = a.u.dtype();

    ScanGrads g;
    g.du = Tensor::empty({Bsz, E, L}, dt_type);
    g.ddelta = Tensor::empty({Bsz, E, L}, dt_type);
    if (z) g.dz = Tensor::empty({Bsz, E, L}, dt_type);
    // Partials: over channel blocks for dB/dC ([items, L, N]); over the batch for per-channel parameters.
    Tensor dB_part = Tensor::zeros({items, L, N}, dt_type), dC_part = Tensor::zeros({items, L, N}, dt_type);
    Tensor dA_part = Tensor::zeros({Bsz, E, N}, dt_type), dhoff_part = Tensor::zeros({Bsz, E, N}, dt_type);
    Tensor dD_part = Tensor::zeros({Bsz, E}, dt_type), dbias_part = Tensor::zeros({Bsz, E}, dt_type),
           dyoff_part = Tensor::zeros({Bsz, E}, dt_type), dh0_all = Tensor::zeros({Bsz, E, N}, dt_type);
    T *du = g.du.data<T>(), *dd = g.ddelta.data<T>(), *dz = z ? g.dz.data<T>() : nullptr;
    T *pB = dB_part.data<T>(), *pC = dC_part.data<T>(), *pA = dA_part.data<T>(), *pH = dhoff_part.data<T>(),
      *pD = dD_part.data<T>(), *pbias = dbias_part.data<T>(), *pY = dyoff_part.data<T>(), *pH0 = dh0_all.data<T>();

#pragma omp parallel for schedule(static) if (Bsz * E * L * N > kParallelGrain)
    for (int64_t item = 0; item < items; ++item) {
        const int64_t b = item / nblocks, e_begin = (item % nblocks) * kLaneBlock, e_end = std::min(E, e_begin + kLaneBlock);
        // Per lane: Δ_t, ∂Δ_t/∂δ_t and σ(z_t) for all t; per chunk: the recomputed states and their decays.
        std::vector<T> hs(static_cast<size_t>((ck + 1) * N)), decays(static_cast<size_t>(ck * N)), gh(static_cast<size_t>(N));
        std::vector<T> dts(static_cast<size_t>(L)), slopes(static_cast<size_t>(L)), gates(z ? size_t(L) : 0), sigs(z ? size_t(L) : 0);
        T* item_dB = pB + item * L * N;
        T* item_dC = pC + item * L * N;
        for (int64_t e = e_begin; e < e_end; ++e) {
            const int64_t lane = b * E + e;
            const T* An = A + e * N;
            lane_deltas<T>(a, delta, bias, lane, e, dts.data(), slopes.data());
            if (z) lane_gates<T>(z + lane * L, L, gates.data(), sigs.data());
            for (int64_t n = 0; n < N; ++n) gh[size_t(n)] = glast ? glast[lane * N + n] : T(0);
            for (int64_t c = a.nck - 1; c >= 0; --c) {
                const int64_t start = c * ck, len = std::min(ck, L - start);
                // Recompute this chunk's states: hs[i] = h before step start+i, hs[len] = after the last step;
                // decays[i] = exp(Δ A) of step start+i, reused by the adjoint below.
                std::copy_n(ckpt + (lane * a.nck + c) * N, N, hs.data());
                for (int64_t i = 0; i < len; ++i) {
                    const int64_t t = start + i;
                    const T dt = dts[size_t(t)], uu = u[lane * L + t];
                    const T* Bn = Bt + (b * L + t) * N;
                    const T* prev = hs.data() + i * N;
                    T* next = hs.data() + (i + 1) * N;
                    T* dec = decays.data() + i * N;
#pragma omp simd
                    for (int64_t n = 0; n < N; ++n) {
                        dec[n] = scan_exp(dt * An[n]);
                        next[n] = dec[n] * prev[n] + dt * Bn[n] * uu;
                    }
                }
                for (int64_t i = len - 1; i >= 0; --i) {
                    const int64_t t = start + i;
                    const T dt = dts[size_t(t)], uu = u[lane * L + t];
                    const T *Bn = Bt + (b * L + t) * N, *Cn = Ct + (b * L + t) * N;
                    const T *h_t = hs.data() + (i + 1) * N, *h_prev = hs.data() + i * N, *dec = decays.data() + i * N;
                    // Output side: out = y · SiLU(z)  →  gy, gz.
                    T gy = gout[lane * L + t];
                    if (z) {
                        T y = D ? D[e] * uu : T(0);
                        if (yoff) y += yoff[e];
#pragma omp simd reduction(+ : y)
                        for (int64_t n = 0; n < N; ++n) y += Cn[n] * (hoff ? h_t[n] + hoff[e * N + n] : h_t[n]);
                        const T zz = z[lane * L + t], s = sigs[size_t(t)];
                        dz[lane * L + t] = gy * y * s * (T(1) + zz * (T(1) - s));
                        gy *= gates[size_t(t)];
                    }
                    if (D) pD[lane] += gy * uu;
                    if (yoff) pY[lane] += gy;
                    T gdt = 0, gu = 0;
                    T *ghp = gh.data(), *dCt = item_dC + t * N, *dBt = item_dB + t * N, *dAl = pA + lane * N;
                    if (hoff) {
                        T* dHl = pH + lane * N;
                        const T* ho = hoff + e * N;
#pragma omp simd
                        for (int64_t n = 0; n < N; ++n) {
                            dCt[n] += gy * (h_t[n] + ho[n]);
                            dHl[n] += gy * Cn[n];
                        }
                    } else {
#pragma omp simd
                        for (int64_t n = 0; n < N; ++n) dCt[n] += gy * h_t[n];
                    }
#pragma omp simd reduction(+ : gdt, gu)
                    for (int64_t n = 0; n < N; ++n) {
                        const T ghn = ghp[n] + Cn[n] * gy;  // total ∂L/∂h_t
                        const T ga = ghn * h_prev[n];        // ∂L/∂(decay)
                        gdt += ga * dec[n] * An[n] + ghn * Bn[n] * uu;
                        dAl[n] += ga * dec[n] * dt;
                        dBt[n] += ghn * dt * uu;
                        gu += ghn * dt * Bn[n];
                        ghp[n] = ghn * dec[n];              // ∂L/∂h_{t−1} through this step
                    }
                    if (D) gu += gy * D[e];
                    const T gdt_raw = gdt * slopes[size_t(t)];
                    dd[lane * L + t] = gdt_raw;
                    if (bias) pbias[lane] += gdt_raw;
                    du[lane * L + t] = gu;
                }
            }
            std::copy_n(gh.data(), N, pH0 + lane * N);
        }
    }

    // Fixed-order reductions of the partials.
    g.dB = Tensor::zeros({Bsz, N, L}, dt_type);
    g.dC = Tensor::zeros({Bsz, N, L}, dt_type);
    T *gB = g.dB.data<T>(), *gC = g.dC.data<T>();
    for (int64_t b = 0; b < Bsz; ++b)
        for (int64_t blk = 0; blk < nblocks; ++blk)
            for (int64_t t = 0; t < L; ++t)
                for (int64_t n = 0; n < N; ++n) {
                    gB[(b * N + n) * L + t] += pB[((b * nblocks + blk) * L + t) * N + n];
                    gC[(b * N + n) * L + t] += pC[((b * nblocks + blk) * L + t) * N + n];
                }
    const auto sum_over_batch = [](const Tensor& part, const Shape& shape) {
        return scan_detail::sum_leading<T>(part, shape);
    };
    g.dA = sum_over_batch(dA_part, {E, N});
    if (D) g.dD = sum_over_batch(dD_part, {E});
    if (bias) g.dbias = sum_over_batch(dbias_part, {E});
    if (hoff) g.dhoff = sum_over_batch(dhoff_part, {E, N});
    if (yoff) g.dyoff = sum_over_batch(dyoff_part, {E});
    if (a.h0.defined()) g.dh0 = a.h0_batched ? dh0_all : sum_over_batch(dh0_all, {E, N});
    return g;
}

}  // namespace

SelectiveScanResult selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                   const Tensor& C, const SelectiveScanOptions& options) {
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
