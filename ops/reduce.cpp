// sum, mean, max over dimensions (keepdim), max over everything, argmax.
//
// The input is viewed as [outer, reduced, inner] after moving the reduced dims together (a permuted,
// contiguous copy when they are not already adjacent). Each output element is reduced by one thread in
// index order, so results do not depend on the thread count. Backward: sum → broadcast g back; mean → the
// same divided by the count; max → g to the first maximal element. Sum over zero elements is 0, mean NaN.
// CUDA tensors: the same [kept, count] rows reduced by cuda/reduce.cu (one block per row, a fixed tree).
// Not here: min/prod/var (compose them), pairwise or Kahan summation.
#include <algorithm>
#include <cmath>
#include <limits>

#include "cuda/kernels.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace ssmtune::ops {

namespace {

// Normalised, sorted, unique reduced dims (all dims when `dims` is empty).
std::vector<int64_t> reduced_dims(const Tensor& x, const std::vector<int64_t>& dims, const char* op) {
    std::vector<int64_t> out;
    if (dims.empty()) {
        for (int64_t d = 0; d < x.dim(); ++d) out.push_back(d);
        return out;
    }
    for (int64_t d : dims) out.push_back(wrap_dim(d, x.dim(), op));
    std::sort(out.begin(), out.end());
    SSMTUNE_CHECK(std::adjacent_find(out.begin(), out.end()) == out.end(), op, ": dimension repeated in the list");
    return out;
}

// Output shape with (keepdim) or without the reduced dims.
Shape reduced_shape(const Shape& s, const std::vector<int64_t>& red, bool keepdim) {
    Shape out;
    for (int64_t d = 0; d < int64_t(s.size()); ++d) {
        const bool r = std::find(red.begin(), red.end(), d) != red.end();
        if (!r) out.push_back(s[size_t(d)]);
        else if (keepdim) out.push_back(1);
    }
    return out;
}

// x permuted so kept dims come first and reduced dims last, contiguous: viewed as [kept_numel, red_numel].
Tensor kept_then_reduced(const Tensor& x, const std::vector<int64_t>& red, int64_t& kept, int64_t& count) {
    std::vector<int64_t> perm;
    kept = 1;
    count = 1;
    for (int64_t d = 0; d < x.dim(); ++d)
        if (std::find(red.begin(), red.end(), d) == red.end()) { perm.push_back(d); kept *= x.size(d); }
    for (int64_t d : red) { perm.push_back(d); count *= x.size(d); }
    return x.detach().permute(perm).contiguous();
}

// g (shaped like the reduced output) broadcast back to in_shape.
Tensor expand_back(const Tensor& g, const Shape& in_shape, const std::vector<int64_t>& red) {
    return g.reshape(reduced_shape(in_shape, red, true)).expand(in_shape).contiguous();
}

Tensor sum_forward(const Tensor& x, const std::vector<int64_t>& red, bool keepdim, double scale) {
    int64_t kept, count;
    Tensor xc = kept_then_reduced(x, red, kept, count);
    Tensor out = Tensor::empty(reduced_shape(x.shape(), red, keepdim), x.dtype(), x.device());
    if (x.device().is_cuda()) {
        cuda::sum_rows(x.device().index, x.dtype(), xc.raw_data(), out.raw_data(), kept, count, scale);
        return out;
    }
    dispatch_float(x.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* px = xc.data<T>();
        T* po = out.data<T>();
#pragma omp parallel for schedule(static) if (kept * count > kParallelGrain && kept > 1)
        for (int64_t i = 0; i < kept; ++i) {
            T acc = 0;
            const T* row = px + i * count;
            for (int64_t j = 0; j < count; ++j) acc += row[j];
            po[i] = T(double(acc) * scale);
        }
    });
    return out;
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
    check_float_input(x, "sum", "x", kCudaKernel);
    const std::vector<int64_t> red = reduced_dims(x, dims, "sum");
    Tensor out = sum_forward(x, red, keepdim, 1.0);
    autograd::record("sum", {x}, {out}, [in_shape = x.shape(), red](const auto& g, const auto&) {
        return std::vector<Tensor>{expand_back(g[0], in_shape, red)};
    });
    return out;
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
    check_float_input(x, "mean", "x", kCudaKernel);
    const std::vector<int64_t> red = reduced_dims(x, dims, "mean");
    int64_t count = 1;
    for (int64_t d : red) count *= x.size(d);
    const double scale = count == 0 ? std::numeric_limits<double>::quiet_NaN() : 1.0 / double(count);
    Tensor out = sum_forward(x, red, keepdim, scale);
    autograd::record("mean", {x}, {out}, [in_shape = x.shape(), red, scale](const auto& g, const auto&) {
        return std::vector<Tensor>{mul_scalar(expand_back(g[0], in_shape, red), scale)};
    });
    return out;
}

