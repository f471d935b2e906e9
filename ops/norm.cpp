// rmsnorm (Mamba's RMSNorm) and layernorm (PyTorch's, biased variance), fused forward and backward.
//
// rmsnorm:   y = x · r · w,            r = 1/√(mean(x²) + eps)
//            dx = r·(w⊙g) − r³/D · x · Σ(w⊙g⊙x);   dw = Σ_rows g ⊙ x · r
// layernorm: x̂ = (x − μ)·r, r = 1/√(var + eps);  y = x̂ ⊙ w + b
//            dx = r·(ĝ − mean(ĝ) − x̂·mean(ĝ⊙x̂)), ĝ = g ⊙ w;   dw = Σ_rows g ⊙ x̂;   db = Σ_rows g
// Row statistics accumulate in double. Weight/bias gradients are summed over rows by one thread per column,
// in row order, so they do not depend on the thread count. CUDA tensors: cuda/norm.cu, same formulas. Not here: group norm, batch norm.
#include <cmath>

#include "cuda/kernels.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace ssmtune::ops {

namespace {

// Σ_rows a[r, j] (· b[r, j] when b given) for every column j, in row order.
template <class T, class F>
void column_sums(int64_t rows, int64_t D, T* out, F value) {
#pragma omp parallel for schedule(static) if (rows * D > kParallelGrain)
    for (int64_t j = 0; j < D; ++j) {
        double acc = 0;
        for (int64_t r = 0; r < rows; ++r) acc += value(r, j);
        out[j] = T(acc);
    }
}

// The GPU versions (cuda/norm.cu): the same statistics and formulas, rstd and x̂ kept in double on the device.
Tensor rmsnorm_cuda(const Tensor& x, const Tensor& weight, const Tensor& xc, const Tensor& wc, int64_t rows, int64_t D,
                    double eps) {
    const int device = x.device().index;
    Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device()), rstd = Tensor::empty({rows}, DType::F64, x.device());
    cuda::rmsnorm_forward(device, x.dtype(), xc.raw_data(), wc.raw_data(), out.raw_data(), rstd.data<double>(), rows, D,
                          eps);
    autograd::record("rmsnorm", {x, weight}, {out}, [xc, wc, rstd, rows, D, device](const auto& g, const auto& needs) {
        const Tensor gc = g[0].contiguous();
        std::vector<Tensor> grads(2);
        if (needs[0]) {
            grads[0] = Tensor::empty(xc.shape(), xc.dtype(), xc.device());
            cuda::rmsnorm_backward_dx(device, xc.dtype(), gc.raw_data(), xc.raw_data(), wc.raw_data(),
                                      rstd.data<double>(), grads[0].raw_data(), rows, D);
        }
        if (needs[1]) {
            grads[1] = Tensor::empty(wc.shape(), wc.dtype(), wc.device());
            cuda::norm_column_sums(device, wc.dtype(), 0, gc.raw_data(), xc.raw_data(), nullptr, rstd.data<double>(),
                                   grads[1].raw_data(), rows, D);
        }
        return grads;
    });
    return out;
}

Tensor layernorm_cuda(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& xc, const Tensor& wc,
                      const Tensor& bc, int64_t rows, int64_t D, double eps) {
    const int device = x.device().index;
    Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
    Tensor xhat = Tensor::empty({rows, D}, DType::F64, x.device()), rstd = Tensor::empty({rows}, DType::F64, x.device());
    cuda::layernorm_forward(device, x.dtype(), xc.raw_data(), wc.defined() ? wc.raw_data() : nullptr,
                            bc.defined() ? bc.raw_data() : nullptr, out.raw_data(), xhat.data<double>(),
                            rstd.data<double>(), rows, D, eps);
    autograd::record("layernorm", {x, weight, bias}, {out},
                     [xhat, rstd, wc, rows, D, device, shape = x.shape(), dtype = x.dtype()](const auto& g,
                                                                                              const auto& needs) {
        const Tensor gc = g[0].contiguous();
        std::vector<Tensor> grads(3);
        if (needs[0]) {
            grads[0] = Tensor::empty(shape, dtype, gc.device());
            cuda::layernorm_backward_dx(device, dtype, gc.raw_data(), wc.defined() ? wc.raw_data() : nullptr,
                                        xhat.data<double>(), rstd.data<double>(), grads[0].raw_data(), rows, D);
        }
        for (int k : {1, 2}) {
            if (!needs[size_t(k)]) continue;
            grads[size_t(k)] = Tensor::empty({D}, dtype, gc.device());
            cuda::norm_column_sums(device, dtype, k, gc.raw_data(), nullptr, xhat.data<double>(), nullptr,
                                   grads[size_t(k)].raw_data(), rows, D);
        }
        return grads;
    });
    return out;
}

}  // namespace

