// Radix-2 FFT (see fft.h). Twiddles are computed directly in double (cos/sin of 2πk/n, no accumulated rotation
// error) once per size and kept in a per-thread table; butterflies use explicit real arithmetic (std::complex's
// operator* goes through the NaN-careful __muldc3 path without -ffast-math, several times slower).
#include "ops/fft.h"

#include <cmath>
#include <unordered_map>

#include "engine/error.h"

namespace ssmtune::ops {

int64_t next_pow2(int64_t n) {
    int64_t p = 1;
    while (p < n) p *= 2;
    return p;
}

namespace {
// cos/sin of −2πk/n for k < n/2 (the forward transform's twiddles); the inverse uses their conjugates.
const std::vector<std::complex<double>>& twiddles(size_t n) {
    thread_local std::unordered_map<size_t, std::vector<std::complex<double>>> cache;
    auto it = cache.find(n);
    if (it != cache.end()) return it->second;
    std::vector<std::complex<double>> w(n / 2);
    for (size_t k = 0; k < n / 2; ++k) {
        const double ang = -2.0 * M_PI * double(k) / double(n);
        w[k] = {std::cos(ang), std::sin(ang)};
    }
    return cache.emplace(n, std::move(w)).first->second;
}
}  // namespace

void fft_inplace(std::vector<std::complex<double>>& a, bool inverse) {
    const size_t n = a.size();
    SSMTUNE_CHECK(n > 0 && (n & (n - 1)) == 0, "fft: size ", n, " is not a power of two");
    for (size_t i = 1, j = 0; i < n; ++i) {  // bit-reversal permutation
        size_t bit = n >> 1;
        for (; j & bit; bit >>= 1) j ^= bit;
        j ^= bit;
        if (i < j) std::swap(a[i], a[j]);
    }
    if (n == 1) return;
    const std::vector<std::complex<double>>& w = twiddles(n);
    const double sign = inverse ? -1.0 : 1.0;  // conjugate the twiddles for the inverse
    double* d = reinterpret_cast<double*>(a.data());  // [re, im] pairs, as std::complex guarantees
    for (size_t len = 2; len <= n; len <<= 1) {
        const size_t half = len / 2, stride = n / len;
        for (size_t i = 0; i < n; i += len)
            for (size_t k = 0; k < half; ++k) {
                const double wr = w[k * stride].real(), wi = sign * w[k * stride].imag();
                double* x = d + 2 * (i + k);
                double* y = d + 2 * (i + k + half);
                const double yr = y[0] * wr - y[1] * wi, yi = y[0] * wi + y[1] * wr;
                y[0] = x[0] - yr;
                y[1] = x[1] - yi;
                x[0] += yr;
                x[1] += yi;
            }
    }
    if (inverse) {
        const double s = 1.0 / double(n);
        for (size_t i = 0; i < 2 * n; ++i) d[i] *= s;
    }
}

}  // namespace ssmtune::ops
