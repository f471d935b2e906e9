// The associative operator of first-order linear recurrences, and the chunked parallel scan built on it.
//
// h_t = a_t · h_{t−1} + b_t is an inclusive scan of the pairs (a_t, b_t) under
//   (a1, b1) ∘ (a2, b2) = (a1·a2, a2·b1 + b2)      ("apply 1, then 2"), identity (1, 0),
// whose result at t is (Π_{s≤t} a_s, h_t) when h_0 = 0 (reference/ssm-models.md §0). The same header compiles
// in CUDA code (__host__ __device__), so the GPU kernel and these CPU functions share one definition.
// chunked_scan_forward/backward run the algorithm the CUDA kernel uses — a Hillis–Steele scan inside each chunk
// (log2(chunk) passes over "lanes", as a thread block would), then the carry from the previous chunk folded
// into every element — written as host loops so it is tested on machines without a GPU.
// block_scan_emulated runs the CUDA kernels' own decomposition (threads × items, warp scans, warp totals, carries,
// the reverse adjoint) on the host. Not here: the SSM-specific parts (discretisation, output contraction).
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

// The decomposition of the CUDA selective-scan kernels (cuda/selective_scan.cu), run on the host so it is tested
// without a GPU: chunks of threads·items steps from t = 0; in a chunk each thread combines its `items` consecutive
// pairs, the threads' aggregates go through 32-lane warps as the shuffles do (Kogge–Stone: at offset 1, 2, 4, 8, 16
// each lane combines the value `offset` lanes before it, all reading the previous step) and the warp totals are
// combined in order, giving every thread the combination of all pairs before it; the carry from the previous chunk
// is applied. reverse = false: h_t = a_t h_{t−1} + b_t from carry = h0. reverse = true: the adjoint
// gh_t = b_t + a_{t+1} gh_{t+1} (a_L := 1) from carry = gh_L, processed right to left (later chunks, higher
// threads and later items first), as the backward kernel does. threads must be a multiple of 32.
template <class T>
std::vector<T> block_scan_emulated(const std::vector<T>& a, const std::vector<T>& b, T carry, bool reverse,
                                   int threads = 128, int items = 4) {
    const int64_t L = int64_t(a.size()), chunk = int64_t(threads) * items, chunks = (L + chunk - 1) / chunk;
    const int warps = threads / 32;
    std::vector<T> out(static_cast<size_t>(L));
    // The pair of step t in processing order: (a_t, b_t) forward, (a_{t+1}, b_t) reverse; identity past the end.
    const auto pair_at = [&](int64_t t) {
        if (t >= L) return scan_identity<T>();
        if (!reverse) return ScanPair<T>{a[size_t(t)], b[size_t(t)]};
        return ScanPair<T>{t + 1 < L ? a[size_t(t + 1)] : T(1), b[size_t(t)]};
    };
    for (int64_t k = 0; k < chunks; ++k) {
        const int64_t c = reverse ? chunks - 1 - k : k, start = c * chunk;
        // Each thread's items combined in processing order; local[tid][i] covers its items up to i (forward) or
        // from i on (reverse).
        std::vector<std::vector<ScanPair<T>>> local(static_cast<size_t>(threads),
                                                    std::vector<ScanPair<T>>(static_cast<size_t>(items)));
        std::vector<ScanPair<T>> agg(static_cast<size_t>(threads));
        for (int tid = 0; tid < threads; ++tid) {
            auto& loc = local[size_t(tid)];
            for (int j = 0; j < items; ++j) {
                const int i = reverse ? items - 1 - j : j, prev = reverse ? i + 1 : i - 1;
                const ScanPair<T> p = pair_at(start + int64_t(tid) * items + i);
                loc[size_t(i)] = j == 0 ? p : scan_combine(loc[size_t(prev)], p);
            }
            agg[size_t(tid)] = loc[size_t(reverse ? 0 : items - 1)];
        }
        // Warp scans (Kogge–Stone over lanes in processing order), then warp totals in order.
        std::vector<ScanPair<T>> inc = agg, exclusive(static_cast<size_t>(threads));
        std::vector<ScanPair<T>> warp_total(static_cast<size_t>(warps));
        for (int w = 0; w < warps; ++w) {
            ScanPair<T>* lanes = inc.data() + w * 32;
            for (int off = 1; off < 32; off *= 2) {
                const std::vector<ScanPair<T>> before(lanes, lanes + 32);
                for (int lane = 0; lane < 32; ++lane) {
                    const int other = reverse ? lane + off : lane - off;
                    if (other >= 0 && other < 32) lanes[lane] = scan_combine(before[size_t(other)], before[size_t(lane)]);
                }
            }
            for (int lane = 0; lane < 32; ++lane) {
                const int other = reverse ? lane + 1 : lane - 1;
                exclusive[size_t(w * 32 + lane)] = other >= 0 && other < 32 ? lanes[other] : scan_identity<T>();
            }
            warp_total[size_t(w)] = lanes[reverse ? 0 : 31];
        }
        std::vector<ScanPair<T>> warp_prefix(static_cast<size_t>(warps));
        ScanPair<T> total = scan_identity<T>();
        for (int k2 = 0; k2 < warps; ++k2) {
            const int w = reverse ? warps - 1 - k2 : k2;
            warp_prefix[size_t(w)] = total;
            total = scan_combine(total, warp_total[size_t(w)]);
        }
        for (int tid = 0; tid < threads; ++tid) {
            const ScanPair<T> prefix = scan_combine(warp_prefix[size_t(tid / 32)], exclusive[size_t(tid)]);
            for (int i = 0; i < items; ++i) {
                const int64_t t = start + int64_t(tid) * items + i;
                if (t >= L) continue;
                const ScanPair<T> upto = scan_combine(prefix, local[size_t(tid)][size_t(i)]);
                out[size_t(t)] = upto.a * carry + upto.b;
            }
        }
        carry = total.a * carry + total.b;
    }
    return out;
}

}  // namespace ssmtune::ops
