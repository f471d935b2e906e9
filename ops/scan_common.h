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
inline Tensor take_arg(const Tensor& t, const Tensor& like, const Shape& shape, const char* op, const char* name,
                       bool has_cuda_kernel = false) {
    if (!t.defined()) return Tensor();
    check_float_input(t, op, name, has_cuda_kernel);
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
    uint32_t k_bits, shifter_bits;  // k from the bits, not a float→int cast (undefined for NaN); unsigned wraps
    std::memcpy(&k_bits, &shifted, sizeof k_bits);
    std::memcpy(&shifter_bits, &shifter, sizeof shifter_bits);
    // k as a float from the same bits (= shifted − shifter under IEEE float arithmetic). Not shifted − shifter itself:
    // with x87 maths (i686's default) `shifted` may stay in an 80-bit register unrounded, so that difference would be
    // x·log2(e) rather than the k of the bits, and the result 2^k instead of e^x.
    const float kf = float(int32_t(k_bits - shifter_bits));
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

// log(1 + y) for float y in [0, 1], branch-free so loops over time vectorise: u = 1 + y is split into 2^k·f with
// f in [√½, √2) through the exponent bits, log f from Cephes' degree-9 polynomial in r = f − 1, and the rounding of
// 1 + y corrected with (y − (u − 1))/u, so tiny y keep full relative accuracy (log1p(y) ≈ y).
inline float scan_log1p_unit(float y) {
    const float u = 1.0f + y;
    uint32_t bits;
    std::memcpy(&bits, &u, sizeof bits);
    float k = float(int32_t(bits >> 23) - 127);  // u in [1, 2]: k is 0 or 1
    uint32_t f_bits = (bits & 0x007fffffu) | 0x3f800000u;
    float f;
    std::memcpy(&f, &f_bits, sizeof f);  // f in [1, 2)
    const bool big = f > 1.41421356f;
    f = big ? 0.5f * f : f;
    k = big ? k + 1.0f : k;
    const float r = f - 1.0f, r2 = r * r;
    float p = 7.0376836292e-2f;
    p = p * r - 1.1514610310e-1f;
    p = p * r + 1.1676998740e-1f;
    p = p * r - 1.2420140846e-1f;
    p = p * r + 1.4249322787e-1f;
    p = p * r - 1.6668057665e-1f;
    p = p * r + 2.0000714765e-1f;
    p = p * r - 2.4999993993e-1f;
    p = p * r + 3.3333331174e-1f;
    const float log_u = (r + (p * r * r2 - 0.5f * r2 + k * -2.12194440e-4f)) + k * 0.693359375f;
    const float correction = (y - (u - 1.0f)) / u;
    return log_u + correction;
}

// softplus(x) = log(1 + e^x) as max(x, 0) + log1p(e^−|x|); inputs above 20 return x (mamba_ssm's threshold).
// float: vectorisable; double: libm.
inline float scan_softplus(float x) {
    const float ax = x < 0 ? -x : x;
    const float v = (x > 0 ? x : 0.0f) + scan_log1p_unit(scan_exp(-ax));
    return x > 20.0f ? x : v;
}
inline double scan_softplus(double x) { return x <= 20.0 ? std::log1p(std::exp(x)) : x; }

// The logistic function; the float version through scan_exp (vectorisable), the double one through libm.
inline float sigmoid(float x) { return 1.0f / (1.0f + scan_exp(-x)); }
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Channels per backward work item: lanes of one block are processed in order by one thread, so reductions
// over channels go through per-block partials and stay independent of the thread count.
constexpr int64_t kLaneBlock = 64;

}  // namespace ssmtune::ops::scan_detail
