// Elementwise unary ops: neg, exp, log, sqrt, rsqrt, pow (scalar exponent), abs, clamp, sigmoid, tanh, silu,
// softplus, gelu, relu, sin, cos — forward and backward side by side.
//
// Each op is a pair of scalar functions (ops/elementwise_math.h, shared with the CUDA kernels): f(x) for the
// forward and f'(x, y) (given x and y = f(x)) for the backward, dx = g ⊙ f'(x, y), computed in double and rounded
// to the tensor's dtype. One loop runs each, threaded over elements; CUDA tensors go to cuda/elementwise.cu. softplus follows
// PyTorch: x when βx > threshold, else log1p(exp(βx))/β; gelu is the exact erf form (PyTorch's default).
// sin/cos take radians and evaluate in double (std::sin/std::cos), so F32 inputs get correctly rounded results;
// they let composite (student) code build S4D's complex kernel from real and imaginary parts.
// Not here: in-place variants, integer inputs.
#include <cmath>

#include "cuda/kernels.h"
#include "ops/elementwise_math.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace ssmtune::ops {

namespace {

// y = f(x) into a new contiguous tensor of x's shape and dtype (the CUDA kernel when x is on a GPU).
Tensor unary_forward(UnaryKind kind, const UnaryParams& prm, const Tensor& x, const char* op) {
    check_float_input(x, op, "x", kCudaKernel);
    Tensor xc = x.detach().contiguous();
    Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
    if (x.device().is_cuda()) {
        cuda::unary_forward(x.device().index, kind, prm, x.dtype(), xc.raw_data(), out.raw_data(), out.numel());
        return out;
    }
    dispatch_float(x.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* px = xc.data<T>();
        T* po = out.data<T>();
        const int64_t n = out.numel();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
        for (int64_t i = 0; i < n; ++i) po[i] = T(unary_value(kind, double(px[i]), prm));
    });
    return out;
}

// dx = g ⊙ f'(x, y) elementwise (x input, y forward output).
Tensor unary_backward(UnaryKind kind, const UnaryParams& prm, const Tensor& g, const Tensor& x, const Tensor& y) {
    Tensor gc = g.contiguous(), xc = x.contiguous(), yc = y.contiguous();
    Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
    if (x.device().is_cuda()) {
        cuda::unary_backward(x.device().index, kind, prm, x.dtype(), gc.raw_data(), xc.raw_data(), yc.raw_data(),
                             out.raw_data(), out.numel());
        return out;
    }
    dispatch_float(x.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T *pg = gc.data<T>(), *px = xc.data<T>(), *py = yc.data<T>();
        T* po = out.data<T>();
        const int64_t n = out.numel();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
        for (int64_t i = 0; i < n; ++i)
            po[i] = T(double(pg[i]) * unary_slope(kind, double(px[i]), double(py[i]), prm));
    });
    return out;
}

// Forward + record in one place: y = f(x), and dx = g ⊙ f'(x, y).
Tensor unary_op(const char* name, UnaryKind kind, const Tensor& x, const UnaryParams& prm = UnaryParams()) {
    Tensor y = unary_forward(kind, prm, x, name);
    autograd::record(name, {x}, {y}, [x = x.detach(), y = y.detach(), kind, prm](const auto& g, const auto&) {
        return std::vector<Tensor>{unary_backward(kind, prm, g[0], x, y)};
    });
    return y;
}

}  // namespace

Tensor neg(const Tensor& x) { return unary_op("neg", UnaryKind::Neg, x); }
Tensor exp(const Tensor& x) { return unary_op("exp", UnaryKind::Exp, x); }
Tensor log(const Tensor& x) { return unary_op("log", UnaryKind::Log, x); }
Tensor sqrt(const Tensor& x) { return unary_op("sqrt", UnaryKind::Sqrt, x); }
Tensor rsqrt(const Tensor& x) { return unary_op("rsqrt", UnaryKind::Rsqrt, x); }

Tensor pow(const Tensor& x, double p) {
    UnaryParams prm;
    prm.p = p;
    return unary_op("pow", UnaryKind::Pow, x, prm);
}

Tensor abs(const Tensor& x) { return unary_op("abs", UnaryKind::Abs, x); }

Tensor clamp(const Tensor& x, double lo, double hi) {
    SSMTUNE_CHECK(lo <= hi, "clamp: lower bound ", lo, " above upper bound ", hi);
    UnaryParams prm;
    prm.lo = lo;
    prm.hi = hi;
    return unary_op("clamp", UnaryKind::Clamp, x, prm);
}

Tensor sigmoid(const Tensor& x) { return unary_op("sigmoid", UnaryKind::Sigmoid, x); }
Tensor tanh(const Tensor& x) { return unary_op("tanh", UnaryKind::Tanh, x); }
Tensor silu(const Tensor& x) { return unary_op("silu", UnaryKind::Silu, x); }

Tensor softplus(const Tensor& x, double beta, double threshold) {
    SSMTUNE_CHECK(beta > 0, "softplus: beta must be positive, got ", beta);
    UnaryParams prm;
    prm.beta = beta;
    prm.threshold = threshold;
    return unary_op("softplus", UnaryKind::Softplus, x, prm);
}

Tensor gelu(const Tensor& x) { return unary_op("gelu", UnaryKind::Gelu, x); }
Tensor relu(const Tensor& x) { return unary_op("relu", UnaryKind::Relu, x); }
Tensor sin(const Tensor& x) { return unary_op("sin", UnaryKind::Sin, x); }
Tensor cos(const Tensor& x) { return unary_op("cos", UnaryKind::Cos, x); }

}  // namespace ssmtune::ops
