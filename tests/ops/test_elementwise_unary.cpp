// Elementwise unary ops: forward against plain std:: formulas over a grid, float32 against float64, float64
// gradchecks away from kinks, sin/cos identities, and the edge cases that matter in training (softplus
// threshold and large negative inputs, gelu constants, NaN propagation, argument errors).
#include <functional>

#include "test_util.h"

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {

// n evenly spaced values in [lo, hi].
std::vector<double> linspace(double lo, double hi, int n) {
    std::vector<double> v;
    for (int i = 0; i < n; ++i) v.push_back(lo + (hi - lo) * i / (n - 1));
    return v;
}

Tensor vec(const std::vector<double>& v) { return Tensor::from_vector<double>(v, {int64_t(v.size())}); }

// One op under test: the op, an independent scalar reference, a forward grid and gradcheck points (no kinks).
struct UnaryCase {
    std::string name;
    std::function<Tensor(const Tensor&)> op;
    std::function<double(double)> ref;
    std::vector<double> grid;
    std::vector<double> grad_points;
};

double ref_sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
// Stable softplus written differently from the op: max(βx, 0)/β + log1p(exp(−|βx|))/β, and x above threshold.
double ref_softplus(double x, double beta, double threshold) {
    const double bx = beta * x;
    if (bx > threshold) return x;
    return (std::max(bx, 0.0) + std::log1p(std::exp(-std::fabs(bx)))) / beta;
}

std::vector<UnaryCase> unary_cases() {
    const std::vector<double> wide = linspace(-6, 6, 49);   // includes 0 and ±0.5 steps
    const std::vector<double> pos = linspace(0.05, 9, 37);
    const std::vector<double> smooth = {-2.7, -1.3, -0.4, 0.2, 0.9, 1.6, 2.3};  // no kinks at 0
    const std::vector<double> positive = {0.15, 0.4, 0.8, 1.3, 2.2, 4.5};
    return {
        {"neg", [](const Tensor& x) { return ops::neg(x); }, [](double x) { return -x; }, wide, smooth},
        {"exp", [](const Tensor& x) { return ops::exp(x); }, [](double x) { return std::exp(x); },
         linspace(-20, 20, 41), smooth},
        {"log", [](const Tensor& x) { return ops::log(x); }, [](double x) { return std::log(x); }, pos, positive},
        {"sqrt", [](const Tensor& x) { return ops::sqrt(x); }, [](double x) { return std::sqrt(x); }, pos, positive},
        {"rsqrt", [](const Tensor& x) { return ops::rsqrt(x); }, [](double x) { return 1.0 / std::sqrt(x); }, pos,
         positive},
        {"pow 2", [](const Tensor& x) { return ops::pow(x, 2.0); }, [](double x) { return x * x; }, wide, smooth},
        {"pow 3", [](const Tensor& x) { return ops::pow(x, 3.0); }, [](double x) { return x * x * x; }, wide, smooth},
        {"pow 0.5", [](const Tensor& x) { return ops::pow(x, 0.5); }, [](double x) { return std::sqrt(x); }, pos,
         positive},
        {"pow -1.5", [](const Tensor& x) { return ops::pow(x, -1.5); },
         [](double x) { return 1.0 / (x * std::sqrt(x)); }, pos, positive},
        {"pow 0", [](const Tensor& x) { return ops::pow(x, 0.0); }, [](double) { return 1.0; }, wide, smooth},
        {"abs", [](const Tensor& x) { return ops::abs(x); }, [](double x) { return x < 0 ? -x : x; }, wide, smooth},
        {"clamp", [](const Tensor& x) { return ops::clamp(x, -1.0, 2.0); },
         [](double x) { return x < -1.0 ? -1.0 : (x > 2.0 ? 2.0 : x); }, wide, smooth},
        {"sigmoid", [](const Tensor& x) { return ops::sigmoid(x); }, ref_sigmoid, linspace(-30, 30, 61), smooth},
        {"tanh", [](const Tensor& x) { return ops::tanh(x); },
         [](double x) { return (std::exp(2 * x) - 1) / (std::exp(2 * x) + 1); }, wide, smooth},
        {"silu", [](const Tensor& x) { return ops::silu(x); }, [](double x) { return x * ref_sigmoid(x); },
         linspace(-30, 30, 61), smooth},
        {"softplus", [](const Tensor& x) { return ops::softplus(x); },
         [](double x) { return ref_softplus(x, 1.0, 20.0); }, linspace(-40, 40, 81), smooth},
        {"softplus beta 2.5", [](const Tensor& x) { return ops::softplus(x, 2.5, 20.0); },
         [](double x) { return ref_softplus(x, 2.5, 20.0); }, linspace(-20, 20, 81), smooth},
        {"gelu", [](const Tensor& x) { return ops::gelu(x); },
         [](double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }, linspace(-12, 12, 49), smooth},
        {"relu", [](const Tensor& x) { return ops::relu(x); }, [](double x) { return x > 0 ? x : 0.0; }, wide, smooth},
        // sin/cos: std:: references here; identities, large arguments and exact derivatives in "sin/cos ...".
        {"sin", [](const Tensor& x) { return ops::sin(x); }, [](double x) { return std::sin(x); }, wide, smooth},
        {"cos", [](const Tensor& x) { return ops::cos(x); }, [](double x) { return std::cos(x); }, wide, smooth},
    };
}

}  // namespace

