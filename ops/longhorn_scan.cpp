// Longhorn's scan (Liu, Wang, Wu, Feng, Stone, Liu 2024, "Longhorn: State Space Models are Amortized Online
// Learners", eq. for the diagonal implicit online-regression update; code semantics of selective_scan_online7):
//   β = σ(dt + bias),  S = Σ_n k_n²,  ε = β/(1 + βS),  h_t = (1 − ε k²) ⊙ h_{t−1} + ε k x_t,
//   y_t = q_t·(h_t + h′) + D x_t + y′,  out_t = y_t · SiLU(z_t)
// The forget factor 1 − ε k² lies in (0, 1] by construction, so no exp is needed and the scan is stable.
// Same structure as selective_scan.cpp: checkpoints every `checkpoint_every` steps, backward recomputes each
// chunk's states and runs the adjoint recurrence right to left, taking h_{t−1} from the recomputed states
// (never dividing by the forget factor, which the official kernel does). Gradient through the normaliser:
// ∂ε/∂β = 1/(1+βS)², ∂ε/∂S = −ε², so dk_n gains 2 k_n · Σ_e(−ε² gε) (reference/ssm-models.md §3.4).
// Deterministic: per-block partials over channels (dk, dq, dS) and per-batch partials over the batch.
// Tensors on a GPU go to ops/longhorn_scan_cuda.cpp (the same recurrence as a block-level parallel scan,
// cuda/longhorn_scan.cu, checked against this file). Not here: the official kernel's fused projections; complex states.
#include <algorithm>
#include <cmath>

#include "ops/ops.h"
#include "ops/scan_common.h"
#include "ops/ssm.h"

