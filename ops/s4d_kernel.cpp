// S4D's Vandermonde kernel and its backward (Gu, Gupta, Goel, Ré 2022, "On the Parameterization and
// Initialization of Diagonal State Space Models", eq. for K with ZOH or bilinear discretisation).
//
//   K[h, l] = 2·Re Σ_n W_n e^{λ_n l};  W = C·Δ·φ(z),  z = ΔA   (ZOH: φ(z) = (e^z − 1)/z, λ = z;
//                                                              bilinear: φ(z) = 1/(1 − z/2), λ = log((1+z/2)/(1−z/2)))
// Complex numbers live only inside this file (std::complex<double>); tensors hold real pairs. Every phase λ·l
// is formed in double and exponentiated directly (never by repeated multiplication), which keeps S4D-Inv's
// large imaginary parts accurate at long L (reference/ssm-models.md §2.6). φ uses a series near z = 0, where
// (e^z − 1)/z would cancel. Backward, with g_w = ∂L/∂Re w + i ∂L/∂Im w (§2.5):
//   g_W = 2 Σ_l gK_l conj(e^{λl});   g_λ = 2 conj(W) Σ_l gK_l l conj(e^{λl});
//   g_z = g_λ conj(λ′) + g_W conj(CΔφ′);   g_C = g_W conj(Δφ);   g_Δ = Re(g_W conj(Cφ)) + Re(g_z conj(A));
//   g_A = g_z Δ;   g_logA_real = −e^{logA_real} Re g_A;   g_A_imag = Im g_A;   g_log_dt = Δ g_Δ.
// Threaded over channels h (each channel's sums run in a fixed order). On a GPU the O(H·M·L) sums run in
// cuda/s4d.cu; the per-mode algebra above stays here, on the host, for both. Not here: the DPLR (full S4) kernel.
#include <cmath>
#include <complex>

#include "cuda/kernels.h"
#include "ops/op_util.h"
#include "ops/ops.h"
#include "ops/ssm.h"

