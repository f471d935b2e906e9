// Causal long convolution of each channel with its own kernel (S4D's y = K * u), forward and backward.
//
//   y[b, h, t] = Σ_{0 ≤ l ≤ t, l < Lk} K[h, l] · u[b, h, t − l]
//   du[b, h, t] = Σ_l K[h, l] · gy[b, h, t + l]            (the adjoint: a correlation)
//   dK[h, l]    = Σ_{b, t} gy[b, h, t] · u[b, h, t − l]
// Two algorithms giving the same numbers: the direct sums (the specification, used for short inputs) and an
// FFT of size n ≥ L + Lk − 1 (zero padding removes the circular wrap-around), with products in double.
// Threaded over channels; dK sums over the batch in order, so results do not depend on the thread count.
// On a GPU (cuda/s4d.cu) the same two algorithms: direct sums, or cuFFT real transforms in double.
// Not here: non-causal (bidirectional) kernels, kernels longer than the input beyond Lk (they are truncated).
#include <complex>

#include "cuda/kernels.h"
#include "ops/fft.h"
#include "ops/op_util.h"
#include "ops/ops.h"
#include "ops/ssm.h"

namespace ssmtune::ops {

namespace {

using cvec = std::vector<std::complex<double>>;

bool use_fft(ConvAlgorithm algorithm, int64_t L, int64_t Lk) {
    if (algorithm != ConvAlgorithm::Auto) return algorithm == ConvAlgorithm::FFT;
    return L > 64 && Lk > 16;
}

cvec padded(const double* x, int64_t len, int64_t n) {
    cvec a(static_cast<size_t>(n));
    for (int64_t i = 0; i < len; ++i) a[size_t(i)] = x[i];
    fft_inplace(a, false);
    return a;
}

// The three maps on doubles: mode 0 forward (a = u, k = K → y), 1 input adjoint (a = gy, k = K → du),
// 2 kernel adjoint (a = gy, k = u → dK contribution); out has out_len entries.
void conv_direct(int mode, const double* a, const double* k, int64_t L, int64_t Lk, double* out) {
    if (mode == 0) {
        for (int64_t t = 0; t < L; ++t) {
            double acc = 0;
            for (int64_t l = 0; l <= std::min(t, Lk - 1); ++l) acc += k[l] * a[t - l];
            out[t] = acc;
        }
    } else if (mode == 1) {
        for (int64_t t = 0; t < L; ++t) {
            double acc = 0;
            for (int64_t l = 0; l < Lk && t + l < L; ++l) acc += k[l] * a[t + l];
            out[t] = acc;
        }
    } else {
        for (int64_t l = 0; l < Lk; ++l) {
            double acc = 0;
            for (int64_t t = l; t < L; ++t) acc += a[t] * k[t - l];
            out[l] += acc;
        }
    }
}

void conv_fft(int mode, const cvec& fa, const cvec& fk, int64_t out_len, double* out) {
    cvec p(fa.size());
    for (size_t i = 0; i < fa.size(); ++i) p[i] = mode == 0 ? fa[i] * fk[i] : fa[i] * std::conj(fk[i]);
    fft_inplace(p, true);
    for (int64_t i = 0; i < out_len; ++i) {
        if (mode == 2) out[i] += p[size_t(i)].real();
        else out[i] = p[size_t(i)].real();
    }
}

// The GPU path (cuda/s4d.cu): the same three maps, direct or by cuFFT in double.
Tensor causal_conv_cuda(const Tensor& u, const Tensor& K, bool fft) {
    const int64_t B = u.size(0), H = u.size(1), L = u.size(2), Lk = K.size(1);
    const int device = u.device().index;
    const Tensor uc = u.detach().contiguous(), kc = K.detach().contiguous();
    Tensor out = Tensor::empty({B, H, L}, u.dtype(), u.device());
    cuda::long_conv(device, u.dtype(), 0, fft, uc.raw_data(), kc.raw_data(), out.raw_data(), B, H, L, Lk);
    autograd::record("causal_conv", {u, K}, {out}, [uc, kc, B, H, L, Lk, fft, device](const auto& g, const auto& needs) {
        const Tensor gc = g[0].contiguous();
        std::vector<Tensor> grads(2);
        if (needs[0]) {
            grads[0] = Tensor::empty({B, H, L}, gc.dtype(), gc.device());
            cuda::long_conv(device, gc.dtype(), 1, fft, gc.raw_data(), kc.raw_data(), grads[0].raw_data(), B, H, L, Lk);
        }
        if (needs[1]) {
            grads[1] = Tensor::empty({H, Lk}, gc.dtype(), gc.device());
            cuda::long_conv(device, gc.dtype(), 2, fft, gc.raw_data(), uc.raw_data(), grads[1].raw_data(), B, H, L, Lk);
        }
        return grads;
    });
    return out;
}

}  // namespace

Tensor causal_conv(const Tensor& u, const Tensor& K, ConvAlgorithm algorithm) {
    check_float_input(u, "causal_conv", "u", kCudaKernel);
    check_float_input(K, "causal_conv", "K", kCudaKernel);
    check_same_kind(u, K, "causal_conv");
    SSMTUNE_CHECK(u.dim() == 3, "causal_conv: u must be [B, H, L], got ", u.describe());
    SSMTUNE_CHECK(K.dim() == 2 && K.size(0) == u.size(1), "causal_conv: K must be [H=", u.size(1), ", Lk], got ",
                  K.describe());
    const int64_t B = u.size(0), H = u.size(1), L = u.size(2), Lk = K.size(1);
    const bool fft = use_fft(algorithm, L, Lk) && L > 0 && Lk > 0;
    if (u.device().is_cuda()) return causal_conv_cuda(u, K, fft);
    const int64_t n = fft ? next_pow2(L + Lk - 1) : 0;
    const std::vector<double> uv = u.to_vector<double>(), kv = K.to_vector<double>();
    std::vector<double> y(static_cast<size_t>(B * H * L), 0.0);
#pragma omp parallel for schedule(static) if (B * H * L * std::min(L, Lk) > kParallelGrain)
    for (int64_t h = 0; h < H; ++h) {
        const cvec fk = fft ? padded(kv.data() + h * Lk, Lk, n) : cvec();
        for (int64_t b = 0; b < B; ++b) {
            const double* ub = uv.data() + (b * H + h) * L;
            double* yb = y.data() + (b * H + h) * L;
            if (fft) conv_fft(0, padded(ub, L, n), fk, L, yb);
            else conv_direct(0, ub, kv.data() + h * Lk, L, Lk, yb);
        }
    }
    Tensor out = Tensor::from_vector<double>(y, {B, H, L}).to(u.dtype());
    autograd::record("causal_conv", {u, K}, {out}, [uv, kv, B, H, L, Lk, fft, n, dtype = u.dtype()](const auto& g, const auto& needs) {
        const std::vector<double> gy = g[0].template to_vector<double>();
        std::vector<double> du(needs[0] ? size_t(B * H * L) : 0), dk(needs[1] ? size_t(H * Lk) : 0, 0.0);
#pragma omp parallel for schedule(static) if (B * H * L * std::min(L, Lk) > kParallelGrain)
        for (int64_t h = 0; h < H; ++h) {
            const cvec fk = fft && needs[0] ? padded(kv.data() + h * Lk, Lk, n) : cvec();
            for (int64_t b = 0; b < B; ++b) {
                const double* gb = gy.data() + (b * H + h) * L;
                const double* ub = uv.data() + (b * H + h) * L;
                const cvec fg = fft ? padded(gb, L, n) : cvec();
                if (needs[0]) {
                    if (fft) conv_fft(1, fg, fk, L, du.data() + (b * H + h) * L);
                    else conv_direct(1, gb, kv.data() + h * Lk, L, Lk, du.data() + (b * H + h) * L);
                }
                if (needs[1]) {
                    if (fft) conv_fft(2, fg, padded(ub, L, n), Lk, dk.data() + h * Lk);
                    else conv_direct(2, gb, ub, L, Lk, dk.data() + h * Lk);
                }
            }
        }
        return std::vector<Tensor>{needs[0] ? Tensor::from_vector<double>(du, {B, H, L}).to(dtype) : Tensor(),
                                   needs[1] ? Tensor::from_vector<double>(dk, {H, Lk}).to(dtype) : Tensor()};
    });
    return out;
}

}  // namespace ssmtune::ops
