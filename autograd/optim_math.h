// The per-element updates of SGD and AdamW, one definition for the CPU loops (optim.cpp) and the CUDA kernels
// (cuda/optim.cu): torch.optim.SGD's and torch.optim.AdamW's single-tensor rules, in the parameter's dtype.
// The scalars that do not depend on the element (bias corrections, step size) are prepared once on the host.
// Not here: state handling, parameter groups, schedules (optim.cpp).
#pragma once

#include <cmath>
#include <cstdint>

#include "engine/host_device.h"

namespace ssmtune::autograd {

struct SgdScalars {
    double lr, weight_decay, momentum, dampening;
    bool nesterov, first;  // first: the momentum buffer takes the gradient itself
};

// One element: p, g, and the momentum buffer (unused when momentum is 0).
template <class T>
SSMTUNE_HD inline void sgd_element(T& p, T g, T* buf, const SgdScalars& s) {
    T d = g;
    if (s.weight_decay != 0) d = d + T(s.weight_decay) * p;  // grad.add(param, alpha=wd)
    if (s.momentum != 0) {
        const T mom = T(s.momentum);
        *buf = s.first ? d : *buf * mom + T(1 - s.dampening) * d;  // clone(grad) | buf.mul_(m).add_(grad, 1 - damp)
        d = s.nesterov ? d + mom * *buf : *buf;
    }
    p = p + T(-s.lr) * d;  // param.add_(grad, alpha=-lr)
}

struct AdamScalars {
    double lr, weight_decay, beta1, beta2, eps;
    int64_t step;  // this parameter's step count t, after incrementing
    bool amsgrad;
};

// The element-independent factors of one AdamW step, in the parameter's dtype.
template <class T>
struct AdamFactors {
    T decay, w1, b2, w2, neg_step_size, bc2_sqrt, eps;
    bool decay_on;
};

template <class T>
AdamFactors<T> adam_factors(const AdamScalars& s) {
    const double bias_correction1 = 1 - std::pow(s.beta1, double(s.step));
    const double bias_correction2 = 1 - std::pow(s.beta2, double(s.step));
    return {T(1 - s.lr * s.weight_decay),          // param.mul_(1 - lr * wd)
            T(1 - s.beta1), T(s.beta2), T(1 - s.beta2),
            T(-(s.lr / bias_correction1)),         // addcdiv_ value = -step_size
            T(std::sqrt(bias_correction2)), T(s.eps), s.weight_decay != 0};
}

// PyTorch's lerp: self + w·(end − self) for |w| < 0.5, else end − (end − self)·(1 − w).
template <class T>
SSMTUNE_HD inline T torch_lerp(T self, T end, T w) {
    return (w < T(0.5) && w > T(-0.5)) ? self + w * (end - self) : end - (end - self) * (T(1) - w);
}

// One element of torch's _single_tensor_adam with decoupled decay; vmax is null unless amsgrad.
template <class T>
SSMTUNE_HD inline void adamw_element(T& p, T g, T& m, T& v, T* vmax, const AdamFactors<T>& f) {
    T pi = p;
    if (f.decay_on) pi = pi * f.decay;
    const T mi = torch_lerp<T>(m, g, f.w1);  // exp_avg.lerp_(grad, 1 - beta1)
    const T vi = v * f.b2 + f.w2 * g * g;    // exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2)
    m = mi;
    v = vi;
    T second = vi;
    if (vmax) {  // torch.maximum (NaN propagates)
        if (!(*vmax >= vi)) *vmax = (*vmax != *vmax) ? *vmax : vi;
        second = *vmax;
    }
    const T denom = std::sqrt(second) / f.bc2_sqrt + f.eps;  // (v.sqrt() / bc2_sqrt).add_(eps)
    p = pi + f.neg_step_size * mi / denom;                   // param.addcdiv_(m, denom, -step_size)
}

}  // namespace ssmtune::autograd
