// s4d_initial_state_response: against the plain zero-input recurrence started from h0 (std::complex, one step
// at a time) for ZOH and bilinear, S4D-Lin and S4D-Inv-like imaginary parts up to L = 512; linearity (the full
// recurrence from h0 with an input equals kernel convolution + D u + the response); float32 computes in double;
// float64 gradient checks of all five inputs; shape errors.
#include "test_util.h"

#include <complex>

#include "ops/ssm.h"

using namespace ssmtune;
using namespace ssmtune::testing;
using cplx = std::complex<double>;

namespace {

struct StateInputs {
    Tensor log_dt, C, lar, ai, h0;
    std::vector<Tensor> all() const { return {log_dt, C, lar, ai, h0}; }
};

// H channels, M = N/2 modes; "inv" gives S4D-Inv's imaginary parts (N/π)(N/(2n+1) − 1), N = 2M (≈ 1300 at N = 64).
StateInputs make_inputs(int64_t H, int64_t M, bool inv, uint64_t seed, bool requires_grad = true) {
    StateInputs p;
    p.log_dt = Tensor::uniform({H}, seed, std::log(1e-3), std::log(1e-1), DType::F64);
    p.C = Tensor::randn({H, M, 2}, seed + 1, DType::F64) * std::sqrt(0.5);
    p.lar = Tensor::full({H, M}, std::log(0.5), DType::F64) + Tensor::randn({H, M}, seed + 2, DType::F64) * 0.2;
    p.h0 = Tensor::randn({H, M, 2}, seed + 3, DType::F64);
    p.ai = Tensor::zeros({H, M}, DType::F64);
    const double N = double(2 * M);
    for (int64_t h = 0; h < H; ++h)
        for (int64_t n = 0; n < M; ++n)
            p.ai.set({h, n}, inv ? N / M_PI * (N / double(2 * n + 1) - 1.0) : M_PI * double(n));
    for (Tensor* t : {&p.log_dt, &p.C, &p.lar, &p.ai, &p.h0}) {
        *t = t->detach().contiguous();
        if (requires_grad) t->set_requires_grad(true);
    }
    return p;
}

struct Discrete {
    cplx a_bar, b_bar, C;
};

Discrete discretize(const StateInputs& p, int64_t h, int64_t n, bool bilinear) {
    const double dt = std::exp(p.log_dt.at({h}));
    const cplx A(-std::exp(p.lar.at({h, n})), p.ai.at({h, n})), z = dt * A;
    Discrete d;
    d.C = cplx(p.C.at({h, n, 0}), p.C.at({h, n, 1}));
    d.a_bar = bilinear ? (1.0 + z / 2.0) / (1.0 - z / 2.0) : std::exp(z);
    d.b_bar = bilinear ? dt / (1.0 - z / 2.0) : (std::exp(z) - 1.0) / A;
    return d;
}

// The recurrence s_t = Ā s_{t−1} + B̄ u_t, s_{−1} = h0, y_t = 2 Re Σ_n C_n s_t,n (+ D u_t), run one step at a
// time. u [B, H, L] (undefined: zero input, B = 1) -> y [B, H, L]; D may be undefined.
Tensor recurrence(const StateInputs& p, int64_t L, bool bilinear, const Tensor& u = Tensor(), const Tensor& D = Tensor()) {
    const int64_t H = p.log_dt.size(0), M = p.lar.size(1), B = u.defined() ? u.size(0) : 1;
    Tensor y = Tensor::zeros({B, H, L}, DType::F64);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h) {
            for (int64_t n = 0; n < M; ++n) {
                const Discrete d = discretize(p, h, n, bilinear);
                cplx s(p.h0.at({h, n, 0}), p.h0.at({h, n, 1}));
                for (int64_t t = 0; t < L; ++t) {
                    s = d.a_bar * s + d.b_bar * (u.defined() ? u.at({b, h, t}) : 0.0);
                    y.set({b, h, t}, y.at({b, h, t}) + 2.0 * (d.C * s).real());
                }
            }
            if (D.defined())
                for (int64_t t = 0; t < L; ++t) y.set({b, h, t}, y.at({b, h, t}) + D.at({h}) * u.at({b, h, t}));
        }
    return y;
}