namespace {
// Values and first-argmax over `dim`; argmax returned as I64 of the same reduced shape.
void max_forward(const Tensor& x, int64_t dim, bool keepdim, Tensor& values, Tensor& indices) {
    SSMTUNE_CHECK(x.size(dim) > 0, "max: dimension ", dim, " of ", x.describe(), " is empty");
    int64_t kept, count;
    Tensor xc = kept_then_reduced(x, {dim}, kept, count);
    const Shape shape = reduced_shape(x.shape(), {dim}, keepdim);
    values = Tensor::empty(shape, x.dtype(), x.device());
    indices = Tensor::empty(shape, DType::I64, x.device());
    if (x.device().is_cuda()) {
        cuda::max_rows(x.device().index, x.dtype(), xc.raw_data(), values.raw_data(),
                       static_cast<int64_t*>(indices.raw_data()), kept, count);
        return;
    }
    int64_t* pi = indices.data<int64_t>();
    dispatch_float(x.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* px = xc.data<T>();
        T* pv = values.data<T>();
        for (int64_t i = 0; i < kept; ++i) {
            const T* row = px + i * count;
            int64_t best = 0;
            for (int64_t j = 1; j < count; ++j)
                if (row[j] > row[best] || (std::isnan(double(row[j])) && !std::isnan(double(row[best])))) best = j;
            pv[i] = row[best];
            pi[i] = best;
        }
    });
}
}  // namespace

Tensor max(const Tensor& x, int64_t dim, bool keepdim) {
    check_float_input(x, "max", "x", kCudaKernel);
    dim = wrap_dim(dim, x.dim(), "max");
    Tensor values, indices;
    max_forward(x, dim, keepdim, values, indices);
    autograd::record("max", {x}, {values}, [in_shape = x.shape(), dim, indices](const auto& g, const auto&) {
        // dx = one-hot(argmax) along dim, scaled by g.
        if (g[0].device().is_cuda()) {  // rows [kept, count] with dim last, then moved back into place
            std::vector<int64_t> perm;
            Shape moved;
            for (int64_t d = 0; d < int64_t(in_shape.size()); ++d)
                if (d != dim) { perm.push_back(d); moved.push_back(in_shape[size_t(d)]); }
            perm.push_back(dim);
            moved.push_back(in_shape[size_t(dim)]);
            Tensor rows = Tensor::empty(moved, g[0].dtype(), g[0].device());
            const Tensor gc = g[0].contiguous(), ic = indices.contiguous();
            const int64_t count = in_shape[size_t(dim)];
            cuda::scatter_rows(g[0].device().index, g[0].dtype(), gc.raw_data(),
                               static_cast<const int64_t*>(ic.raw_data()), rows.raw_data(), gc.numel(), count);
            std::vector<int64_t> inverse(perm.size());
            for (size_t k = 0; k < perm.size(); ++k) inverse[size_t(perm[k])] = int64_t(k);
            return std::vector<Tensor>{rows.permute(inverse).contiguous()};
        }
        Tensor dx = Tensor::zeros(in_shape, g[0].dtype());
        const Shape keep = reduced_shape(in_shape, {dim}, true);
        Tensor gk = g[0].reshape(keep).contiguous(), ik = indices.reshape(keep).contiguous();
        const int64_t* pi = ik.data<int64_t>();
        const Shape st = dx.strides();
        dispatch_float(g[0].dtype(), [&](auto tag) {
            using T = typename decltype(tag)::type;
            const T* pg = gk.data<T>();
            T* pd = dx.data<T>();
            for (int64_t i = 0; i < shape_numel(keep); ++i) {
                int64_t off = 0, rest = i;
                for (int64_t d = int64_t(keep.size()) - 1; d >= 0; --d) {
                    const int64_t k = rest % keep[size_t(d)];
                    rest /= keep[size_t(d)];
                    off += k * st[size_t(d)];
                }
                pd[off + pi[i] * st[size_t(dim)]] += pg[i];
            }
        });
        return std::vector<Tensor>{dx};
    });
    return values;
}

Tensor max(const Tensor& x) {
    SSMTUNE_CHECK(x.numel() > 0, "max of an empty tensor ", x.describe());
    return max(x.reshape({x.numel()}), 0, false);
}

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
    check_float_input(x, "argmax", "x", kCudaKernel);
    dim = wrap_dim(dim, x.dim(), "argmax");
    Tensor values, indices;
    max_forward(x, dim, keepdim, values, indices);
    return indices;
}

}  // namespace ssmtune::ops
