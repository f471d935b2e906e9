// The scalar math of the elementwise ops, one definition for the CPU loops (elementwise_unary.cpp,
// elementwise_binary.cpp) and the CUDA kernels (cuda/elementwise.cu).
//
// Unary: y = unary_value(kind, x) and the slope f'(x) given x and y, both in double (the ops round the result
// to the tensor's dtype), so a GPU result differs from the CPU one only where the two math libraries round a
// double differently. softplus follows PyTorch (x when βx > threshold); gelu is the exact erf form, evaluated
// through erfc to avoid 1 + erf(·) cancellation; relu keeps NaN. Binary: add, sub, mul, div in the tensor's type.
// Not here: loops, broadcasting, dispatch.
#pragma once

#include <cmath>
#include <cstdint>

#include "engine/host_device.h"

namespace ssmtune::ops {

enum class UnaryKind : int32_t {
    Neg, Exp, Log, Sqrt, Rsqrt, Pow, Abs, Clamp, Sigmoid, Tanh, Silu, Softplus, Gelu, Relu, Sin, Cos
};

// Scalars some kinds take: pow's exponent p, clamp's [lo, hi], softplus's beta and threshold.
struct UnaryParams {
    double p = 0, lo = 0, hi = 0, beta = 1, threshold = 20;
};

SSMTUNE_HD inline double sigmoid_value(double x) {
    return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x));
}

SSMTUNE_HD inline double unary_value(UnaryKind kind, double v, const UnaryParams& prm) {
    switch (kind) {
        case UnaryKind::Neg: return -v;
        case UnaryKind::Exp: return std::exp(v);
        case UnaryKind::Log: return std::log(v);
        case UnaryKind::Sqrt: return std::sqrt(v);
        case UnaryKind::Rsqrt: return 1.0 / std::sqrt(v);
        case UnaryKind::Pow: return std::pow(v, prm.p);
        case UnaryKind::Abs: return std::fabs(v);
        case UnaryKind::Clamp: return v < prm.lo ? prm.lo : (v > prm.hi ? prm.hi : v);
        case UnaryKind::Sigmoid: return sigmoid_value(v);
        case UnaryKind::Tanh: return std::tanh(v);
        case UnaryKind::Silu: return v * sigmoid_value(v);
        case UnaryKind::Softplus:
            return prm.beta * v > prm.threshold ? v : std::log1p(std::exp(prm.beta * v)) / prm.beta;
        case UnaryKind::Gelu: return 0.5 * v * std::erfc(-v * 0.70710678118654752440);
        case UnaryKind::Relu: return v > 0 || v != v ? v : 0.0;  // NaN propagates, as in PyTorch
        case UnaryKind::Sin: return std::sin(v);
        case UnaryKind::Cos: return std::cos(v);
    }
    return v;
}

// f'(x) given x and y = f(x); the op's backward is dx = g · slope.
SSMTUNE_HD inline double unary_slope(UnaryKind kind, double v, double y, const UnaryParams& prm) {
    switch (kind) {
        case UnaryKind::Neg: return -1.0;
        case UnaryKind::Exp: return y;
        case UnaryKind::Log: return 1.0 / v;
        case UnaryKind::Sqrt: return 0.5 / y;
        case UnaryKind::Rsqrt: return -0.5 * y * y * y;  // d(x^{-1/2}) = -1/2 x^{-3/2}
        case UnaryKind::Pow: return prm.p == 0.0 ? 0.0 : prm.p * std::pow(v, prm.p - 1.0);
        case UnaryKind::Abs: return v > 0 ? 1.0 : (v < 0 ? -1.0 : 0.0);
        case UnaryKind::Clamp: return (v >= prm.lo && v <= prm.hi) ? 1.0 : 0.0;
        case UnaryKind::Sigmoid: return y * (1.0 - y);
        case UnaryKind::Tanh: return 1.0 - y * y;
        case UnaryKind::Silu: {  // d(x σ(x)) = σ(x) (1 + x (1 − σ(x)))
            const double s = sigmoid_value(v);
            return s * (1.0 + v * (1.0 - s));
        }
        case UnaryKind::Softplus: return prm.beta * v > prm.threshold ? 1.0 : sigmoid_value(prm.beta * v);
        case UnaryKind::Gelu: {  // Φ(x) + x φ(x)
            const double cdf = 0.5 * std::erfc(-v * 0.70710678118654752440);
            const double pdf = std::exp(-0.5 * v * v) * 0.3989422804014327;
            return cdf + v * pdf;
        }
        case UnaryKind::Relu: return v > 0 ? 1.0 : 0.0;
        case UnaryKind::Sin: return std::cos(v);
        case UnaryKind::Cos: return -std::sin(v);
    }
    return 0.0;
}

enum class BinaryKind : int32_t { Add, Sub, Mul, Div };

template <class T>
SSMTUNE_HD inline T binary_value(BinaryKind kind, T x, T y) {
    switch (kind) {
        case BinaryKind::Add: return x + y;
        case BinaryKind::Sub: return x - y;
        case BinaryKind::Mul: return x * y;
        default: return x / y;
    }
}

}  // namespace ssmtune::ops