TEST_CASE("unary ops forward match std:: references on a grid") {
    for (const UnaryCase& c : unary_cases()) {
        std::vector<double> expected;
        for (double v : c.grid) expected.push_back(c.ref(v));
        // Different formulas round differently; tanh's (e^2x − 1)/(e^2x + 1) loses a few bits near 0.
        expect_close(c.op(vec(c.grid)), vec(expected), 1e-13, 1e-15, c.name);
    }
}

TEST_CASE("unary ops agree in float32 and float64 forward and backward") {
    for (const UnaryCase& c : unary_cases()) {
        // Inputs exactly representable in float32, so the two runs see the same numbers.
        Tensor x32 = vec(c.grid).to(DType::F32).set_requires_grad(true);
        Tensor x64 = x32.detach().to(DType::F64).set_requires_grad(true);
        Tensor y32 = c.op(x32), y64 = c.op(x64);
        CHECK(y32.dtype() == DType::F32);
        expect_close(y32, y64, 1e-6, 1e-30, c.name + " forward");
        Tensor w = Tensor::uniform(x32.shape(), 7, 0.5, 1.5, DType::F64);
        y32.backward(w.to(DType::F32));
        y64.backward(w);
        REQUIRE(x32.grad().defined());
        CHECK(x32.grad().dtype() == DType::F32);
        // sigmoid/tanh derive from the float32 output y (as PyTorch does: y(1−y), 1−y²), so their gradients
        // carry an absolute error of about float32 epsilon where they saturate.
        expect_close(x32.grad(), x64.grad(), 1e-5, 2e-7, c.name + " backward");
    }
}

TEST_CASE("unary ops gradients (float64 gradcheck)") {
    for (const UnaryCase& c : unary_cases()) {
        Tensor x = vec(c.grad_points).set_requires_grad(true);
        const auto report = autograd::gradcheck([&c](const auto& in) { return c.op(in[0]); }, {x});
        INFO(c.name << ":\n" << report.summary());
        CHECK(report.ok);
    }
}

TEST_CASE("unary ops gradients on a non-contiguous view") {
    Tensor base = Tensor::uniform({3, 4}, 8, 0.2, 1.8, DType::F64).set_requires_grad(true);
    for (const UnaryCase& c : unary_cases()) {
        INFO(c.name);
        expect_gradcheck([&c](const auto& in) { return c.op(in[0].transpose(0, 1)); }, {base});
    }
}

TEST_CASE("gelu matches known constants") {
    const std::vector<double> y = ops::gelu(vec({1.0, -1.0, 2.0, -3.0, 0.0, -10.0})).to_vector<double>();
    CHECK(y[0] == doctest::Approx(0.8413447460685429).epsilon(1e-15));
    CHECK(y[1] == doctest::Approx(-0.15865525393145707).epsilon(1e-15));
    CHECK(y[2] == doctest::Approx(1.9544997361036416).epsilon(1e-15));
    CHECK(y[3] == doctest::Approx(-0.004049694094890287).epsilon(1e-14));
    CHECK(y[4] == 0.0);
    CHECK(y[5] == doctest::Approx(-7.619853024160593e-23).epsilon(1e-12));  // no cancellation in the tail
    const std::vector<float> y32 = ops::gelu(vec({1.0, -1.0}).to(DType::F32)).to_vector<float>();
    CHECK(y32[0] == doctest::Approx(0.8413447460685429).epsilon(1e-7));
    CHECK(y32[1] == doctest::Approx(-0.15865525393145707).epsilon(1e-7));
}