Tensor rmsnorm(const Tensor& x, const Tensor& weight, double eps) {
    check_float_input(x, "rmsnorm", "x", kCudaKernel);
    check_float_input(weight, "rmsnorm", "weight", kCudaKernel);
    check_same_kind(x, weight, "rmsnorm");
    SSMTUNE_CHECK(x.dim() >= 1 && weight.dim() == 1 && weight.size(0) == x.size(-1), "rmsnorm: weight ",
                  weight.describe(), " does not match the last dimension of ", x.describe());
    const int64_t D = x.size(-1), rows = D == 0 ? 0 : x.numel() / D;
    Tensor xc = x.detach().contiguous(), wc = weight.detach().contiguous();
    if (x.device().is_cuda()) return rmsnorm_cuda(x, weight, xc, wc, rows, D, eps);
    Tensor out = Tensor::empty(x.shape(), x.dtype()), rstd = Tensor::empty({rows}, DType::F64);
    dispatch_float(x.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T *px = xc.data<T>(), *pw = wc.data<T>();
        T* po = out.data<T>();
        double* pr = rstd.data<double>();
#pragma omp parallel for schedule(static) if (rows * D > kParallelGrain)
        for (int64_t r = 0; r < rows; ++r) {
            double ss = 0;
            for (int64_t j = 0; j < D; ++j) ss += double(px[r * D + j]) * double(px[r * D + j]);
            const double rs = 1.0 / std::sqrt(ss / double(D) + eps);
            pr[r] = rs;
            for (int64_t j = 0; j < D; ++j) po[r * D + j] = T(double(px[r * D + j]) * rs * double(pw[j]));
        }
    });
    autograd::record("rmsnorm", {x, weight}, {out}, [xc, wc, rstd, rows, D](const auto& g, const auto& needs) {
        Tensor gc = g[0].contiguous();
        Tensor dx = needs[0] ? Tensor::empty(xc.shape(), xc.dtype()) : Tensor();
        Tensor dw = needs[1] ? Tensor::empty(wc.shape(), wc.dtype()) : Tensor();
        dispatch_float(xc.dtype(), [&](auto tag) {
            using T = typename decltype(tag)::type;
            const T *px = xc.data<T>(), *pw = wc.data<T>(), *pg = gc.data<T>();
            const double* pr = rstd.data<double>();
            if (needs[0]) {
                T* pd = dx.data<T>();
#pragma omp parallel for schedule(static) if (rows * D > kParallelGrain)
                for (int64_t r = 0; r < rows; ++r) {
                    double dot = 0;  // Σ w g x
                    for (int64_t j = 0; j < D; ++j) dot += double(pw[j]) * double(pg[r * D + j]) * double(px[r * D + j]);
                    const double rs = pr[r], c = rs * rs * rs * dot / double(D);
                    for (int64_t j = 0; j < D; ++j)
                        pd[r * D + j] = T(rs * double(pw[j]) * double(pg[r * D + j]) - c * double(px[r * D + j]));
                }
            }
            if (needs[1])
                column_sums<T>(rows, D, dw.data<T>(), [&](int64_t r, int64_t j) {
                    return double(pg[r * D + j]) * double(px[r * D + j]) * pr[r];
                });
        });
        return std::vector<Tensor>{needs[0] ? dx.reshape(xc.shape()) : Tensor(), dw};
    });
    return out;
}

