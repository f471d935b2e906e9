// causal_conv1d: depthwise causal convolution, Mamba's short conv (nn.Conv1d(groups=E, padding=K-1)[..., :L]).
//
//   out[b, c, t] = bias[c] + Σ_k weight[c, k] · x[b, c, t − (K−1) + k]      (x = 0 before t = 0)
//
// Backward:  dx[b, c, s]  = Σ_k weight[c, k] · g[b, c, s + (K−1) − k]       (g = 0 at or after t = L)
//            dweight[c, k] = Σ_b Σ_t g[b, c, t] · x[b, c, t − (K−1) + k]
//            dbias[c]      = Σ_b Σ_t g[b, c, t]
// x/out/dx are threaded over (b, c) rows, dweight/dbias over c with b then t summed in order (in double), so
// results do not depend on the thread count. CUDA tensors: cuda/conv1d.cu (K <= 8). Not here: the SiLU that Mamba applies after the conv, dilation,
// stride, the recurrent one-step update (models keep their own conv state), long FFT convolutions.
#include <algorithm>
#include <vector>

#include "cuda/kernels.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace ssmtune::ops {

namespace {

// x[B, C, L] contiguous, w[C, K] contiguous, bias[C] or null -> out[B, C, L]
template <class T>
void causal_conv1d_forward(const T* x, const T* w, const T* bias, int64_t B, int64_t C, int64_t L, int64_t K, T* out) {
#pragma omp parallel for schedule(static) if (B * C * L * K > kParallelGrain)
    for (int64_t bc = 0; bc < B * C; ++bc) {
        const int64_t c = bc % C;
        const T* xr = x + bc * L;
        const T* wc = w + c * K;
        T* orow = out + bc * L;
        for (int64_t t = 0; t < L; ++t) {
            T acc = bias ? bias[c] : T(0);
            for (int64_t k = std::max<int64_t>(0, K - 1 - t); k < K; ++k) acc += wc[k] * xr[t - (K - 1) + k];
            orow[t] = acc;
        }
    }
}

// g[B, C, L], x[B, C, L], w[C, K] contiguous; any of dx/dw/dbias may be null (not needed).
template <class T>
void causal_conv1d_backward(const T* g, const T* x, const T* w, int64_t B, int64_t C, int64_t L, int64_t K, T* dx,
                            T* dw, T* dbias) {
    if (dx) {
#pragma omp parallel for schedule(static) if (B * C * L * K > kParallelGrain)
        for (int64_t bc = 0; bc < B * C; ++bc) {
            const int64_t c = bc % C;
            const T* gr = g + bc * L;
            const T* wc = w + c * K;
            T* dxr = dx + bc * L;
            for (int64_t s = 0; s < L; ++s) {
                T acc = T(0);
                // t = s + (K−1) − k must be < L  <=>  k > s + K − 1 − L
                for (int64_t k = std::max<int64_t>(0, s + K - L); k < K; ++k) acc += wc[k] * gr[s + (K - 1) - k];
                dxr[s] = acc;
            }
        }
    }
    if (dw || dbias) {
#pragma omp parallel for schedule(static) if (B * C * L * K > kParallelGrain)
        for (int64_t c = 0; c < C; ++c) {
            std::vector<double> acc(size_t(K), 0.0);
            double acc_bias = 0;
            for (int64_t b = 0; b < B; ++b) {
                const T* gr = g + (b * C + c) * L;
                const T* xr = x + (b * C + c) * L;
                for (int64_t t = 0; t < L; ++t) {
                    acc_bias += double(gr[t]);
                    if (!dw) continue;
                    for (int64_t k = std::max<int64_t>(0, K - 1 - t); k < K; ++k)
                        acc[size_t(k)] += double(gr[t]) * double(xr[t - (K - 1) + k]);
                }
            }
            if (dw) for (int64_t k = 0; k < K; ++k) dw[c * K + k] = T(acc[size_t(k)]);
            if (dbias) dbias[c] = T(acc_bias);
        }
    }
}

}  // namespace

