// S4D's zero-input response to an initial state (initial-state tuning of S4D; reference/ssm-models.md §2.4):
// with s_{−1} = h0 the recurrence s_t = Ā s_{t−1} + B̄ u_t, y_t = 2·Re(C·s_t) + D u_t (S4DLayer::step's
// convention) adds, by linearity, the outputs of the same recurrence run with u = 0 from h0:
//   Y[h, l] = 2·Re Σ_n W_n e^{μ_n (l+1)},   W = C·h0,   μ = log Ā:   ZOH μ = z = ΔA;
//                                                                   bilinear μ = log((1 + z/2)/(1 − z/2)).
// As in s4d_kernel.cpp, complex numbers live only inside this file (tensors hold real pairs), and every phase
// Im μ·(l+1) is formed in double and exponentiated directly (never by repeated multiplication), so S4D-Inv's
// large imaginary parts stay accurate at long L. Backward, with g_w = ∂L/∂Re w + i ∂L/∂Im w:
//   g_W = 2 Σ_l gY_l conj(e^{μ(l+1)});   g_μ = 2 conj(W) Σ_l gY_l (l+1) conj(e^{μ(l+1)});
//   g_C = g_W conj(h0);   g_h0 = g_W conj(C);   g_z = g_μ conj(μ′(z))  (μ′ = 1 or 1/(1 − z²/4));
//   g_Δ = Re(g_z conj(A));   g_A = g_z Δ;   g_logA_real = −e^{logA_real} Re g_A;   g_A_imag = Im g_A;
//   g_log_dt = Δ Σ_n g_Δ,n.
// Threaded over channels h (each channel's sums run in a fixed order). On a GPU the O(H·M·L) sums are s4d.cu's
// Vandermonde kernels, by the shift W e^{μ(l+1)} = (W e^{μ}) e^{μ l}: forward with the weights W e^{μ}, backward
// Σ_l gY conj(e^{μ(l+1)}) = conj(e^{μ}) S0 and Σ_l gY (l+1) conj(e^{μ(l+1)}) = conj(e^{μ}) (S1 + S0) from the
// kernel's sums S0 = Σ_l gY conj(e^{μl}), S1 = Σ_l gY l conj(e^{μl}); the per-mode algebra stays on the host.
// Not here: a batch of initial states (h0 is shared by the batch, as PEFT's initial-state tuning trains one h0 per
// layer), the D·u and B̄·u parts.
#include <cmath>
#include <complex>

#include "cuda/kernels.h"
#include "ops/op_util.h"
#include "ops/ops.h"
#include "ops/ssm.h"