namespace ssmtune::ops {

namespace {

using cplx = std::complex<double>;

// φ(z) and φ′(z) for the method.
void phi(S4DDiscretization m, cplx z, cplx& f, cplx& df) {
    if (m == S4DDiscretization::Bilinear) {
        const cplx d = 1.0 - z / 2.0;
        f = 1.0 / d;
        df = 0.5 / (d * d);
        return;
    }
    if (std::abs(z) < 1e-3) {  // series of (e^z − 1)/z and its derivative
        f = 1.0 + z * (0.5 + z * (1.0 / 6.0 + z * (1.0 / 24.0 + z / 120.0)));
        df = 0.5 + z * (1.0 / 3.0 + z * (1.0 / 8.0 + z * (1.0 / 30.0)));
        return;
    }
    const cplx ez = std::exp(z);
    f = (ez - 1.0) / z;
    df = (ez * z - ez + 1.0) / (z * z);
}

// λ(z) and λ′(z).
void lambda(S4DDiscretization m, cplx z, cplx& lam, cplx& dlam) {
    if (m == S4DDiscretization::Bilinear) {
        lam = std::log((1.0 + z / 2.0) / (1.0 - z / 2.0));
        dlam = 1.0 / (1.0 - z * z / 4.0);
        return;
    }
    lam = z;
    dlam = 1.0;
}

struct Mode {
    double dt;
    cplx A, z, C, W, f, df, lam, dlam;
};

Mode make_mode(S4DDiscretization m, double log_dt, double c_re, double c_im, double log_a_re, double a_im) {
    Mode o;
    o.dt = std::exp(log_dt);
    o.A = cplx(-std::exp(log_a_re), a_im);
    o.z = o.dt * o.A;
    o.C = cplx(c_re, c_im);
    phi(m, o.z, o.f, o.df);
    lambda(m, o.z, o.lam, o.dlam);
    o.W = o.C * o.dt * o.f;
    return o;
}

// e^{λ l} with the phase formed in double: e^{Re λ · l} (cos(Im λ · l) + i sin(Im λ · l)).
inline cplx power(cplx lam, int64_t l) {
    const double mag = std::exp(lam.real() * double(l)), ph = lam.imag() * double(l);
    return {mag * std::cos(ph), mag * std::sin(ph)};
}

void check_args(const Tensor& log_dt, const Tensor& C, const Tensor& lar, const Tensor& ai, int64_t L) {
    const char* op = "s4d_kernel";
    for (auto [t, name] : {std::pair<const Tensor*, const char*>{&log_dt, "log_dt"}, {&C, "C"}, {&lar, "log_A_real"}, {&ai, "A_imag"}}) {
        check_float_input(*t, op, name, kCudaKernel);
        check_same_kind(log_dt, *t, op);
    }
    SSMTUNE_CHECK(log_dt.dim() == 1, op, ": log_dt must be [H], got ", log_dt.describe());
    const int64_t H = log_dt.size(0);
    SSMTUNE_CHECK(lar.dim() == 2 && lar.size(0) == H, op, ": log_A_real must be [H=", H, ", N/2], got ", lar.describe());
    const int64_t M = lar.size(1);
    SSMTUNE_CHECK(ai.shape() == lar.shape(), op, ": A_imag must be ", shape_str(lar.shape()), ", got ", ai.describe());
    SSMTUNE_CHECK(C.shape() == Shape({H, M, 2}), op, ": C must be [", H, ", ", M, ", 2], got ", C.describe());
    SSMTUNE_CHECK(L >= 0, op, ": L must be >= 0, got ", L);
}

// The modes of every channel, (h, n) row-major, from the parameters' values.
std::vector<Mode> all_modes(S4DDiscretization method, const std::vector<double>& ld, const std::vector<double>& cv,
                            const std::vector<double>& lar, const std::vector<double>& ai, int64_t H, int64_t M) {
    std::vector<Mode> modes(static_cast<size_t>(H * M));
    for (int64_t h = 0; h < H; ++h)
        for (int64_t n = 0; n < M; ++n) {
            const size_t i = size_t(h * M + n);
            modes[i] = make_mode(method, ld[size_t(h)], cv[2 * i], cv[2 * i + 1], lar[i], ai[i]);
        }
    return modes;
}

// (Re W, Im W, Re λ, Im λ) of every mode, for the GPU kernels.
Tensor mode_table(const std::vector<Mode>& modes, int64_t H, int64_t M, Device device) {
    std::vector<double> t;
    t.reserve(modes.size() * 4);
    for (const Mode& o : modes) t.insert(t.end(), {o.W.real(), o.W.imag(), o.lam.real(), o.lam.imag()});
    return Tensor::from_vector(t, {H, M, 4}).to(device);
}

}  // namespace

Tensor s4d_kernel(const Tensor& log_dt, const Tensor& C, const Tensor& log_A_real, const Tensor& A_imag, int64_t L,
                  S4DDiscretization method) {
    check_args(log_dt, C, log_A_real, A_imag, L);
    const int64_t H = log_dt.size(0), M = log_A_real.size(1);
    const Device device = log_dt.device();
    const std::vector<Mode> modes = all_modes(method, log_dt.to_vector<double>(), C.to_vector<double>(),
                                              log_A_real.to_vector<double>(), A_imag.to_vector<double>(), H, M);
    Tensor K;
    if (device.is_cuda()) {  // the O(H·M·L) sums on the GPU (cuda/s4d.cu), the modes from the host
        K = Tensor::empty({H, L}, log_dt.dtype(), device);
        const Tensor table = mode_table(modes, H, M, device);
        cuda::s4d_vandermonde(device.index, log_dt.dtype(), table.data<double>(), K.raw_data(), H, M, L);
    } else {
        std::vector<double> k(static_cast<size_t>(H * L), 0.0);
#pragma omp parallel for schedule(static) if (H * M * L > kParallelGrain)
        for (int64_t h = 0; h < H; ++h)
            for (int64_t n = 0; n < M; ++n) {
                const Mode& o = modes[size_t(h * M + n)];
                for (int64_t l = 0; l < L; ++l) k[size_t(h * L + l)] += 2.0 * (o.W * power(o.lam, l)).real();
            }
        K = Tensor::from_vector<double>(k, {H, L}).to(log_dt.dtype());
    }
    autograd::record("s4d_kernel", {log_dt, C, log_A_real, A_imag}, {K},
                     [modes, lar = log_A_real.to_vector<double>(), H, M, L, device, dtype = log_dt.dtype()](
                         const auto& g, const auto&) {
        // Σ_l gK conj(V_l) and Σ_l gK l conj(V_l) for every mode.
        std::vector<cplx> sum_w(static_cast<size_t>(H * M)), sum_l(static_cast<size_t>(H * M));
        if (device.is_cuda()) {
            const Tensor gk = g[0].contiguous(), table = mode_table(modes, H, M, device);
            Tensor sums = Tensor::empty({H, M, 4}, DType::F64, device);
            cuda::s4d_vandermonde_backward(device.index, dtype, table.data<double>(), gk.raw_data(),
                                           sums.data<double>(), H, M, L);
            const std::vector<double> v = sums.to_vector<double>();
            for (size_t i = 0; i < sum_w.size(); ++i) {
                sum_w[i] = cplx(v[4 * i], v[4 * i + 1]);
                sum_l[i] = cplx(v[4 * i + 2], v[4 * i + 3]);
            }
        } else {
            const std::vector<double> gk = g[0].template to_vector<double>();
#pragma omp parallel for schedule(static) if (H * M * L > kParallelGrain)
            for (int64_t h = 0; h < H; ++h)
                for (int64_t n = 0; n < M; ++n) {
                    const size_t i = size_t(h * M + n);
                    for (int64_t l = 0; l < L; ++l) {
                        const cplx v = std::conj(power(modes[i].lam, l)) * gk[size_t(h * L + l)];
                        sum_w[i] += v;
                        sum_l[i] += v * double(l);
                    }
                }
        }
        std::vector<double> g_logdt(size_t(H), 0.0), g_c(size_t(H * M * 2)), g_lar(size_t(H * M)), g_ai(size_t(H * M));
        for (int64_t h = 0; h < H; ++h)
            for (int64_t n = 0; n < M; ++n) {
                const size_t i = size_t(h * M + n);
                const Mode& o = modes[i];
                const cplx gW = 2.0 * sum_w[i], glam = 2.0 * std::conj(o.W) * sum_l[i];
                const cplx gz = glam * std::conj(o.dlam) + gW * std::conj(o.C * o.dt * o.df);
                const cplx gC = gW * std::conj(o.dt * o.f);
                const double gdt = (gW * std::conj(o.C * o.f)).real() + (gz * std::conj(o.A)).real();
                const cplx gA = gz * o.dt;
                g_c[2 * i] = gC.real();
                g_c[2 * i + 1] = gC.imag();
                g_lar[i] = -std::exp(lar[i]) * gA.real();
                g_ai[i] = gA.imag();
                g_logdt[size_t(h)] += o.dt * gdt;  // modes of one channel, in order
            }
        return std::vector<Tensor>{Tensor::from_vector<double>(g_logdt, {H}).to(dtype).to(device),
                                   Tensor::from_vector<double>(g_c, {H, M, 2}).to(dtype).to(device),
                                   Tensor::from_vector<double>(g_lar, {H, M}).to(dtype).to(device),
                                   Tensor::from_vector<double>(g_ai, {H, M}).to(dtype).to(device)};
    });
    return K;
}

}  // namespace ssmtune::ops