// x[B, C, L], weight[C, K] or [C, 1, K], bias[C] (optional) -> out[B, C, L]
Tensor causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias) {
    check_float_input(x, "causal_conv1d", "x", kCudaKernel);
    check_float_input(weight, "causal_conv1d", "weight", kCudaKernel);
    check_same_kind(x, weight, "causal_conv1d");
    SSMTUNE_CHECK(x.dim() == 3, "causal_conv1d: x must be [B, C, L], got ", x.describe());
    const int64_t B = x.size(0), C = x.size(1), L = x.size(2);
    const bool w3 = weight.dim() == 3;
    SSMTUNE_CHECK((weight.dim() == 2 || (w3 && weight.size(1) == 1)) && weight.size(0) == C,
                  "causal_conv1d: weight ", weight.describe(), " must be [C, K] or [C, 1, K] with C = ", C,
                  " channels of x ", x.describe(), "; fix: a depthwise conv has one filter per channel");
    const int64_t K = weight.size(-1);
    SSMTUNE_CHECK(K >= 1, "causal_conv1d: kernel width K must be >= 1, got weight ", weight.describe());
    if (bias.defined()) {
        check_float_input(bias, "causal_conv1d", "bias", kCudaKernel);
        check_same_kind(x, bias, "causal_conv1d");
        SSMTUNE_CHECK(bias.dim() == 1 && bias.size(0) == C, "causal_conv1d: bias ", bias.describe(),
                      " must be [C] = [", C, "] for x ", x.describe());
    }
    const Tensor xc = x.detach().contiguous();
    const Tensor wc = weight.detach().reshape({C, K}).contiguous();
    const Tensor bc = bias.defined() ? bias.detach().contiguous() : Tensor();
    Tensor out = Tensor::empty({B, C, L}, x.dtype(), x.device());
    const bool gpu = x.device().is_cuda();
    SSMTUNE_CHECK(!gpu || K <= cuda::kMaxConvWidth, "causal_conv1d: kernel width K = ", K, " above the CUDA kernel's ",
                  cuda::kMaxConvWidth, " (weight ", weight.describe(), "); fix: run this conv on the CPU");
    if (gpu)
        cuda::causal_conv1d_forward(x.device().index, x.dtype(), xc.raw_data(), wc.raw_data(),
                                    bc.defined() ? bc.raw_data() : nullptr, out.raw_data(), B, C, L, K);
    else dispatch_float(x.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        causal_conv1d_forward<T>(xc.data<T>(), wc.data<T>(), bc.defined() ? bc.data<T>() : nullptr, B, C, L, K,
                                 out.data<T>());
    });
    autograd::record("causal_conv1d", {x, weight, bias}, {out},
                     [xc, wc, w_shape = weight.shape(), B, C, L, K](const auto& g, const auto& needs) {
                         const Tensor gc = g[0].contiguous();
                         std::vector<Tensor> grads(3);
                         if (needs[0]) grads[0] = Tensor::empty({B, C, L}, gc.dtype(), gc.device());
                         if (needs[1]) grads[1] = Tensor::empty({C, K}, gc.dtype(), gc.device());
                         if (needs[2]) grads[2] = Tensor::empty({C}, gc.dtype(), gc.device());
                         auto raw = [](Tensor& t) { return t.defined() ? t.raw_data() : nullptr; };
                         if (gc.device().is_cuda())
                             cuda::causal_conv1d_backward(gc.device().index, gc.dtype(), gc.raw_data(), xc.raw_data(),
                                                          wc.raw_data(), raw(grads[0]), raw(grads[1]), raw(grads[2]),
                                                          B, C, L, K);
                         else dispatch_float(gc.dtype(), [&](auto tag) {
                             using T = typename decltype(tag)::type;
                             auto ptr = [](Tensor& t) { return t.defined() ? t.data<T>() : nullptr; };
                             causal_conv1d_backward<T>(gc.data<T>(), xc.data<T>(), wc.data<T>(), B, C, L, K,
                                                       ptr(grads[0]), ptr(grads[1]), ptr(grads[2]));
                         });
                         if (needs[1]) grads[1] = grads[1].reshape(w_shape);
                         return grads;
                     });
    return out;
}

}  // namespace ssmtune::ops
