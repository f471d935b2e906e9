// Helpers the emulation tests share: seeded inputs and grad-requiring copies of them.
#pragma once

#include <vector>

#include "ops/ops.h"

namespace ssmtune::testing {

// A contiguous seeded normal tensor, scaled and shifted.
inline Tensor input(const Shape& s, uint64_t seed, DType t = DType::F64, double scale = 1.0, double shift = 0.0) {
    return ops::add_scalar(ops::mul_scalar(Tensor::randn(s, seed, t), scale), shift).contiguous();
}

// Leaves that require grad, cloned from `inputs` (undefined stays undefined).
inline std::vector<Tensor> leaves_of(const std::vector<Tensor>& inputs) {
    std::vector<Tensor> out;
    for (const Tensor& x : inputs) {
        Tensor l = x.defined() ? x.detach().clone() : Tensor();
        if (l.defined()) l.set_requires_grad(true);
        out.push_back(l);
    }
    return out;
}

}  // namespace ssmtune::testing