ops::S4DDiscretization method(bool bilinear) {
    return bilinear ? ops::S4DDiscretization::Bilinear : ops::S4DDiscretization::ZOH;
}

}  // namespace

TEST_CASE("s4d initial state response equals the zero-input recurrence from h0 (ZOH, bilinear, Lin, Inv, L to 512)") {
    struct Shape3 {
        int64_t H, M, L;
    };
    for (const Shape3 s : {Shape3{3, 4, 1}, Shape3{3, 4, 50}, Shape3{2, 32, 512}}) {
        for (bool inv : {false, true}) {
            const StateInputs p = make_inputs(s.H, s.M, inv, 11, false);
            for (bool bilinear : {false, true}) {
                const std::string label = "H " + std::to_string(s.H) + " M " + std::to_string(s.M) + " L " +
                                          std::to_string(s.L) + (inv ? " inv" : " lin") + (bilinear ? " bilinear" : " zoh");
                INFO(label);
                Tensor Y = ops::s4d_initial_state_response(p.log_dt, p.C, p.lar, p.ai, p.h0, s.L, method(bilinear));
                REQUIRE(Y.shape() == Shape{s.H, s.L});
                const Tensor ref = recurrence(p, s.L, bilinear).select(0, 0);
                const CloseReport r = compare(Y, ref, 1e-9, 1e-11);
                INFO(r.message);
                CHECK(r.ok);
                if (s.L == 512 && inv && !bilinear) MESSAGE("L 512 S4D-Inv ZOH: max abs diff vs recurrence " << r.max_abs);
            }
        }
    }
    // The largest imaginary part really is S4D-Inv's (N/π)(N − 1) at N = 64, and it is not damped away at l = 511
    // for the channel with the smallest Δ, so the long-L check above is not vacuous.
    const StateInputs p = make_inputs(2, 32, true, 11, false);
    CHECK(p.ai.at({0, 0}) == doctest::Approx(64.0 / M_PI * 63.0));
    const Tensor Y = ops::s4d_initial_state_response(p.log_dt, p.C, p.lar, p.ai, p.h0, 512);
    double tail = 0;
    for (int64_t h = 0; h < 2; ++h) tail = std::max(tail, std::fabs(Y.at({h, 511})));
    CHECK(tail > 1e-3);
    // L = 0: an empty response.
    CHECK(ops::s4d_initial_state_response(p.log_dt, p.C, p.lar, p.ai, p.h0, 0).shape() == Shape{2, 0});
}

TEST_CASE("s4d initial state response is what h0 adds to the full recurrence (linearity with the kernel)") {
    // Started from h0 and driven by u: y = K * u + D u + Y, where K = s4d_kernel is the zero-state part.
    for (bool bilinear : {false, true}) {
        const StateInputs p = make_inputs(3, 4, true, 21, false);
        const int64_t L = 40;
        Tensor u = Tensor::randn({2, 3, L}, 22, DType::F64), D = Tensor::randn({3}, 23, DType::F64);
        Tensor K = ops::s4d_kernel(p.log_dt, p.C, p.lar, p.ai, L, method(bilinear));
        Tensor Y = ops::s4d_initial_state_response(p.log_dt, p.C, p.lar, p.ai, p.h0, L, method(bilinear));
        Tensor composed = ops::add(ops::add(ops::causal_conv(u, K, ops::ConvAlgorithm::Direct), ops::mul(u, D.unsqueeze(1))),
                                   Y.unsqueeze(0));
        const std::string label = bilinear ? "bilinear" : "zoh";
        INFO(label);
        expect_close(composed, recurrence(p, L, bilinear, u, D), 1e-9, 1e-11, "y");
    }
}

