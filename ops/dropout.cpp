// dropout: zero each element with probability p and scale the survivors by 1/(1 − p) (inverted dropout).
//
// Element i (row-major) is kept when philox_uniform(seed, first + i) >= p, with first = gen.advance(numel): the
// mask is a pure function of the generator state, so the same state gives the same mask on any thread count
// (and on a GPU kernel using the same counter), and the next call draws a fresh one. The forward keeps the mask
// (one byte per element) for the backward dx = g ⊙ mask / (1 − p). Identity (x itself, no node, no draw) when
// not training or p == 0. Not here: alpha dropout, per-channel (2-D) dropout, in-place variants.
#include "cuda/kernels.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace ssmtune::ops {

namespace {

// out[i] = mask[i] ? src[i] * scale : 0, all contiguous.
template <class T>
void apply_mask(const T* src, const uint8_t* mask, T scale, int64_t n, T* out) {
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) out[i] = mask[i] ? src[i] * scale : T(0);
}

}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
    check_float_input(x, "dropout", "x", kCudaKernel);
    SSMTUNE_CHECK(p != 1.0, "dropout: p = 1 would drop every element and the 1/(1 − p) rescale divides by zero",
                  "; fix: use p < 1 (to silence a path entirely, multiply it by zero instead)");
    SSMTUNE_CHECK(p >= 0.0 && p < 1.0, "dropout: probability p = ", p, " is outside [0, 1)",
                  "; fix: pass the drop probability, e.g. 0.1");
    if (!training || p == 0.0) return x;
    const int64_t n = x.numel();
    const uint64_t seed = gen.seed(), first = gen.advance(uint64_t(n));
    const double scale = 1.0 / (1.0 - p);
    if (x.device().is_cuda()) {  // the same draws on the device (engine/rng.h is host/device code)
        const int device = x.device().index;
        Tensor mask = Tensor::empty(x.shape(), DType::U8, x.device());
        cuda::dropout_mask(device, static_cast<uint8_t*>(mask.raw_data()), n, seed, first, p);
        const Tensor xc = x.detach().contiguous();
        Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
        cuda::apply_mask(device, x.dtype(), xc.raw_data(), static_cast<const uint8_t*>(mask.raw_data()), scale,
                         out.raw_data(), n);
        autograd::record("dropout", {x}, {out}, [mask, scale, device](const auto& g, const auto&) {
            const Tensor gc = g[0].contiguous();
            Tensor dx = Tensor::empty(gc.shape(), gc.dtype(), gc.device());
            cuda::apply_mask(device, gc.dtype(), gc.raw_data(), static_cast<const uint8_t*>(mask.raw_data()), scale,
                             dx.raw_data(), gc.numel());
            return std::vector<Tensor>{dx};
        });
        return out;
    }
    Tensor mask = Tensor::empty(x.shape(), DType::U8);
    uint8_t* pm = mask.data<uint8_t>();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) pm[i] = philox_uniform(seed, first + uint64_t(i)) >= p ? 1 : 0;
    const Tensor xc = x.detach().contiguous();
    Tensor out = Tensor::empty(x.shape(), x.dtype());
    dispatch_float(x.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        apply_mask<T>(xc.data<T>(), pm, T(scale), n, out.data<T>());
    });
    autograd::record("dropout", {x}, {out}, [mask, scale](const auto& g, const auto&) {
        const Tensor gc = g[0].contiguous();
        Tensor dx = Tensor::empty(gc.shape(), gc.dtype());
        dispatch_float(gc.dtype(), [&](auto tag) {
            using T = typename decltype(tag)::type;
            apply_mask<T>(gc.data<T>(), mask.data<uint8_t>(), T(scale), gc.numel(), dx.data<T>());
        });
        return std::vector<Tensor>{dx};
    });
    return out;
}

}  // namespace ssmtune::ops
