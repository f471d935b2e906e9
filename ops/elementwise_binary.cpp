// add, sub, mul, div with NumPy broadcasting; scalar variants; sum_to_shape (the broadcast adjoint); add_.
//
// Forward: one strided loop over the broadcast output (for_each_broadcast), a contiguous fast path when both
// operands have the output's shape. Backward: ∂(a∘b)/∂a contracted with g, then summed over the dimensions
// that broadcasting expanded (sum_to_shape). CUDA tensors: the same broadcast strides drive cuda/elementwise.cu,
// and sum_to_shape becomes a sum over the expanded dims (cuda/reduce.cu). Not here: type promotion (both operands share a dtype).
#include <cmath>

#include "cuda/kernels.h"
#include "ops/elementwise_math.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace ssmtune::ops {

Shape broadcast_shapes(const Shape& a, const Shape& b) {
    const size_t rank = std::max(a.size(), b.size());
    Shape out(rank);
    for (size_t i = 0; i < rank; ++i) {
        const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
        const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
        SSMTUNE_CHECK(da == db || da == 1 || db == 1, "shapes ", shape_str(a), " and ", shape_str(b),
                      " cannot be broadcast together (dimension ", i, ": ", da, " vs ", db, ")");
        out[i] = da == 1 ? db : da;
    }
    return out;
}

namespace {

// out = a (kind) b, broadcast; plain loops (the reference and the CPU kernel at once).
Tensor binary_forward(BinaryKind kind, const Tensor& a, const Tensor& b, const char* op) {
    check_float_input(a, op, "a", kCudaKernel);
    check_float_input(b, op, "b", kCudaKernel);
    check_same_kind(a, b, op);
    const Shape out_shape = broadcast_shapes(a.shape(), b.shape());
    Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
    if (a.device().is_cuda()) {
        const Shape strides[3] = {out.strides(), broadcast_strides(a, out_shape), broadcast_strides(b, out_shape)};
        const int64_t offsets[3] = {0, a.offset(), b.offset()};
        cuda::binary_forward(a.device().index, kind, a.dtype(), a.storage()->data(), b.storage()->data(),
                             out.raw_data(), out.numel(), cuda::make_indexer<3>(out_shape, strides, offsets));
        return out;
    }
    dispatch_float(a.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* pa = static_cast<const T*>(a.storage()->data());
        const T* pb = static_cast<const T*>(b.storage()->data());
        T* po = out.data<T>();
        const int64_t n = out.numel();
        if (a.shape() == out_shape && b.shape() == out_shape && a.is_contiguous() && b.is_contiguous()) {
            pa += a.offset();
            pb += b.offset();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
            for (int64_t i = 0; i < n; ++i) po[i] = binary_value<T>(kind, pa[i], pb[i]);
            return;
        }
        for_each_broadcast<2>(out_shape, {broadcast_strides(a, out_shape), broadcast_strides(b, out_shape)},
                              {a.offset(), b.offset()}, [&](int64_t i, const std::array<int64_t, 2>& o) {
                                  po[i] = binary_value<T>(kind, pa[o[0]], pb[o[1]]);
                              });
    });
    return out;
}

}  // namespace

Tensor sum_to_shape(const Tensor& g, const Shape& shape) {
    if (g.shape() == shape) return g;
    if (g.device().is_cuda()) {  // the leading dims and the expanded size-1 dims, summed by the row-sum kernel
        const int64_t lead = g.dim() - int64_t(shape.size());
        SSMTUNE_CHECK(lead >= 0, "sum_to_shape: ", g.describe(), " has fewer dims than ", shape_str(shape));
        std::vector<int64_t> dims;
        for (int64_t d = 0; d < g.dim(); ++d)
            if (d < lead || (shape[size_t(d - lead)] == 1 && g.size(d) != 1)) dims.push_back(d);
        return dims.empty() ? g.detach().reshape(shape) : sum(g.detach(), dims, true).reshape(shape);
    }
    Tensor out = Tensor::zeros(shape, g.dtype());
    // View `out` as broadcast to g's shape (stride 0 on summed dims) and accumulate in row-major order of g:
    // a fixed order, so the result is deterministic.
    const Shape out_strides = broadcast_strides(out, g.shape());
    dispatch_float(g.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* pg = static_cast<const T*>(g.storage()->data());
        T* po = out.data<T>();
        const Shape& gs = g.shape();
        const int64_t rank = int64_t(gs.size()), total = g.numel();
        std::vector<int64_t> idx(size_t(rank), 0);
        for (int64_t i = 0; i < total; ++i) {
            int64_t go = g.offset(), oo = 0, rest = i;
            for (int64_t d = rank - 1; d >= 0; --d) {
                const int64_t k = rest % gs[size_t(d)];
                rest /= gs[size_t(d)];
                go += k * g.strides()[size_t(d)];
                oo += k * out_strides[size_t(d)];
            }
            po[oo] += pg[go];
        }
    });
    return out;
}

