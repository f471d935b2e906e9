// Elementwise unary ops: neg, exp, log, sqrt, rsqrt, pow (scalar exponent), abs, clamp, sigmoid, tanh, silu,
// softplus, gelu, relu, sin, cos — forward and backward side by side.
//
// Each op is a pair of scalar functions: f(x) for the forward and f'(x, y) (given x and y = f(x)) for the
// backward, dx = g ⊙ f'(x, y). One loop template runs both, threaded over elements. softplus follows
// PyTorch: x when βx > threshold, else log1p(exp(βx))/β; gelu is the exact erf form (PyTorch's default).
// sin/cos take radians and evaluate in double (std::sin/std::cos), so F32 inputs get correctly rounded results;
// they let composite (student) code build S4D's complex kernel from real and imaginary parts.
// Not here: in-place variants, integer inputs.
#include <cmath>

#include "ops/op_util.h"
#include "ops/ops.h"

namespace ssmtune::ops {

namespace {

// Applies fn(x[i]) into a new contiguous tensor of x's shape and dtype.
template <class Fn>
Tensor map_unary(const Tensor& x, const char* op, Fn&& fn) {
    check_float_input(x, op, "x");
    Tensor xc = x.detach().contiguous();
    Tensor out = Tensor::empty(x.shape(), x.dtype());
    dispatch_float(x.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* px = xc.data<T>();
        T* po = out.data<T>();
        const int64_t n = out.numel();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
        for (int64_t i = 0; i < n; ++i) po[i] = T(fn(double(px[i])));
    });
    return out;
}

// out = g ⊙ dfn(x, y) elementwise (x input, y forward output).
template <class Fn>
Tensor map_backward(const Tensor& g, const Tensor& x, const Tensor& y, Fn&& dfn) {
    Tensor gc = g.contiguous(), xc = x.contiguous(), yc = y.contiguous();
    Tensor out = Tensor::empty(x.shape(), x.dtype());
    dispatch_float(x.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T *pg = gc.data<T>(), *px = xc.data<T>(), *py = yc.data<T>();
        T* po = out.data<T>();
        const int64_t n = out.numel();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
        for (int64_t i = 0; i < n; ++i) po[i] = T(double(pg[i]) * dfn(double(px[i]), double(py[i])));
    });
    return out;
}

// Forward + record in one place: f(x) -> y, and dx = g ⊙ df(x, y).
template <class F, class DF>
Tensor unary_op(const char* name, const Tensor& x, F f, DF df) {
    Tensor y = map_unary(x, name, f);
    autograd::record(name, {x}, {y}, [x = x.detach(), y = y.detach(), df](const auto& g, const auto&) {
        return std::vector<Tensor>{map_backward(g[0], x, y, df)};
    });
    return y;
}

double sigmoid_scalar(double x) { return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x)); }

}  // namespace

Tensor neg(const Tensor& x) {
    return unary_op("neg", x, [](double v) { return -v; }, [](double, double) { return -1.0; });
}

Tensor exp(const Tensor& x) {
    return unary_op("exp", x, [](double v) { return std::exp(v); }, [](double, double y) { return y; });
}

Tensor log(const Tensor& x) {
    return unary_op("log", x, [](double v) { return std::log(v); }, [](double v, double) { return 1.0 / v; });
}

Tensor sqrt(const Tensor& x) {
    return unary_op("sqrt", x, [](double v) { return std::sqrt(v); }, [](double, double y) { return 0.5 / y; });
}

Tensor rsqrt(const Tensor& x) {
    // d(x^{-1/2}) = -1/2 x^{-3/2} = -1/2 y^3
    return unary_op("rsqrt", x, [](double v) { return 1.0 / std::sqrt(v); },
                    [](double, double y) { return -0.5 * y * y * y; });
}

Tensor pow(const Tensor& x, double p) {
    return unary_op("pow", x, [p](double v) { return std::pow(v, p); },
                    [p](double v, double) { return p == 0.0 ? 0.0 : p * std::pow(v, p - 1.0); });
}

Tensor abs(const Tensor& x) {
    return unary_op("abs", x, [](double v) { return std::fabs(v); },
                    [](double v, double) { return v > 0 ? 1.0 : (v < 0 ? -1.0 : 0.0); });
}

Tensor clamp(const Tensor& x, double lo, double hi) {
    SSMTUNE_CHECK(lo <= hi, "clamp: lower bound ", lo, " above upper bound ", hi);
    return unary_op("clamp", x, [lo, hi](double v) { return std::min(std::max(v, lo), hi); },
                    [lo, hi](double v, double) { return (v >= lo && v <= hi) ? 1.0 : 0.0; });
}

Tensor sigmoid(const Tensor& x) {
    return unary_op("sigmoid", x, sigmoid_scalar, [](double, double y) { return y * (1.0 - y); });
}

Tensor tanh(const Tensor& x) {
    return unary_op("tanh", x, [](double v) { return std::tanh(v); }, [](double, double y) { return 1.0 - y * y; });
}

Tensor silu(const Tensor& x) {
    // d(x σ(x)) = σ(x) (1 + x (1 − σ(x)))
    return unary_op("silu", x, [](double v) { return v * sigmoid_scalar(v); },
                    [](double v, double) {
                        const double s = sigmoid_scalar(v);
                        return s * (1.0 + v * (1.0 - s));
                    });
}

Tensor softplus(const Tensor& x, double beta, double threshold) {
    SSMTUNE_CHECK(beta > 0, "softplus: beta must be positive, got ", beta);
    return unary_op("softplus", x,
                    [beta, threshold](double v) {
                        return beta * v > threshold ? v : std::log1p(std::exp(beta * v)) / beta;
                    },
                    [beta, threshold](double v, double) {
                        return beta * v > threshold ? 1.0 : sigmoid_scalar(beta * v);
                    });
}

Tensor gelu(const Tensor& x) {
    // gelu(x) = x Φ(x), Φ(x) = ½(1 + erf(x/√2)) = ½ erfc(−x/√2); d/dx = Φ(x) + x φ(x).
    // The erfc form avoids the cancellation of 1 + erf(·) for negative x (same values as PyTorch elsewhere).
    return unary_op("gelu", x, [](double v) { return 0.5 * v * std::erfc(-v * M_SQRT1_2); },
                    [](double v, double) {
                        const double cdf = 0.5 * std::erfc(-v * M_SQRT1_2);
                        const double pdf = std::exp(-0.5 * v * v) * 0.3989422804014327;
                        return cdf + v * pdf;
                    });
}

Tensor relu(const Tensor& x) {
    // NaN propagates (as in PyTorch), so a NaN is not silently turned into 0.
    return unary_op("relu", x, [](double v) { return v > 0 || std::isnan(v) ? v : 0.0; },
                    [](double v, double) { return v > 0 ? 1.0 : 0.0; });
}

Tensor sin(const Tensor& x) {
    return unary_op("sin", x, [](double v) { return std::sin(v); }, [](double v, double) { return std::cos(v); });
}

Tensor cos(const Tensor& x) {
    return unary_op("cos", x, [](double v) { return std::cos(v); }, [](double v, double) { return -std::sin(v); });
}

}  // namespace ssmtune::ops
