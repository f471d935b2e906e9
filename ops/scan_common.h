// Helpers shared by the CPU scan ops (selective_scan.cpp, longhorn_scan.cpp): argument intake and the
// fixed-order reduction of per-batch / per-block partial gradients.
#pragma once

#include <cmath>

#include "ops/op_util.h"

namespace ssmtune::ops::scan_detail {

// An optional scan argument, checked (float, same dtype/device as `like`, exact `shape`) and made contiguous;
// undefined stays undefined.
inline Tensor take_arg(const Tensor& t, const Tensor& like, const Shape& shape, const char* op, const char* name) {
    if (!t.defined()) return Tensor();
    check_float_input(t, op, name);
    check_same_kind(like, t, op);
    SSMTUNE_CHECK(t.shape() == shape, op, ": ", name, " must be ", shape_str(shape), ", got ", t.describe());
    return t.detach().contiguous();
}

// Σ_k part[k, ...] over the leading dimension of `part` ([count, shape...]), in index order.
template <class T>
Tensor sum_leading(const Tensor& part, const Shape& shape) {
    Tensor out = Tensor::zeros(shape, part.dtype());
    T* po = out.data<T>();
    const T* pp = part.data<T>();
    const int64_t per = shape_numel(shape), count = part.size(0);
    for (int64_t k = 0; k < count; ++k)
        for (int64_t i = 0; i < per; ++i) po[i] += pp[k * per + i];
    return out;
}

template <class T>
inline T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

// Channels per backward work item: lanes of one block are processed in order by one thread, so reductions
// over channels go through per-block partials and stay independent of the thread count.
constexpr int64_t kLaneBlock = 64;

}  // namespace ssmtune::ops::scan_detail