void add_(Tensor& dst, const Tensor& src) {
    check_float_input(dst, "add_", "dst", kCudaKernel);
    check_float_input(src, "add_", "src", kCudaKernel);
    check_same_kind(dst, src, "add_");
    if (dst.device().is_cuda()) {
        const Shape strides[2] = {dst.strides(), broadcast_strides(src, dst.shape())};
        const int64_t offsets[2] = {dst.offset(), src.offset()};
        cuda::add_inplace(dst.device().index, dst.dtype(), dst.storage()->data(), src.storage()->data(), dst.numel(),
                          cuda::make_indexer<2>(dst.shape(), strides, offsets));
        return;
    }
    dispatch_float(dst.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* ps = static_cast<const T*>(src.storage()->data());
        T* pd = static_cast<T*>(dst.storage()->data());
        for_each_broadcast<2>(dst.shape(), {dst.strides(), broadcast_strides(src, dst.shape())},
                              {dst.offset(), src.offset()},
                              [&](int64_t, const std::array<int64_t, 2>& o) { pd[o[0]] += ps[o[1]]; });
    });
}

Tensor add(const Tensor& a, const Tensor& b) {
    Tensor out = binary_forward(BinaryKind::Add, a, b, "add");
    autograd::record("add", {a, b}, {out}, [sa = a.shape(), sb = b.shape()](const auto& g, const auto& needs) {
        return std::vector<Tensor>{needs[0] ? sum_to_shape(g[0], sa) : Tensor(),
                                   needs[1] ? sum_to_shape(g[0], sb) : Tensor()};
    });
    return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
    Tensor out = binary_forward(BinaryKind::Sub, a, b, "sub");
    autograd::record("sub", {a, b}, {out}, [sa = a.shape(), sb = b.shape()](const auto& g, const auto& needs) {
        return std::vector<Tensor>{needs[0] ? sum_to_shape(g[0], sa) : Tensor(),
                                   needs[1] ? sum_to_shape(neg(g[0]), sb) : Tensor()};
    });
    return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
    Tensor out = binary_forward(BinaryKind::Mul, a, b, "mul");
    autograd::record("mul", {a, b}, {out}, [a = a.detach(), b = b.detach()](const auto& g, const auto& needs) {
        return std::vector<Tensor>{needs[0] ? sum_to_shape(mul(g[0], b), a.shape()) : Tensor(),
                                   needs[1] ? sum_to_shape(mul(g[0], a), b.shape()) : Tensor()};
    });
    return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
    Tensor out = binary_forward(BinaryKind::Div, a, b, "div");
    // d(a/b)/da = 1/b;  d(a/b)/db = -a/b² = -out/b
    autograd::record("div", {a, b}, {out},
                     [b = b.detach(), out = out.detach(), sa = a.shape()](const auto& g, const auto& needs) {
                         Tensor g_over_b = div(g[0], b);
                         return std::vector<Tensor>{
                             needs[0] ? sum_to_shape(g_over_b, sa) : Tensor(),
                             needs[1] ? sum_to_shape(neg(mul(g_over_b, out)), b.shape()) : Tensor()};
                     });
    return out;
}

Tensor add_scalar(const Tensor& a, double s) {
    return add(a, Tensor::full({}, s, a.dtype(), a.device()));
}

Tensor mul_scalar(const Tensor& a, double s) {
    return mul(a, Tensor::full({}, s, a.dtype(), a.device()));
}

}  // namespace ssmtune::ops

namespace ssmtune {
Tensor operator+(const Tensor& a, const Tensor& b) { return ops::add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return ops::sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return ops::mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return ops::div(a, b); }
Tensor operator+(const Tensor& a, double s) { return ops::add_scalar(a, s); }
Tensor operator-(const Tensor& a, double s) { return ops::add_scalar(a, -s); }
Tensor operator*(const Tensor& a, double s) { return ops::mul_scalar(a, s); }
Tensor operator/(const Tensor& a, double s) { return ops::mul_scalar(a, 1.0 / s); }
Tensor operator+(double s, const Tensor& a) { return ops::add_scalar(a, s); }
Tensor operator-(double s, const Tensor& a) { return ops::add_scalar(ops::neg(a), s); }
Tensor operator*(double s, const Tensor& a) { return ops::mul_scalar(a, s); }
Tensor operator-(const Tensor& a) { return ops::neg(a); }
}  // namespace ssmtune