namespace ssmtune::ops {

namespace {

using scan_detail::kLaneBlock;
using scan_detail::sigmoid;

struct HornArgs {
    Tensor x, dt, kt, qt, ksq, D, z, bias, h0, hoff, yoff;  // kt, qt: [B, L, N]; ksq: [B, L] = Σ k²
    bool h0_batched = false;
    int64_t B = 0, E = 0, N = 0, L = 0, ck = 1, nck = 0;
};

HornArgs prepare(const Tensor& x, const Tensor& dt, const Tensor& k, const Tensor& q, const LonghornScanOptions& o) {
    const char* op = "longhorn_scan";
    check_float_input(x, op, "x");
    SSMTUNE_CHECK(x.dim() == 3, op, ": x must be [B, E, L], got ", x.describe());
    SSMTUNE_CHECK(k.defined() && k.dim() == 3, op, ": k must be [B, N, L], got ", k.describe());
    HornArgs a;
    a.B = x.size(0), a.E = x.size(1), a.L = x.size(2), a.N = k.size(1);
    SSMTUNE_CHECK(o.checkpoint_every >= 1, op, ": checkpoint_every must be >= 1");
    a.ck = o.checkpoint_every;
    a.nck = (a.L + a.ck - 1) / a.ck;
    const auto take = [&](const Tensor& t, const Shape& shape, const char* name) {
        return scan_detail::take_arg(t, x, shape, op, name);
    };
    a.x = x.detach().contiguous();
    a.dt = take(dt, {a.B, a.E, a.L}, "dt");
    SSMTUNE_CHECK(a.dt.defined() && q.defined(), op, ": dt and q are required");
    a.kt = take(k, {a.B, a.N, a.L}, "k").transpose(1, 2).contiguous();
    a.qt = take(q, {a.B, a.N, a.L}, "q").transpose(1, 2).contiguous();
    a.D = take(o.D, {a.E}, "D");
    a.z = take(o.z, {a.B, a.E, a.L}, "z");
    a.bias = take(o.dt_bias, {a.E}, "dt_bias");
    if (o.h0.defined()) {
        a.h0_batched = o.h0.dim() == 3;
        a.h0 = take(o.h0, a.h0_batched ? Shape{a.B, a.E, a.N} : Shape{a.E, a.N}, "h0");
    }
    a.hoff = take(o.state_offset, {a.E, a.N}, "state_offset");
    a.yoff = take(o.output_offset, {a.E}, "output_offset");
    a.ksq = Tensor::empty({a.B, a.L}, x.dtype());
    dispatch_float(x.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* kt = a.kt.data<T>();
        T* s = a.ksq.data<T>();
        for (int64_t bt = 0; bt < a.B * a.L; ++bt) {
            T acc = 0;
            for (int64_t n = 0; n < a.N; ++n) acc += kt[bt * a.N + n] * kt[bt * a.N + n];
            s[bt] = acc;
        }
    });
    return a;
}

// Pointers of the optional arguments, for the kernels.
template <class T>
struct HornPtrs {
    const T *x, *dt, *kt, *qt, *ksq, *D, *z, *bias, *h0, *hoff, *yoff;
    explicit HornPtrs(const HornArgs& a)
        : x(a.x.data<T>()), dt(a.dt.data<T>()), kt(a.kt.data<T>()), qt(a.qt.data<T>()), ksq(a.ksq.data<T>()),
          D(a.D.defined() ? a.D.data<T>() : nullptr), z(a.z.defined() ? a.z.data<T>() : nullptr),
          bias(a.bias.defined() ? a.bias.data<T>() : nullptr), h0(a.h0.defined() ? a.h0.data<T>() : nullptr),
          hoff(a.hoff.defined() ? a.hoff.data<T>() : nullptr), yoff(a.yoff.defined() ? a.yoff.data<T>() : nullptr) {}
    // β and ε for lane (b, e) at time t.
    void step_sizes(const HornArgs& a, int64_t lane, int64_t b, int64_t e, int64_t t, T& beta, T& eps) const {
        beta = sigmoid(dt[lane * a.L + t] + (bias ? bias[e] : T(0)));
        eps = beta / (T(1) + beta * ksq[b * a.L + t]);
    }
};

template <class T>
void horn_forward(const HornArgs& a, T* out, T* last, T* ckpt) {
    const HornPtrs<T> p(a);
    const int64_t lanes = a.B * a.E, N = a.N, L = a.L;
#pragma omp parallel for schedule(static) if (lanes * L * N > kParallelGrain)
    for (int64_t lane = 0; lane < lanes; ++lane) {
        const int64_t b = lane / a.E, e = lane % a.E;
        std::vector<T> h(static_cast<size_t>(N), T(0));
        if (p.h0) std::copy_n(p.h0 + (a.h0_batched ? lane : e) * N, N, h.data());
        for (int64_t t = 0; t < L; ++t) {
            if (t % a.ck == 0) std::copy_n(h.data(), N, ckpt + (lane * a.nck + t / a.ck) * N);
            T beta, eps;
            p.step_sizes(a, lane, b, e, t, beta, eps);
            const T xx = p.x[lane * L + t];
            const T *kn = p.kt + (b * L + t) * N, *qn = p.qt + (b * L + t) * N;
            T y = 0;
            for (int64_t n = 0; n < N; ++n) {
                h[size_t(n)] = (T(1) - eps * kn[n] * kn[n]) * h[size_t(n)] + eps * kn[n] * xx;
                y += qn[n] * (p.hoff ? h[size_t(n)] + p.hoff[e * N + n] : h[size_t(n)]);
            }
            if (p.D) y += p.D[e] * xx;
            if (p.yoff) y += p.yoff[e];
            if (p.z) y *= p.z[lane * L + t] * sigmoid(p.z[lane * L + t]);
            out[lane * L + t] = y;
        }
        if (last) std::copy_n(h.data(), N, last + lane * N);
    }
}

// Gradients in the order of the record: x, dt, k, q, D, z, dt_bias, h0, h′, y′.
template <class T>
std::vector<Tensor> horn_backward(const HornArgs& a, const Tensor& ckpt_t, const Tensor& gout_t, const Tensor& glast_t) {
    const HornPtrs<T> p(a);
    const T *ckpt = ckpt_t.data<T>(), *gout = gout_t.data<T>();
    const T* glast = glast_t.defined() ? glast_t.data<T>() : nullptr;
    const int64_t Bsz = a.B, E = a.E, N = a.N, L = a.L, ck = a.ck;
    const int64_t nblocks = (E + kLaneBlock - 1) / kLaneBlock, items = Bsz * nblocks;
    const DType dtype = a.x.dtype();
    Tensor dx = Tensor::empty({Bsz, E, L}, dtype), ddt = Tensor::empty({Bsz, E, L}, dtype);
    Tensor dz = p.z ? Tensor::empty({Bsz, E, L}, dtype) : Tensor();
    Tensor dk_part = Tensor::zeros({items, L, N}, dtype), dq_part = Tensor::zeros({items, L, N}, dtype),
           dS_part = Tensor::zeros({items, L}, dtype);
    Tensor dD_part = Tensor::zeros({Bsz, E}, dtype), dbias_part = Tensor::zeros({Bsz, E}, dtype),
           dy_part = Tensor::zeros({Bsz, E}, dtype), dh_part = Tensor::zeros({Bsz, E, N}, dtype),
           dh0_all = Tensor::zeros({Bsz, E, N}, dtype);
    T *pdx = dx.data<T>(), *pddt = ddt.data<T>(), *pdz = p.z ? dz.data<T>() : nullptr;
    T *pk = dk_part.data<T>(), *pq = dq_part.data<T>(), *pS = dS_part.data<T>(), *pD = dD_part.data<T>(),
      *pbias = dbias_part.data<T>(), *pY = dy_part.data<T>(), *pH = dh_part.data<T>(), *pH0 = dh0_all.data<T>();

#pragma omp parallel for schedule(static) if (Bsz * E * L * N > kParallelGrain)
    for (int64_t item = 0; item < items; ++item) {
        const int64_t b = item / nblocks, e_begin = (item % nblocks) * kLaneBlock, e_end = std::min(E, e_begin + kLaneBlock);
        std::vector<T> hs(static_cast<size_t>((ck + 1) * N)), gh(static_cast<size_t>(N));
        T *item_dk = pk + item * L * N, *item_dq = pq + item * L * N, *item_dS = pS + item * L;
        for (int64_t e = e_begin; e < e_end; ++e) {
            const int64_t lane = b * E + e;
            for (int64_t n = 0; n < N; ++n) gh[size_t(n)] = glast ? glast[lane * N + n] : T(0);
            for (int64_t c = a.nck - 1; c >= 0; --c) {
                const int64_t start = c * ck, len = std::min(ck, L - start);
                std::copy_n(ckpt + (lane * a.nck + c) * N, N, hs.data());
                for (int64_t i = 0; i < len; ++i) {
                    const int64_t t = start + i;
                    T beta, eps;
                    p.step_sizes(a, lane, b, e, t, beta, eps);
                    const T xx = p.x[lane * L + t];
                    const T* kn = p.kt + (b * L + t) * N;
                    for (int64_t n = 0; n < N; ++n)
                        hs[size_t((i + 1) * N + n)] = (T(1) - eps * kn[n] * kn[n]) * hs[size_t(i * N + n)] + eps * kn[n] * xx;
                }
                for (int64_t i = len - 1; i >= 0; --i) {
                    const int64_t t = start + i;
                    T beta, eps;
                    p.step_sizes(a, lane, b, e, t, beta, eps);
                    const T xx = p.x[lane * L + t];
                    const T *kn = p.kt + (b * L + t) * N, *qn = p.qt + (b * L + t) * N;
                    const T *h_t = hs.data() + (i + 1) * N, *h_prev = hs.data() + i * N;
                    T gy = gout[lane * L + t];
                    if (p.z) {
                        T y = p.D ? p.D[e] * xx : T(0);
                        if (p.yoff) y += p.yoff[e];
                        for (int64_t n = 0; n < N; ++n) y += qn[n] * (p.hoff ? h_t[n] + p.hoff[e * N + n] : h_t[n]);
                        const T zz = p.z[lane * L + t], s = sigmoid(zz);
                        pdz[lane * L + t] = gy * y * s * (T(1) + zz * (T(1) - s));
                        gy *= zz * s;
                    }
                    if (p.D) pD[lane] += gy * xx;
                    if (p.yoff) pY[lane] += gy;
                    T geps = 0, gx = p.D ? gy * p.D[e] : T(0);
                    for (int64_t n = 0; n < N; ++n) {
                        item_dq[t * N + n] += gy * (p.hoff ? h_t[n] + p.hoff[e * N + n] : h_t[n]);
                        if (p.hoff) pH[lane * N + n] += gy * qn[n];
                        const T ghn = gh[size_t(n)] + qn[n] * gy;  // total ∂L/∂h_t
                        const T k = kn[n];
                        geps += ghn * (k * xx - k * k * h_prev[n]);
                        item_dk[t * N + n] += ghn * (eps * xx - T(2) * eps * k * h_prev[n]);
                        gx += ghn * eps * k;
                        gh[size_t(n)] = ghn * (T(1) - eps * k * k);
                    }
                    const T denom = T(1) + beta * p.ksq[b * L + t];
                    item_dS[t] += -eps * eps * geps;                      // through ε's normaliser
                    const T graw = geps / (denom * denom) * beta * (T(1) - beta);  // ∂ε/∂β · ∂β/∂raw
                    pddt[lane * L + t] = graw;
                    if (p.bias) pbias[lane] += graw;
                    pdx[lane * L + t] = gx;
                }
            }
            std::copy_n(gh.data(), N, pH0 + lane * N);
        }
    }
    // dk (direct part summed over blocks, then + 2 k dS), dq, both back to [B, N, L].
    Tensor dk = Tensor::zeros({Bsz, N, L}, dtype), dq = Tensor::zeros({Bsz, N, L}, dtype);
    T *gk = dk.data<T>(), *gq = dq.data<T>();
    for (int64_t b = 0; b < Bsz; ++b)
        for (int64_t t = 0; t < L; ++t) {
            T dS = 0;
            for (int64_t blk = 0; blk < nblocks; ++blk) dS += pS[(b * nblocks + blk) * L + t];
            for (int64_t n = 0; n < N; ++n) {
                T sk = 0, sq = 0;
                for (int64_t blk = 0; blk < nblocks; ++blk) {
                    sk += pk[((b * nblocks + blk) * L + t) * N + n];
                    sq += pq[((b * nblocks + blk) * L + t) * N + n];
                }
                gk[(b * N + n) * L + t] = sk + T(2) * p.kt[(b * L + t) * N + n] * dS;
                gq[(b * N + n) * L + t] = sq;
            }
        }
    using scan_detail::sum_leading;
    return {dx,
            ddt,
            dk,
            dq,
            p.D ? sum_leading<T>(dD_part, {E}) : Tensor(),
            dz,
            p.bias ? sum_leading<T>(dbias_part, {E}) : Tensor(),
            p.h0 ? (a.h0_batched ? dh0_all : sum_leading<T>(dh0_all, {E, N})) : Tensor(),
            p.hoff ? sum_leading<T>(dh_part, {E, N}) : Tensor(),
            p.yoff ? sum_leading<T>(dy_part, {E}) : Tensor()};
}

}  // namespace

