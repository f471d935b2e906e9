// The associative operator of first-order linear recurrences, and the chunked parallel scan built on it.
//
// h_t = a_t · h_{t−1} + b_t is an inclusive scan of the pairs (a_t, b_t) under
//   (a1, b1) ∘ (a2, b2) = (a1·a2, a2·b1 + b2)      ("apply 1, then 2"), identity (1, 0),
// whose result at t is (Π_{s≤t} a_s, h_t) when h_0 = 0 (reference/ssm-models.md §0). The same header compiles
// in CUDA code (__host__ __device__), so the GPU kernel and these CPU functions share one definition.
// chunked_scan_forward/backward run the algorithm the CUDA kernel uses — a Hillis–Steele scan inside each chunk
// (log2(chunk) passes over "lanes", as a thread block would), then the carry from the previous chunk folded
// into every element — written as host loops so it is tested on machines without a GPU.
// Not here: the SSM-specific parts (discretisation, output contraction); see selective_scan.cpp.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "engine/host_device.h"


namespace ssmtune::ops {

template <class T>
struct ScanPair {
    T a;  // multiplicative part (product of the decays)
    T b;  // additive part (the state when starting from 0)
};

// (a1, b1) ∘ (a2, b2) = (a1·a2, a2·b1 + b2): first element 1, then element 2.
template <class T>
SSMTUNE_HD inline ScanPair<T> scan_combine(const ScanPair<T>& first, const ScanPair<T>& second) {
    return {first.a * second.a, second.a * first.b + second.b};
}

template <class T>
SSMTUNE_HD inline ScanPair<T> scan_identity() {
    return {T(1), T(0)};
}

// Inclusive Hillis–Steele scan of pairs[0..n) in place: after pass d, element i holds the combination of
// elements (i − 2^{d+1}, i]. Each pass reads the previous pass's values (double-buffered, as in shared memory).
template <class T>
void hillis_steele_inclusive(std::vector<ScanPair<T>>& pairs) {
    const int64_t n = int64_t(pairs.size());
    std::vector<ScanPair<T>> prev;
    for (int64_t offset = 1; offset < n; offset *= 2) {
        prev = pairs;
        for (int64_t i = offset; i < n; ++i) pairs[size_t(i)] = scan_combine(prev[size_t(i - offset)], prev[size_t(i)]);
    }
}

// h_t = a_t h_{t−1} + b_t for t = 0..L−1 from h_{−1} = h0, by chunks of `chunk` elements: a parallel scan within
// each chunk, then the carried state applied as h_t = A_t · carry + B_t. Returns h.
template <class T>
std::vector<T> chunked_scan_forward(const std::vector<T>& a, const std::vector<T>& b, T h0, int64_t chunk) {
    const int64_t L = int64_t(a.size());
    std::vector<T> h(static_cast<size_t>(L));
    T carry = h0;
    for (int64_t start = 0; start < L; start += chunk) {
        const int64_t len = std::min(chunk, L - start);
        std::vector<ScanPair<T>> pairs(static_cast<size_t>(len));
        for (int64_t i = 0; i < len; ++i) pairs[size_t(i)] = {a[size_t(start + i)], b[size_t(start + i)]};
        hillis_steele_inclusive(pairs);
        for (int64_t i = 0; i < len; ++i) h[size_t(start + i)] = pairs[size_t(i)].a * carry + pairs[size_t(i)].b;
        carry = h[size_t(start + len - 1)];
    }
    return h;
}

// The adjoint recurrence of backward: gh_t = g_t + a_{t+1} gh_{t+1} (gh_L = g_end, a_L unused), run right to left
// by chunks with the same parallel scan on the reversed, shifted pairs (a_{t+1}, g_t). Returns gh.
template <class T>
std::vector<T> chunked_scan_reverse(const std::vector<T>& a, const std::vector<T>& g, T g_end, int64_t chunk) {
    const int64_t L = int64_t(a.size());
    std::vector<T> gh(static_cast<size_t>(L));
    T carry = g_end;  // gh_{L} seen from position L−1 is multiplied by a_L := 1
    for (int64_t end = L; end > 0; end -= chunk) {
        const int64_t start = std::max<int64_t>(0, end - chunk), len = end - start;
        std::vector<ScanPair<T>> pairs(static_cast<size_t>(len));
        for (int64_t i = 0; i < len; ++i) {  // reversed order: element i is position end−1−i
            const int64_t t = end - 1 - i;
            const T decay = t + 1 < L ? a[size_t(t + 1)] : T(1);
            pairs[size_t(i)] = {decay, g[size_t(t)]};
        }
        hillis_steele_inclusive(pairs);
        for (int64_t i = 0; i < len; ++i) gh[size_t(end - 1 - i)] = pairs[size_t(i)].a * carry + pairs[size_t(i)].b;
        carry = gh[size_t(start)];
    }
    return gh;
}

}  // namespace ssmtune::ops