namespace ssmtune::ops {

namespace {

using cplx = std::complex<double>;

// One mode (h, n): its continuous and discrete parameters and the complex weight W = C·h0.
struct StateMode {
    double dt;
    cplx A, z, C, h0, W, mu, dmu;
};

StateMode make_state_mode(S4DDiscretization m, double log_dt, double c_re, double c_im, double log_a_re,
                          double a_im, double h_re, double h_im) {
    StateMode o;
    o.dt = std::exp(log_dt);
    o.A = cplx(-std::exp(log_a_re), a_im);
    o.z = o.dt * o.A;
    o.C = cplx(c_re, c_im);
    o.h0 = cplx(h_re, h_im);
    o.W = o.C * o.h0;
    if (m == S4DDiscretization::Bilinear) {
        o.mu = std::log((1.0 + o.z / 2.0) / (1.0 - o.z / 2.0));
        o.dmu = 1.0 / (1.0 - o.z * o.z / 4.0);
    } else {
        o.mu = o.z;
        o.dmu = 1.0;
    }
    return o;
}

// The op's inputs as double vectors (copied once, kept by the backward closure).
struct StateParams {
    S4DDiscretization disc;
    int64_t M;
    std::vector<double> log_dt, C, log_A_real, A_imag, h0;
    StateMode mode(int64_t h, int64_t n) const {
        const size_t i = size_t(h * M + n);
        return make_state_mode(disc, log_dt[size_t(h)], C[2 * i], C[2 * i + 1], log_A_real[i], A_imag[i], h0[2 * i],
                               h0[2 * i + 1]);
    }
};

// e^{μ k} = Ā^k with the phase formed in double: e^{Re μ · k} (cos(Im μ · k) + i sin(Im μ · k)).
inline cplx mode_power(cplx mu, int64_t k) {
    const double mag = std::exp(mu.real() * double(k)), ph = mu.imag() * double(k);
    return {mag * std::cos(ph), mag * std::sin(ph)};
}

// (Re, Im of W e^{μ}, Re μ, Im μ) of every mode: the Vandermonde kernel's table for the powers l + 1.
Tensor shifted_mode_table(const StateParams& p, int64_t H, Device device) {
    std::vector<double> t;
    t.reserve(size_t(H * p.M * 4));
    for (int64_t i = 0; i < H * p.M; ++i) {
        const StateMode o = p.mode(i / p.M, i % p.M);
        const cplx w = o.W * mode_power(o.mu, 1);
        t.insert(t.end(), {w.real(), w.imag(), o.mu.real(), o.mu.imag()});
    }
    return Tensor::from_vector(t, {H, p.M, 4}).to(device);
}

void check_state_args(const Tensor& log_dt, const Tensor& C, const Tensor& lar, const Tensor& ai, const Tensor& h0,
                      int64_t L) {
    const char* op = "s4d_initial_state_response";
    for (auto [t, name] : {std::pair<const Tensor*, const char*>{&log_dt, "log_dt"}, {&C, "C"}, {&lar, "log_A_real"},
                           {&ai, "A_imag"}, {&h0, "h0"}}) {
        check_float_input(*t, op, name, kCudaKernel);
        check_same_kind(log_dt, *t, op);
    }
    SSMTUNE_CHECK(log_dt.dim() == 1, op, ": log_dt must be [H], got ", log_dt.describe());
    const int64_t H = log_dt.size(0);
    SSMTUNE_CHECK(lar.dim() == 2 && lar.size(0) == H, op, ": log_A_real must be [H=", H, ", N/2], got ",
                  lar.describe());
    const int64_t M = lar.size(1);
    SSMTUNE_CHECK(ai.shape() == lar.shape(), op, ": A_imag must be ", shape_str(lar.shape()), ", got ", ai.describe());
    SSMTUNE_CHECK(C.shape() == Shape({H, M, 2}), op, ": C must be [", H, ", ", M, ", 2], got ", C.describe());
    SSMTUNE_CHECK(h0.shape() == Shape({H, M, 2}), op, ": h0 must be [H=", H, ", N/2=", M,
                  ", 2] (complex mode states as real, imaginary pairs), got ", h0.describe(),
                  "; fix: one initial state per channel and mode, shared by the batch");
    SSMTUNE_CHECK(L >= 0, op, ": L must be >= 0, got ", L);
}

}  // namespace

Tensor s4d_initial_state_response(const Tensor& log_dt, const Tensor& C, const Tensor& log_A_real,
                                  const Tensor& A_imag, const Tensor& h0, int64_t L, S4DDiscretization disc) {
    check_state_args(log_dt, C, log_A_real, A_imag, h0, L);
    const int64_t H = log_dt.size(0), M = log_A_real.size(1);
    const StateParams p{disc,
                        M,
                        log_dt.to_vector<double>(),
                        C.to_vector<double>(),
                        log_A_real.to_vector<double>(),
                        A_imag.to_vector<double>(),
                        h0.to_vector<double>()};
    const Device device = log_dt.device();
    const DType dtype = log_dt.dtype();
    Tensor Y;
    if (device.is_cuda()) {  // the sums on the GPU (cuda/s4d.cu), shifted by one power (see the file comment)
        Y = Tensor::empty({H, L}, dtype, device);
        const Tensor table = shifted_mode_table(p, H, device);
        cuda::s4d_vandermonde(device.index, dtype, table.data<double>(), Y.raw_data(), H, M, L);
    } else {
        std::vector<double> y(static_cast<size_t>(H * L), 0.0);
#pragma omp parallel for schedule(static) if (H * M * L > kParallelGrain)
        for (int64_t h = 0; h < H; ++h) {
            for (int64_t n = 0; n < M; ++n) {
                const StateMode o = p.mode(h, n);
                for (int64_t l = 0; l < L; ++l) y[size_t(h * L + l)] += 2.0 * (o.W * mode_power(o.mu, l + 1)).real();
            }
        }
        Y = Tensor::from_vector<double>(y, {H, L}).to(dtype);  // [H, L]
    }
    autograd::record(
        "s4d_initial_state_response", {log_dt, C, log_A_real, A_imag, h0}, {Y},
        [p, H, M, L, dtype, device](const auto& g, const auto&) {
            // Σ_l gY conj(Ā^{l+1}) and Σ_l gY (l+1) conj(Ā^{l+1}) for every mode.
            std::vector<cplx> sums_w(size_t(H * M)), sums_k(size_t(H * M));
            if (device.is_cuda()) {
                const Tensor gy = g[0].contiguous(), table = shifted_mode_table(p, H, device);
                Tensor sums = Tensor::empty({H, M, 4}, DType::F64, device);
                cuda::s4d_vandermonde_backward(device.index, dtype, table.data<double>(), gy.raw_data(),
                                               sums.data<double>(), H, M, L);
                const std::vector<double> v = sums.to_vector<double>();
                for (int64_t i = 0; i < H * M; ++i) {
                    const cplx shift = std::conj(mode_power(p.mode(i / M, i % M).mu, 1));
                    const cplx s0(v[size_t(4 * i)], v[size_t(4 * i + 1)]), s1(v[size_t(4 * i + 2)], v[size_t(4 * i + 3)]);
                    sums_w[size_t(i)] = shift * s0;
                    sums_k[size_t(i)] = shift * (s1 + s0);
                }
            } else {
                const std::vector<double> gy = g[0].template to_vector<double>();
#pragma omp parallel for schedule(static) if (H * M * L > kParallelGrain)
                for (int64_t i = 0; i < H * M; ++i) {
                    const StateMode o = p.mode(i / M, i % M);
                    for (int64_t l = 0; l < L; ++l) {
                        const cplx v = std::conj(mode_power(o.mu, l + 1)) * gy[size_t((i / M) * L + l)];
                        sums_w[size_t(i)] += v;
                        sums_k[size_t(i)] += v * double(l + 1);
                    }
                }
            }
            std::vector<double> d_logdt(size_t(H), 0.0), dC(size_t(H * M * 2)), d_lar(size_t(H * M)),
                d_ai(size_t(H * M)), dh0(size_t(H * M * 2));
            for (int64_t h = 0; h < H; ++h) {
                for (int64_t n = 0; n < M; ++n) {
                    const size_t i = size_t(h * M + n);
                    const StateMode o = p.mode(h, n);
                    const cplx sum_w = sums_w[i], sum_k = sums_k[i];
                    const cplx gW = 2.0 * sum_w, gmu = 2.0 * std::conj(o.W) * sum_k;
                    const cplx gC = gW * std::conj(o.h0), gh0 = gW * std::conj(o.C);
                    const cplx gz = gmu * std::conj(o.dmu);
                    const double gdt = (gz * std::conj(o.A)).real();
                    const cplx gA = gz * o.dt;
                    dC[2 * i] = gC.real();
                    dC[2 * i + 1] = gC.imag();
                    dh0[2 * i] = gh0.real();
                    dh0[2 * i + 1] = gh0.imag();
                    d_lar[i] = o.A.real() * gA.real();  // ∂Re A/∂log_A_real = −e^{log_A_real} = Re A
                    d_ai[i] = gA.imag();
                    d_logdt[size_t(h)] += o.dt * gdt;  // modes of one channel, in order
                }
            }
            return std::vector<Tensor>{Tensor::from_vector<double>(d_logdt, {H}).to(dtype).to(device),
                                       Tensor::from_vector<double>(dC, {H, M, 2}).to(dtype).to(device),
                                       Tensor::from_vector<double>(d_lar, {H, M}).to(dtype).to(device),
                                       Tensor::from_vector<double>(d_ai, {H, M}).to(dtype).to(device),
                                       Tensor::from_vector<double>(dh0, {H, M, 2}).to(dtype).to(device)};
        });
    return Y;
}

}  // namespace ssmtune::ops