namespace detail {
// Tensors on a GPU: ops/longhorn_scan_cuda.cpp (kernels in cuda/longhorn_scan.cu).
LonghornScanResult longhorn_scan_cuda(const Tensor& x, const Tensor& dt, const Tensor& k, const Tensor& q,
                                      const LonghornScanOptions& options);
}  // namespace detail

LonghornScanResult longhorn_scan(const Tensor& x, const Tensor& dt, const Tensor& k, const Tensor& q,
                                 const LonghornScanOptions& o) {
    if (x.defined() && x.device().is_cuda()) return detail::longhorn_scan_cuda(x, dt, k, q, o);
    const HornArgs args = prepare(x, dt, k, q, o);
    LonghornScanResult result;
    result.out = Tensor::empty({args.B, args.E, args.L}, x.dtype());
    if (o.return_last_state) result.last_state = Tensor::empty({args.B, args.E, args.N}, x.dtype());
    Tensor ckpt = Tensor::empty({args.B, args.E, args.nck, args.N}, x.dtype());
    dispatch_float(x.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        horn_forward<T>(args, result.out.data<T>(), o.return_last_state ? result.last_state.data<T>() : nullptr,
                        ckpt.data<T>());
    });
    std::vector<Tensor> outputs = {result.out};
    if (o.return_last_state) outputs.push_back(result.last_state);
    autograd::record("longhorn_scan", {x, dt, k, q, o.D, o.z, o.dt_bias, o.h0, o.state_offset, o.output_offset},
                     outputs, [args, ckpt, has_last = o.return_last_state](const auto& g, const auto& needs) {
                         const Tensor gout = g[0].contiguous(), glast = has_last ? g[1].contiguous() : Tensor();
                         std::vector<Tensor> all = dispatch_float(args.x.dtype(), [&](auto tag) {
                             using T = typename decltype(tag)::type;
                             return horn_backward<T>(args, ckpt, gout, glast);
                         });
                         for (size_t i = 0; i < all.size(); ++i)
                             if (!needs[i]) all[i] = Tensor();
                         return all;
                     });
    return result;
}

