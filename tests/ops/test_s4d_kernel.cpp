// s4d_kernel and causal_conv: plain-loop references (std::complex), the recurrent form's impulse response,
// float64 gradients of every input for ZOH and bilinear, FFT path == direct path, and errors.
#include "test_util.h"

#include <complex>

#include "ops/fft.h"
#include "ops/ssm.h"

using namespace ssmtune;
using namespace ssmtune::testing;
using cplx = std::complex<double>;

namespace {

struct S4DParams {
    Tensor log_dt, C, lar, ai;
};

S4DParams make_params(int64_t H, int64_t M, bool inv_init, bool requires_grad = true) {
    S4DParams p;
    p.log_dt = Tensor::uniform({H}, 1, std::log(1e-3), std::log(1e-1), DType::F64);
    p.C = Tensor::randn({H, M, 2}, 2, DType::F64);
    p.lar = Tensor::full({H, M}, std::log(0.5), DType::F64) + Tensor::randn({H, M}, 3, DType::F64) * 0.1;
    p.ai = Tensor::zeros({H, M}, DType::F64);
    for (int64_t h = 0; h < H; ++h)
        for (int64_t n = 0; n < M; ++n)
            p.ai.set({h, n}, inv_init ? double(2 * M) / M_PI * (double(2 * M) / double(2 * n + 1) - 1.0) : M_PI * double(n));
    for (Tensor* t : {&p.log_dt, &p.C, &p.lar, &p.ai}) {
        *t = t->detach().contiguous();
        if (requires_grad) t->set_requires_grad(true);
    }
    return p;
}

// K[h, l] = 2 Re Σ W Ā^l by the recurrence of the discrete SSM driven by an impulse: s_0 = B̄, s_l = Ā s_{l−1},
// K_l = 2 Re(C s_l) (B = 1), in std::complex<double>.
Tensor kernel_by_recurrence(const S4DParams& p, int64_t L, bool bilinear) {
    const int64_t H = p.log_dt.size(0), M = p.lar.size(1);
    Tensor K = Tensor::zeros({H, L}, DType::F64);
    for (int64_t h = 0; h < H; ++h)
        for (int64_t n = 0; n < M; ++n) {
            const double dt = std::exp(p.log_dt.at({h}));
            const cplx A(-std::exp(p.lar.at({h, n})), p.ai.at({h, n})), C(p.C.at({h, n, 0}), p.C.at({h, n, 1}));
            const cplx a_bar = bilinear ? (1.0 + dt * A / 2.0) / (1.0 - dt * A / 2.0) : std::exp(dt * A);
            const cplx b_bar = bilinear ? dt / (1.0 - dt * A / 2.0) : (std::exp(dt * A) - 1.0) / A;
            cplx s = b_bar;
            for (int64_t l = 0; l < L; ++l) {
                K.set({h, l}, K.at({h, l}) + 2.0 * (C * s).real());
                s *= a_bar;
            }
        }
    return K;
}

}  // namespace

TEST_CASE("s4d_kernel equals the impulse response of the recurrence (ZOH and bilinear)") {
    for (bool inv : {false, true}) {
        S4DParams p = make_params(3, 4, inv, false);
        expect_close(ops::s4d_kernel(p.log_dt, p.C, p.lar, p.ai, 50), kernel_by_recurrence(p, 50, false), 1e-9, 1e-11, "zoh");
        expect_close(ops::s4d_kernel(p.log_dt, p.C, p.lar, p.ai, 50, ops::S4DDiscretization::Bilinear),
                     kernel_by_recurrence(p, 50, true), 1e-9, 1e-11, "bilinear");
    }
}

TEST_CASE("s4d_kernel float32 tracks float64 and survives A close to zero") {
    S4DParams p = make_params(2, 3, true, false);
    Tensor k64 = ops::s4d_kernel(p.log_dt, p.C, p.lar, p.ai, 200);
    Tensor k32 = ops::s4d_kernel(p.log_dt.to(DType::F32), p.C.to(DType::F32), p.lar.to(DType::F32), p.ai.to(DType::F32), 200);
    expect_close(k32, k64, 1e-4, 1e-5, "float32");
    Tensor tiny = Tensor::full({2, 3}, -30.0, DType::F64), zero = Tensor::zeros({2, 3}, DType::F64);
    for (double v : ops::s4d_kernel(p.log_dt, p.C, tiny, zero, 10).to_vector<double>()) CHECK(std::isfinite(v));
}

