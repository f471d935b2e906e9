// The block-level machinery the CUDA scans share (selective_scan.cu, longhorn_scan.cu): a chunk of kScanChunk steps
// is kScanItems consecutive steps for each of kScanThreads threads; block_exclusive is the warp-shuffle +
// shared-memory scan of one (a, b) pair per thread under ops/scan_combine.h's operator, forward or reverse;
// block_sum is the fixed-tree sum over the block. The algorithm is emulated on the host by block_scan_emulated in
// ops/scan_combine.h (tested on every machine). Not here: anything model-specific (the pairs, the outputs).
#pragma once

#include "cuda/kernels.h"
#include "cuda/launch.cuh"
#include "ops/scan_combine.h"

namespace ssmtune::cuda::block_scan {

using ops::ScanPair;
using ops::scan_combine;
using ops::scan_identity;

constexpr int kScanThreads = 128, kScanItems = 4, kWarps = kScanThreads / 32;
static_assert(kScanThreads * kScanItems == kScanChunk, "chunk = threads × items");
constexpr unsigned kFullMask = 0xffffffffu;

template <class T>
__device__ inline T softplus20(T x) { return x <= T(20) ? log1p(exp(x)) : x; }
template <class T>
__device__ inline T sigmoid_dev(T x) { return T(1) / (T(1) + exp(-x)); }

// The combination of the pairs of all threads before this one in processing order (ascending thread index, or
// descending when kReverse), and the whole block's combination in `total`. Ends with a barrier, so it can be called
// again at once.
template <class T, bool kReverse>
__device__ ScanPair<T> block_exclusive(ScanPair<T> agg, ScanPair<T>* warp_totals, ScanPair<T>& total) {
    const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
    ScanPair<T> inc = agg;
    for (int off = 1; off < 32; off *= 2) {
        const T oa = kReverse ? __shfl_down_sync(kFullMask, inc.a, off) : __shfl_up_sync(kFullMask, inc.a, off);
        const T ob = kReverse ? __shfl_down_sync(kFullMask, inc.b, off) : __shfl_up_sync(kFullMask, inc.b, off);
        if (kReverse ? lane + off < 32 : lane >= off) inc = scan_combine(ScanPair<T>{oa, ob}, inc);
    }
    const T ea = kReverse ? __shfl_down_sync(kFullMask, inc.a, 1) : __shfl_up_sync(kFullMask, inc.a, 1);
    const T eb = kReverse ? __shfl_down_sync(kFullMask, inc.b, 1) : __shfl_up_sync(kFullMask, inc.b, 1);
    const bool first_lane = kReverse ? lane == 31 : lane == 0;
    const ScanPair<T> exclusive = first_lane ? scan_identity<T>() : ScanPair<T>{ea, eb};
    if (kReverse ? lane == 0 : lane == 31) warp_totals[warp] = inc;
    __syncthreads();
    ScanPair<T> prefix = scan_identity<T>();
    total = scan_identity<T>();
    for (int k = 0; k < kWarps; ++k) {
        const int w = kReverse ? kWarps - 1 - k : k;
        if (w == warp) prefix = total;
        total = scan_combine(total, warp_totals[w]);
    }
    __syncthreads();
    return scan_combine(prefix, exclusive);
}

// Sum over the block's threads by the fixed tree (lane 0's result is returned to every thread).
template <class T>
__device__ T block_sum(T value, T* scratch) {
    return block_tree_sum<kScanThreads>(value, scratch);
}

}  // namespace ssmtune::cuda::block_scan