LonghornScanResult longhorn_scan_reference(const Tensor& x, const Tensor& dt, const Tensor& k, const Tensor& q,
                                           const LonghornScanOptions& o) {
    // Plain sequential loops in double over the original layouts; the specification of the op.
    const HornArgs a = prepare(x, dt, k, q, o);
    const auto v = [](const Tensor& t) { return t.defined() ? t.to_vector<double>() : std::vector<double>(); };
    const std::vector<double> xv = v(x), dv = v(dt), kv = v(k), qv = v(q), Dv = v(o.D), zv = v(o.z), bv = v(o.dt_bias),
                              h0v = v(o.h0), hov = v(o.state_offset), yov = v(o.output_offset);
    std::vector<double> out(static_cast<size_t>(a.B * a.E * a.L)), last(static_cast<size_t>(a.B * a.E * a.N));
    for (int64_t b = 0; b < a.B; ++b)
        for (int64_t e = 0; e < a.E; ++e) {
            std::vector<double> h(static_cast<size_t>(a.N), 0.0);
            for (int64_t n = 0; n < a.N; ++n)
                if (!h0v.empty()) h[size_t(n)] = h0v[size_t(((a.h0_batched ? b * a.E : 0) + e) * a.N + n)];
            for (int64_t t = 0; t < a.L; ++t) {
                const size_t i = size_t((b * a.E + e) * a.L + t);
                const double beta = 1.0 / (1.0 + std::exp(-(dv[i] + (bv.empty() ? 0.0 : bv[size_t(e)]))));
                double S = 0;
                for (int64_t n = 0; n < a.N; ++n) S += kv[size_t((b * a.N + n) * a.L + t)] * kv[size_t((b * a.N + n) * a.L + t)];
                const double eps = beta / (1.0 + beta * S);
                double y = 0;
                for (int64_t n = 0; n < a.N; ++n) {
                    const double kn = kv[size_t((b * a.N + n) * a.L + t)], qn = qv[size_t((b * a.N + n) * a.L + t)];
                    h[size_t(n)] = (1.0 - eps * kn * kn) * h[size_t(n)] + eps * kn * xv[i];
                    y += qn * (h[size_t(n)] + (hov.empty() ? 0.0 : hov[size_t(e * a.N + n)]));
                }
                if (!Dv.empty()) y += Dv[size_t(e)] * xv[i];
                if (!yov.empty()) y += yov[size_t(e)];
                if (!zv.empty()) y *= zv[i] / (1.0 + std::exp(-zv[i]));
                out[i] = y;
            }
            for (int64_t n = 0; n < a.N; ++n) last[size_t((b * a.E + e) * a.N + n)] = h[size_t(n)];
        }
    LonghornScanResult r;
    r.out = Tensor::from_vector<double>(out, {a.B, a.E, a.L}).to(x.dtype());
    if (o.return_last_state) r.last_state = Tensor::from_vector<double>(last, {a.B, a.E, a.N}).to(x.dtype());
    return r;
}

}  // namespace ssmtune::ops