TEST_CASE("s4d initial state response in float32 computes in double inside the op") {
    // Against the float64 op on the same (float32-rounded) inputs: only the output rounding differs, even at
    // L = 512 with S4D-Inv phases of ~1e4 rad.
    const StateInputs p = make_inputs(2, 32, true, 31, false);
    std::vector<Tensor> in32, in64;
    for (const Tensor& t : p.all()) {
        in32.push_back(t.to(DType::F32));
        in64.push_back(in32.back().to(DType::F64));
    }
    for (bool bilinear : {false, true}) {
        Tensor y32 = ops::s4d_initial_state_response(in32[0], in32[1], in32[2], in32[3], in32[4], 512, method(bilinear));
        Tensor y64 = ops::s4d_initial_state_response(in64[0], in64[1], in64[2], in64[3], in64[4], 512, method(bilinear));
        CHECK(y32.dtype() == DType::F32);
        expect_close(y32, y64, 1e-7, 1e-9, bilinear ? "bilinear" : "zoh");
    }
}

TEST_CASE("s4d initial state response gradients of every input in float64") {
    // Small shapes: every element of all five inputs; S4D-Inv at N = 16 (Im A up to ≈ 76) to exercise large phases.
    double worst = 0;
    for (bool inv : {false, true}) {
        const StateInputs p = make_inputs(2, inv ? 8 : 3, inv, 41);
        for (bool bilinear : {false, true}) {
            const std::string label = std::string(inv ? "inv" : "lin") + (bilinear ? " bilinear" : " zoh");
            INFO(label);
            const auto m = method(bilinear);
            const autograd::GradcheckReport r = autograd::gradcheck(
                [m](const auto& in) { return ops::s4d_initial_state_response(in[0], in[1], in[2], in[3], in[4], 11, m); },
                p.all());
            INFO(r.summary());
            CHECK(r.ok);
            for (const auto& ir : r.inputs) worst = std::max(worst, ir.max_abs_error);
        }
    }
    // Longer sequence, sampled elements, composed with a downstream op so upstream gradients are not uniform.
    const StateInputs p = make_inputs(2, 4, false, 43);
    autograd::GradcheckOptions sampled;
    sampled.max_checked_per_input = 6;
    const autograd::GradcheckReport r = autograd::gradcheck(
        [](const auto& in) {
            return ops::tanh(ops::s4d_initial_state_response(in[0], in[1], in[2], in[3], in[4], 200,
                                                             ops::S4DDiscretization::Bilinear));
        },
        p.all(), sampled);
    INFO(r.summary());
    CHECK(r.ok);
    for (const auto& ir : r.inputs) worst = std::max(worst, ir.max_abs_error);
    MESSAGE("s4d_initial_state_response gradcheck worst abs error " << worst);
}

TEST_CASE("s4d initial state response rejects bad shapes and mixed dtypes") {
    const StateInputs p = make_inputs(2, 3, false, 51, false);
    CHECK_THROWS_AS(ops::s4d_initial_state_response(p.log_dt, p.C, p.lar, p.ai, p.h0.narrow(1, 0, 2), 5), Error);
    CHECK_THROWS_AS(ops::s4d_initial_state_response(p.log_dt, p.C, p.lar, p.ai, p.h0.unsqueeze(0), 5), Error);
    CHECK_THROWS_AS(ops::s4d_initial_state_response(p.log_dt, p.C, p.lar, p.ai, p.h0.to(DType::F32), 5), Error);
    CHECK_THROWS_AS(ops::s4d_initial_state_response(p.log_dt, p.C, p.lar.narrow(1, 0, 2), p.ai, p.h0, 5), Error);
    CHECK_THROWS_AS(ops::s4d_initial_state_response(p.log_dt, p.C, p.lar, p.ai, p.h0, -1), Error);
    try {
        ops::s4d_initial_state_response(p.log_dt, p.C, p.lar, p.ai, Tensor::zeros({2, 3}, DType::F64), 5);
        FAIL("expected an error");
    } catch (const Error& e) {
        CHECK(std::string(e.what()).find("h0") != std::string::npos);
    }
}
