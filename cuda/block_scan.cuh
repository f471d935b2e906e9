// The block-level machinery the CUDA scans share (selective_scan.cu, longhorn_scan.cu): a chunk of kScanChunk steps
// is kScanItems consecutive steps for each of kScanThreads threads; block_exclusive is the warp-shuffle +
// shared-memory scan of one (a, b) pair per thread under ops/scan_combine.h's operator, forward or reverse;
// warp_sum is the fixed-tree sum over a warp. The algorithm is emulated on the host by block_scan_emulated in
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
// Resident blocks per SM the backward kernels ask the compiler to fit (__launch_bounds__): for F32, 5 blocks × 128
// threads, which caps them at 96 registers per thread without spills (nvcc 13.0, sm_90); F64 is left free (under
// that cap it spills hundreds of bytes).
template <class T>
constexpr int kScanBackwardBlocksPerSM = sizeof(T) == 4 ? 5 : 1;

template <class T>
__device__ inline T softplus20(T x) { return x <= T(20) ? log1p(exp(x)) : x; }
template <class T>
__device__ inline T sigmoid_dev(T x) { return T(1) / (T(1) + exp(-x)); }
// The selective scan's decays exp(Δ A): in F32 as exp2(x · log2 e), which compiles to the hardware's ex2 (a relative
// error of a few 1e-7, far inside the F32 tolerances; mamba_ssm's kernels do the same) instead of expf's ~8
// instructions, once per (step, state) in the forward and twice in the backward. F64 stays exact.
__device__ inline float decay_exp(float x) { return exp2f(x * 1.4426950408889634f); }
__device__ inline double decay_exp(double x) { return exp(x); }

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

// Sum over a warp's 32 lanes by a fixed shuffle tree; lane 0 gets the total (the other lanes partial sums).
template <class T>
__device__ T warp_sum(T value) {
    for (int off = 16; off > 0; off /= 2) value += __shfl_down_sync(kFullMask, value, off);
    return value;
}

// ---- the backward kernels' walk: one block per (b, group of channels), chunks right to left, channels in order ----

// The channels [begin, end) of backward group `group` of `groups`: ceil(E / groups) each, never empty (groups =
// scan_backward_groups(E) gives (groups − 1) · per_group ≤ 32 (groups − 1) < E).
struct ChannelGroup {
    int64_t begin, end;
};
__device__ inline ChannelGroup channel_group(int64_t group, int64_t groups, int64_t E) {
    const int64_t per_group = (E + groups - 1) / groups, begin = group * per_group;
    return {begin, begin + per_group < E ? begin + per_group : E};
}

// Chunk c of a sequence of L steps as this thread sees it: its first step t0, the chunk's valid length, whether a
// chunk follows, and whether it is the first one the backward visits (the last in time).
struct Chunk {
    int64_t start, t0, len;
    bool has_next, first_visited;
};
__device__ inline Chunk chunk_at(int64_t c, int64_t chunks, int64_t L) {
    const int64_t start = c * kScanChunk;
    return {start, start + int64_t(threadIdx.x) * kScanItems, L - start < kScanChunk ? L - start : kScanChunk,
            start + kScanChunk < L, c == chunks - 1};
}

// carry[k] = glast[k] (or 0 without it) for the group's count = channels × N adjoint carries; ends with a barrier.
template <class T>
__device__ void load_carries(T* carry, const T* glast, int64_t count) {
    for (int64_t k = threadIdx.x; k < count; k += kScanThreads) carry[k] = glast ? glast[k] : T(0);
    __syncthreads();
}

// A per-(b, e) sum over time, one chunk at a time: the chunk's per-warp sums added in warp order, written to *acc on
// the first chunk visited and added to it after (chunks right to left). No atomics: one thread owns *acc.
template <class T>
__device__ void add_chunk_sum(T* acc, const T (&per_warp)[kWarps], bool first_visited) {
    T s = T(0);
    for (int w = 0; w < kWarps; ++w) s += per_warp[w];
    *acc = first_visited ? s : *acc + s;
}

// The channel's dD, dy′ and dbias terms of this chunk (each thread's own): warp trees into channel_sums, a barrier,
// then threads 0, 1, 2 add them to *dD, *dyoff, *dbias. channel_sums is next written after a later barrier.
template <class T>
__device__ void add_channel_sums(T dD_term, T dyoff_term, T dbias_term, T (&channel_sums)[3][kWarps], T* dD,
                                 T* dyoff, T* dbias, bool first_visited) {
    const int tid = int(threadIdx.x);
    dD_term = warp_sum(dD_term);
    dyoff_term = warp_sum(dyoff_term);
    dbias_term = warp_sum(dbias_term);
    if (tid % 32 == 0) {
        channel_sums[0][tid / 32] = dD_term;
        channel_sums[1][tid / 32] = dyoff_term;
        channel_sums[2][tid / 32] = dbias_term;
    }
    __syncthreads();
    if (tid < 3) add_chunk_sum(tid == 0 ? dD : tid == 1 ? dyoff : dbias, channel_sums[tid], first_visited);
}

}  // namespace ssmtune::cuda::block_scan