TEST_CASE("s4d_kernel gradients of every parameter in float64") {
    for (bool inv : {false, true}) {
        S4DParams p = make_params(2, 2, inv);
        for (auto method : {ops::S4DDiscretization::ZOH, ops::S4DDiscretization::Bilinear})
            expect_gradcheck([method](const auto& in) { return ops::s4d_kernel(in[0], in[1], in[2], in[3], 9, method); },
                             {p.log_dt, p.C, p.lar, p.ai});
    }
}

TEST_CASE("fft round trip and convolution theorem") {
    std::vector<cplx> a(16);
    for (size_t i = 0; i < a.size(); ++i) a[i] = cplx(std::sin(double(i)), std::cos(3.0 * double(i)));
    auto b = a;
    ops::fft_inplace(b, false);
    ops::fft_inplace(b, true);
    for (size_t i = 0; i < a.size(); ++i) CHECK(std::abs(a[i] - b[i]) < 1e-14);
    CHECK(ops::next_pow2(17) == 32);
    std::vector<cplx> bad(12);
    CHECK_THROWS_AS(ops::fft_inplace(bad, false), Error);
}

TEST_CASE("causal_conv direct and FFT paths match a plain loop") {
    for (const auto& sizes : {std::pair<int64_t, int64_t>{5, 5}, {9, 3}, {300, 300}, {1000, 1000}, {130, 40}}) {
        const int64_t L = sizes.first, Lk = sizes.second;  // not a structured binding: INFO captures them
        Tensor u = Tensor::randn({2, 3, L}, 4, DType::F64), K = Tensor::randn({3, Lk}, 5, DType::F64);
        Tensor ref = Tensor::zeros({2, 3, L}, DType::F64);
        if (L <= 300) {
            for (int64_t b = 0; b < 2; ++b)
                for (int64_t h = 0; h < 3; ++h)
                    for (int64_t t = 0; t < L; ++t) {
                        double acc = 0;
                        for (int64_t l = 0; l <= t && l < Lk; ++l) acc += K.at({h, l}) * u.at({b, h, t - l});
                        ref.set({b, h, t}, acc);
                    }
        } else {
            ref = ops::causal_conv(u, K, ops::ConvAlgorithm::Direct);
        }
        INFO("L " << L << " Lk " << Lk);
        expect_close(ops::causal_conv(u, K, ops::ConvAlgorithm::Direct), ref, 1e-12, 1e-12, "direct");
        expect_close(ops::causal_conv(u, K, ops::ConvAlgorithm::FFT), ref, 1e-10, 1e-10, "fft");
        Tensor y32 = ops::causal_conv(u.to(DType::F32), K.to(DType::F32), ops::ConvAlgorithm::FFT);
        expect_close(y32, ref, 1e-4, 1e-3, "fft float32");
    }
}

TEST_CASE("causal_conv gradients in float64 on both paths") {
    Tensor u = rand_input({2, 2, 9}, 6), K = rand_input({2, 9}, 7), Ks = rand_input({2, 4}, 8);
    for (auto algo : {ops::ConvAlgorithm::Direct, ops::ConvAlgorithm::FFT}) {
        expect_gradcheck([algo](const auto& in) { return ops::causal_conv(in[0], in[1], algo); }, {u, K});
        expect_gradcheck([algo](const auto& in) { return ops::causal_conv(in[0], in[1], algo); }, {u, Ks});
    }
    Tensor ul = Tensor::randn({2, 2, 200}, 9, DType::F64).set_requires_grad(true);
    Tensor Kl = Tensor::randn({2, 200}, 10, DType::F64).set_requires_grad(true);
    Tensor w = Tensor::randn({2, 2, 200}, 11, DType::F64);
    ops::sum(ops::mul(ops::causal_conv(ul, Kl, ops::ConvAlgorithm::FFT), w)).backward();
    Tensor gu = ul.grad(), gk = Kl.grad();
    ul.zero_grad();
    Kl.zero_grad();
    ops::sum(ops::mul(ops::causal_conv(ul, Kl, ops::ConvAlgorithm::Direct), w)).backward();
    expect_close(gu, ul.grad(), 1e-10, 1e-10, "du fft vs direct");
    expect_close(gk, Kl.grad(), 1e-10, 1e-10, "dK fft vs direct");
}

TEST_CASE("s4d ops reject bad shapes") {
    S4DParams p = make_params(2, 3, false, false);
    CHECK_THROWS_AS(ops::s4d_kernel(p.log_dt, p.C.narrow(1, 0, 2), p.lar, p.ai, 5), Error);
    CHECK_THROWS_AS(ops::causal_conv(Tensor::zeros({1, 3, 5}), Tensor::zeros({2, 5})), Error);
}