TEST_CASE("other unary ops match known constants") {
    CHECK(ops::sigmoid(Tensor::scalar(0, DType::F64)).item() == 0.5);
    CHECK(ops::softplus(Tensor::scalar(0, DType::F64)).item() == doctest::Approx(0.6931471805599453).epsilon(1e-15));
    CHECK(ops::silu(Tensor::scalar(1, DType::F64)).item() == doctest::Approx(0.7310585786300049).epsilon(1e-15));
    CHECK(ops::tanh(Tensor::scalar(0.5, DType::F64)).item() == doctest::Approx(0.46211715726000974).epsilon(1e-15));
}

TEST_CASE("softplus threshold and beta follow PyTorch") {
    // Above the threshold (βx > threshold) the output is x itself and the gradient is exactly 1.
    Tensor x = vec({21.0, 30.0, 9.0, 12.0}).set_requires_grad(true);
    Tensor y = ops::softplus(x, 2.0, 20.0);  // βx = 42, 60, 18, 24
    const std::vector<double> yv = y.to_vector<double>();
    CHECK(yv[0] == 21.0);
    CHECK(yv[1] == 30.0);
    CHECK(yv[2] == doctest::Approx(std::log1p(std::exp(18.0)) / 2.0).epsilon(1e-15));
    CHECK(yv[3] == 12.0);
    y.backward(Tensor::ones({4}, DType::F64));
    const std::vector<double> g = x.grad().to_vector<double>();
    CHECK(g[0] == 1.0);
    CHECK(g[3] == 1.0);
    CHECK(g[2] == doctest::Approx(1.0 / (1.0 + std::exp(-18.0))).epsilon(1e-15));
    // A lower threshold switches earlier.
    CHECK(ops::softplus(Tensor::scalar(3, DType::F64), 1.0, 2.0).item() == 3.0);
    // Gradcheck with beta != 1 on both sides of the threshold (away from it).
    expect_gradcheck([](const auto& in) { return ops::softplus(in[0], 0.5, 20.0); },
                     {vec({-30.0, -3.0, 0.7, 35.0, 50.0}).set_requires_grad(true)});
    expect_gradcheck([](const auto& in) { return ops::softplus(in[0], 3.0, 10.0); },
                     {vec({-4.0, -0.2, 1.5, 3.5, 8.0}).set_requires_grad(true)});
    CHECK_THROWS_AS(ops::softplus(x, 0.0), Error);
}

TEST_CASE("softplus of large negative inputs is finite and non-negative") {
    for (DType dt : {DType::F64, DType::F32}) {
        Tensor x = vec({-100.0, -1000.0, -1e30, -88.0, -745.0}).to(dt).set_requires_grad(true);
        Tensor y = ops::softplus(x);
        y.backward(Tensor::ones({5}, dt));
        const std::vector<double> yv = y.to_vector<double>(), gv = x.grad().to_vector<double>();
        for (size_t i = 0; i < yv.size(); ++i) {
            INFO(dtype_name(dt) << " element " << i << ": y " << yv[i] << " dy/dx " << gv[i]);
            CHECK(std::isfinite(yv[i]));
            CHECK(yv[i] >= 0.0);
            CHECK(std::isfinite(gv[i]));
            CHECK(gv[i] >= 0.0);
        }
        if (dt == DType::F64) CHECK(yv[0] == doctest::Approx(3.720075976020836e-44).epsilon(1e-12));
    }
    // beta != 1 as well.
    CHECK(std::isfinite(ops::softplus(Tensor::scalar(-100, DType::F64), 3.0).item()));
}

TEST_CASE("unary ops propagate NaN and handle infinities") {
    const double nan = std::nan("");
    for (const UnaryCase& c : unary_cases()) {
        if (c.name == "pow 0") continue;  // x^0 = 1 for every x, NaN included, as in std::pow and PyTorch
        INFO(c.name);
        CHECK(std::isnan(c.op(Tensor::scalar(nan, DType::F64)).item()));
    }
    CHECK(ops::sigmoid(vec({-INFINITY, INFINITY})).to_vector<double>() == std::vector<double>{0.0, 1.0});
    CHECK(ops::tanh(vec({-INFINITY, INFINITY})).to_vector<double>() == std::vector<double>{-1.0, 1.0});
    CHECK(ops::relu(vec({-INFINITY, INFINITY})).to_vector<double>() == std::vector<double>{0.0, INFINITY});
    CHECK(ops::softplus(Tensor::scalar(INFINITY, DType::F64)).item() == INFINITY);
    CHECK(ops::softplus(Tensor::scalar(-INFINITY, DType::F64)).item() == 0.0);
}

