// A small radix-2 complex FFT (iterative Cooley–Tukey, double precision) for the long causal convolution.
// Deterministic and dependency-free; sizes are powers of two. Not here: mixed radix, real-to-complex packing.
#pragma once

#include <complex>
#include <cstdint>
#include <vector>

namespace ssmtune::ops {

// In-place forward (inverse = false) or inverse (inverse = true, scaled by 1/n) transform; a.size() must be a
// power of two.
void fft_inplace(std::vector<std::complex<double>>& a, bool inverse);
// Smallest power of two >= n (n >= 1).
int64_t next_pow2(int64_t n);

}  // namespace ssmtune::ops
