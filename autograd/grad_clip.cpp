// grad_norm and clip_grad_norm (declared in autograd/optim.h): PyTorch's clip_grad_norm_ rule.
//
// The norm is accumulated in double over fixed-size chunks whose partial sums are added in order, so it does
// not depend on the thread count (PyTorch accumulates float32 gradients in float32; ours is more accurate).
// Clipping multiplies each gradient in place by max_norm / (norm + 1e-6) when that is below 1.
// Gradients on a GPU: the same chunks, each summed by one block (cuda/reduce.cu), the partials added here in order.
// Not here: other norm types (inf, p ≠ 2), foreach kernels.
#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "autograd/node.h"
#include "autograd/optim.h"
#include "cuda/kernels.h"
#include "engine/tensor_copy.h"

namespace ssmtune::autograd {

namespace {

constexpr int64_t kGrain = 32768;  // elements per thread before OpenMP splits a loop

// Calls fn(float{}) or fn(double{}) for an F32/F64 dtype.
template <class Fn>
void dispatch_param(DType t, Fn&& fn) {
    if (t == DType::F64) fn(double{});
    else fn(float{});
}

// The distinct defined gradients of `params`, in order (a parameter listed twice counts once).
std::vector<std::pair<Tensor, Tensor>> distinct_grads(const std::vector<Tensor>& params, const char* fn) {
    std::vector<std::pair<Tensor, Tensor>> out;  // (parameter, contiguous grad)
    std::unordered_set<const TensorImpl*> seen;
    for (size_t k = 0; k < params.size(); ++k) {
        const Tensor& p = params[k];
        SSMTUNE_CHECK(p.defined(), fn, ": parameter ", k, " is an undefined tensor");
        if (!seen.insert(p.impl_ptr().get()).second) continue;
        Tensor g = p.grad();
        if (!g.defined()) continue;
        SSMTUNE_CHECK(is_compute_float(g.dtype()), fn, ": the .grad of parameter ", k, " is ", g.describe(),
                      "; expected an F32/F64 tensor");
        out.emplace_back(p, g);
    }
    return out;
}

}  // namespace

double grad_norm(const std::vector<Tensor>& params) {
    constexpr int64_t kChunk = 16384;  // fixed, so the summation order does not depend on the thread count
    double total = 0;
    for (auto& [p, grad] : distinct_grads(params, "grad_norm")) {
        const Tensor g = grad.is_contiguous() ? grad : copy_to(grad, grad.dtype(), grad.device());
        const int64_t n = g.numel(), chunks = (n + kChunk - 1) / kChunk;
        std::vector<double> partial(size_t(chunks), 0.0);
        if (g.device().is_cuda()) {
            cuda::sum_squares_chunks(g.device().index, g.dtype(), g.raw_data(), n, kChunk, partial.data());
            for (double s : partial) total += s;
            continue;
        }
        dispatch_param(g.dtype(), [&](auto tag) {
            using T = decltype(tag);
            const T* x = g.data<T>();
#pragma omp parallel for schedule(static) if (n > kGrain)
            for (int64_t c = 0; c < chunks; ++c) {
                double s = 0;
                const int64_t end = std::min(n, (c + 1) * kChunk);
                for (int64_t i = c * kChunk; i < end; ++i) s += double(x[i]) * double(x[i]);
                partial[size_t(c)] = s;
            }
        });
        for (double s : partial) total += s;
    }
    return std::sqrt(total);
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
    SSMTUNE_CHECK(std::isfinite(max_norm) && max_norm >= 0, "clip_grad_norm: max_norm ", max_norm,
                  " must be finite and >= 0");
    const double norm = grad_norm(params);
    if (!std::isfinite(norm)) return norm;
    const double coef = max_norm / (norm + 1e-6);
    if (!(coef < 1.0)) return norm;  // PyTorch clamps the coefficient to 1: multiplying by 1 changes nothing
    NoGradGuard no_grad;
    for (auto& [param, grad] : distinct_grads(params, "clip_grad_norm")) {
        Tensor g = grad.is_contiguous() ? grad : copy_to(grad, grad.dtype(), grad.device());
        if (g.device().is_cuda()) cuda::scale_inplace(g.device().index, g.dtype(), g.raw_data(), g.numel(), coef);
        else dispatch_param(g.dtype(), [&](auto tag) {
            using T = decltype(tag);
            T* x = g.data<T>();
            const T c = T(coef);
            const int64_t n = g.numel();
#pragma omp parallel for schedule(static) if (n > kGrain)
            for (int64_t i = 0; i < n; ++i) x[i] = x[i] * c;
        });
        if (!g.same(grad)) {
            Tensor p = param;
            p.set_grad(g);
        }
    }
    return norm;
}


}  // namespace ssmtune::autograd