TEST_CASE("unary ops gradients at kinks follow the documented convention") {
    Tensor x = vec({0.0, -1.0, 2.0, 3.0}).set_requires_grad(true);
    ops::abs(x).backward(Tensor::ones({4}, DType::F64));
    CHECK(x.grad().to_vector<double>() == std::vector<double>{0, -1, 1, 1});
    x.zero_grad();
    ops::relu(x).backward(Tensor::ones({4}, DType::F64));
    CHECK(x.grad().to_vector<double>() == std::vector<double>{0, 0, 1, 1});
    x.zero_grad();
    ops::clamp(x, -1.0, 2.0).backward(Tensor::ones({4}, DType::F64));  // bounds themselves pass the gradient
    CHECK(x.grad().to_vector<double>() == std::vector<double>{1, 1, 1, 0});
}

TEST_CASE("unary ops reject integer inputs and bad arguments") {
    CHECK_THROWS_AS(ops::exp(Tensor::arange(3)), Error);
    CHECK_THROWS_AS(ops::relu(Tensor::ones({2}, DType::F16)), Error);
    CHECK_THROWS_AS(ops::clamp(Tensor::ones({2}), 1.0, -1.0), Error);
    CHECK_THROWS_AS(ops::sigmoid(Tensor()), Error);
}

TEST_CASE("sin/cos: identities, derivatives, large arguments and float64 gradcheck") {
    // sin² + cos² = 1, sin(2x) = 2 sin x cos x, and the exact values at multiples of π/2.
    const std::vector<double> xs = linspace(-40, 40, 161);
    const std::vector<double> s = ops::sin(vec(xs)).to_vector<double>(), c = ops::cos(vec(xs)).to_vector<double>();
    std::vector<double> twice;
    for (double x : xs) twice.push_back(2 * x);
    const std::vector<double> s2 = ops::sin(vec(twice)).to_vector<double>();
    for (size_t i = 0; i < xs.size(); ++i) {
        INFO("x = " << xs[i]);
        CHECK(s[i] * s[i] + c[i] * c[i] == doctest::Approx(1.0).epsilon(1e-15));
        CHECK(std::fabs(s2[i] - 2 * s[i] * c[i]) < 1e-14);
    }
    CHECK(ops::sin(Tensor::scalar(0, DType::F64)).item() == 0.0);
    CHECK(ops::cos(Tensor::scalar(0, DType::F64)).item() == 1.0);
    CHECK(ops::sin(Tensor::scalar(M_PI / 2, DType::F64)).item() == 1.0);
    CHECK(std::fabs(ops::cos(Tensor::scalar(M_PI, DType::F64)).item() + 1.0) < 1e-16);
    // Large phases (S4D-Inv: Im A·l reaches ~1e6 rad): evaluated in double, so a float32 input gives the
    // correctly rounded sine of the float32 value, not a float32 range reduction.
    const float big = 1048577.25f;
    CHECK(ops::sin(Tensor::scalar(big, DType::F32)).item() == double(float(std::sin(double(big)))));
    // Backward: d sin = cos, d cos = −sin, checked against the closed forms at exact points ...
    Tensor x = vec({-2.5, -0.3, 0.0, 1.1, 3.0, 7.5}).set_requires_grad(true);
    ops::sin(x).backward(Tensor::ones({6}, DType::F64));
    expect_close(x.grad(), ops::cos(x.detach()), 0, 1e-16, "d sin");
    x.zero_grad();
    ops::cos(x).backward(Tensor::ones({6}, DType::F64));
    expect_close(x.grad(), ops::neg(ops::sin(x.detach())), 0, 1e-16, "d cos");
    // ... and by central differences, composed (sin(cos x)·cos(3x)) and on a 2-D transposed view.
    autograd::GradcheckOptions tight;
    tight.atol = 1e-9;
    tight.rtol = 1e-8;
    Tensor w = Tensor::uniform({4, 3}, 21, -8.0, 8.0, DType::F64).set_requires_grad(true);
    const autograd::GradcheckReport r = autograd::gradcheck(
        [](const auto& in) {
            Tensor t = in[0].transpose(0, 1);
            return ops::mul(ops::sin(ops::cos(t)), ops::cos(ops::mul_scalar(t, 3.0)));
        },
        {w}, tight);
    INFO("sin/cos gradcheck:\n" << r.summary());
    MESSAGE("sin/cos gradcheck worst abs error " << r.inputs.at(0).max_abs_error);
    CHECK(r.ok);
}