Tensor layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
    check_float_input(x, "layernorm", "x", kCudaKernel);
    SSMTUNE_CHECK(x.dim() >= 1, "layernorm: input must have at least one dimension");
    const int64_t D = x.size(-1), rows = D == 0 ? 0 : x.numel() / D;
    for (const Tensor* p : {&weight, &bias}) {
        if (!p->defined()) continue;
        check_float_input(*p, "layernorm", p == &weight ? "weight" : "bias", kCudaKernel);
        check_same_kind(x, *p, "layernorm");
        SSMTUNE_CHECK(p->dim() == 1 && p->size(0) == D, "layernorm: ", p == &weight ? "weight " : "bias ",
                      p->describe(), " does not match the last dimension of ", x.describe());
    }
    Tensor xc = x.detach().contiguous();
    Tensor wc = weight.defined() ? weight.detach().contiguous() : Tensor();
    Tensor bc = bias.defined() ? bias.detach().contiguous() : Tensor();
    if (x.device().is_cuda()) return layernorm_cuda(x, weight, bias, xc, wc, bc, rows, D, eps);
    Tensor out = Tensor::empty(x.shape(), x.dtype()), xhat = Tensor::empty({rows, D}, DType::F64),
           rstd = Tensor::empty({rows}, DType::F64);
    dispatch_float(x.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* px = xc.data<T>();
        const T* pw = wc.defined() ? wc.data<T>() : nullptr;
        const T* pb = bc.defined() ? bc.data<T>() : nullptr;
        T* po = out.data<T>();
        double *ph = xhat.data<double>(), *pr = rstd.data<double>();
#pragma omp parallel for schedule(static) if (rows * D > kParallelGrain)
        for (int64_t r = 0; r < rows; ++r) {
            double mu = 0, var = 0;
            for (int64_t j = 0; j < D; ++j) mu += double(px[r * D + j]);
            mu /= double(D);
            for (int64_t j = 0; j < D; ++j) var += (double(px[r * D + j]) - mu) * (double(px[r * D + j]) - mu);
            const double rs = 1.0 / std::sqrt(var / double(D) + eps);
            pr[r] = rs;
            for (int64_t j = 0; j < D; ++j) {
                const double h = (double(px[r * D + j]) - mu) * rs;
                ph[r * D + j] = h;
                po[r * D + j] = T(h * (pw ? double(pw[j]) : 1.0) + (pb ? double(pb[j]) : 0.0));
            }
        }
    });
    autograd::record("layernorm", {x, weight, bias}, {out},
                     [xhat, rstd, wc, rows, D, shape = x.shape(), dtype = x.dtype()](const auto& g, const auto& needs) {
        Tensor gc = g[0].contiguous();
        std::vector<Tensor> grads(3);
        dispatch_float(dtype, [&](auto tag) {
            using T = typename decltype(tag)::type;
            const T* pg = gc.data<T>();
            const T* pw = wc.defined() ? wc.data<T>() : nullptr;
            const double *ph = xhat.data<double>(), *pr = rstd.data<double>();
            if (needs[0]) {
                grads[0] = Tensor::empty(shape, dtype);
                T* pd = grads[0].data<T>();
#pragma omp parallel for schedule(static) if (rows * D > kParallelGrain)
                for (int64_t r = 0; r < rows; ++r) {
                    double mean_g = 0, mean_gh = 0;  // means of ĝ and ĝ⊙x̂
                    for (int64_t j = 0; j < D; ++j) {
                        const double gh = double(pg[r * D + j]) * (pw ? double(pw[j]) : 1.0);
                        mean_g += gh;
                        mean_gh += gh * ph[r * D + j];
                    }
                    mean_g /= double(D);
                    mean_gh /= double(D);
                    for (int64_t j = 0; j < D; ++j) {
                        const double gh = double(pg[r * D + j]) * (pw ? double(pw[j]) : 1.0);
                        pd[r * D + j] = T(pr[r] * (gh - mean_g - ph[r * D + j] * mean_gh));
                    }
                }
            }
            if (needs[1]) {
                grads[1] = Tensor::empty({D}, dtype);
                column_sums<T>(rows, D, grads[1].data<T>(),
                               [&](int64_t r, int64_t j) { return double(pg[r * D + j]) * ph[r * D + j]; });
            }
            if (needs[2]) {
                grads[2] = Tensor::empty({D}, dtype);
                column_sums<T>(rows, D, grads[2].data<T>(), [&](int64_t r, int64_t j) { return double(pg[r * D + j]); });
            }
        });
        return grads;
    });
    return out;
}

}  // namespace ssmtune::ops
