// Helpers shared by the CPU scan ops (selective_scan.cpp, longhorn_scan.cpp): argument intake and the
// fixed-order reduction of per-batch / per-block partial gradients.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

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

// exp for the scans' inner loops over the N states. float: a branch-free Cody–Waite range reduction
// (x = k·ln2 + r, |r| ≤ ln2/2, k rounded with the 1.5·2^23 trick), Cephes' degree-6 polynomial for e^r, and 2^k
// through the exponent bits; within a few ulp of std::exp. It is plain arithmetic, so GCC vectorises the loop over
// N with baseline x86-64 SSE2 (a libm call per element does not vectorise; the clamps need -fno-trapping-math, set
// for the scan sources in CMakeLists.txt). Arguments below −87 give ≈1.6e−38 instead of a subnormal or 0 (a decay
// that small is zero for every later sum); NaN stays NaN. double: std::exp, so float64 gradient checks keep full
// accuracy.
inline float scan_exp(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float shifter = 12582912.0f;  // 1.5·2^23: adding it rounds to an integer k, held in the low mantissa bits
    const float shifted = x * 1.44269504088896341f + shifter;
    const float kf = shifted - shifter;
    uint32_t k_bits, shifter_bits;  // k from the bits, not a float→int cast (undefined for NaN); unsigned wraps
    std::memcpy(&k_bits, &shifted, sizeof k_bits);
    std::memcpy(&shifter_bits, &shifter, sizeof shifter_bits);
    const float r = (x - kf * 0.693359375f) + kf * 2.12194440e-4f;  // ln2 split into a short head and a tail
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const uint32_t bits = (k_bits - shifter_bits + 127u) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}
inline double scan_exp(double x) { return std::exp(x); }

template <class T>
inline T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

// Channels per backward work item: lanes of one block are processed in order by one thread, so reductions
// over channels go through per-block partials and stay independent of the thread count.
constexpr int64_t kLaneBlock = 64;

}  // namespace ssmtune::ops::scan_detail
