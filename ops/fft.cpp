// Radix-2 FFT (see fft.h). Twiddles computed directly per stage in double (no accumulated rotation error).
#include "ops/fft.h"

#include <cmath>

#include "engine/error.h"

namespace ssmtune::ops {

int64_t next_pow2(int64_t n) {
    int64_t p = 1;
    while (p < n) p *= 2;
    return p;
}

void fft_inplace(std::vector<std::complex<double>>& a, bool inverse) {
    const size_t n = a.size();
    SSMTUNE_CHECK(n > 0 && (n & (n - 1)) == 0, "fft: size ", n, " is not a power of two");
    for (size_t i = 1, j = 0; i < n; ++i) {  // bit-reversal permutation
        size_t bit = n >> 1;
        for (; j & bit; bit >>= 1) j ^= bit;
        j ^= bit;
        if (i < j) std::swap(a[i], a[j]);
    }
    const double sign = inverse ? 1.0 : -1.0;
    for (size_t len = 2; len <= n; len <<= 1) {
        const size_t half = len / 2;
        std::vector<std::complex<double>> w(half);
        for (size_t k = 0; k < half; ++k) {
            const double ang = sign * 2.0 * M_PI * double(k) / double(len);
            w[k] = {std::cos(ang), std::sin(ang)};
        }
        for (size_t i = 0; i < n; i += len)
            for (size_t k = 0; k < half; ++k) {
                const std::complex<double> x = a[i + k], y = a[i + k + half] * w[k];
                a[i + k] = x + y;
                a[i + k + half] = x - y;
            }
    }
    if (inverse)
        for (auto& v : a) v /= double(n);
}

}  // namespace ssmtune::ops
