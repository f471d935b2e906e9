// Longhorn's scan on the GPU (cuda/kernels.h), on the selective scan's block machinery (cuda/block_scan.cuh).
//
//   β = σ(dt + bias), S_t = Σ_n k_{t,n}², ε = β / (1 + β S),  h_t = (1 − ε k²) ⊙ h_{t−1} + ε k x_t,
//   y_t = q_t·(h_t + h′) + D x_t + y′,  out = y · SiLU(z)          (Liu et al. 2024; ops/longhorn_scan.cpp)
// is the inclusive scan of the pairs (a_t, b_t) = (1 − ε_t k_t², ε_t k_t x_t) per state n, so the forward and the
// reverse adjoint scan are the selective scan's, with k in place of Δ·B and q in place of C. Forward: one block of
// 128 threads per (b, e), 512-step chunks, only the state after each chunk saved. Backward: one block per (b, group
// of 32 channels), chunks right to left and within a chunk the group's channels in order; per state the chunk's
// states are recomputed from the saved one and gh_t = q_t gy_t + a_{t+1} gh_{t+1} runs as a reverse block scan. ε's gradient collects
// Σ_n gh (k x − k² h_{t−1}) per step; it gives ddt (through ∂ε/∂β = 1/(1+βS)² and σ′) and the normaliser's
// dS = −ε² gε, which the caller turns into dk += 2 k Σ_e dS. dk, dq, dS: per-group partials added in channel order
// (the first channel writes them); dD, dy′, dbias, dh′: per chunk a fixed warp tree and the warps in order, added
// over the chunks right to left. No float atomics. Mirrors ops/longhorn_scan.cpp (the reference).
// Not here: the official kernel's fused projections; state sizes above 64.
#include "cuda/block_scan.cuh"

namespace ssmtune::cuda {

namespace {

using namespace block_scan;
using ops::ScanPair;

template <class T>
struct HornInputs {  // typed views of LonghornScanParams
    const T *x, *dt, *k, *q, *D, *z, *bias, *h0, *hoff, *yoff;
    int64_t batch, E, N, L;
    bool h0_batched;
};

template <class T>
HornInputs<T> typed(const LonghornScanParams& p) {
    return {static_cast<const T*>(p.x),  static_cast<const T*>(p.dt), static_cast<const T*>(p.k),
            static_cast<const T*>(p.q),  static_cast<const T*>(p.D),  static_cast<const T*>(p.z),
            static_cast<const T*>(p.dt_bias), static_cast<const T*>(p.h0), static_cast<const T*>(p.state_offset),
            static_cast<const T*>(p.output_offset), p.batch, p.E, p.N, p.L, p.h0_batched};
}

// β, S = Σ_n k² (summed over n in order, as the CPU op) and ε at step t of lane (b, e).
template <class T>
struct StepSizes {
    T beta, S, eps;
};
template <class T>
__device__ inline StepSizes<T> step_sizes(const HornInputs<T>& in, int64_t lane_base, int64_t b, int64_t e, int64_t t) {
    StepSizes<T> s;
    s.beta = sigmoid_dev(in.dt[lane_base + t] + (in.bias ? in.bias[e] : T(0)));
    s.S = T(0);
    for (int64_t n = 0; n < in.N; ++n) {
        const T kn = in.k[(b * in.N + n) * in.L + t];
        s.S += kn * kn;
    }
    s.eps = s.beta / (T(1) + s.beta * s.S);
    return s;
}

template <class T>
__device__ inline T initial_state(const HornInputs<T>& in, int64_t b, int64_t e, int64_t n) {
    return in.h0 ? in.h0[((in.h0_batched ? b * in.E : 0) + e) * in.N + n] : T(0);
}

template <class T>
__global__ void __launch_bounds__(kScanThreads) horn_forward_kernel(HornInputs<T> in, T* out, T* y_pre, T* last,
                                                                    T* chunk_states, int64_t chunks) {
    __shared__ T carry[kScanMaxStates];
    __shared__ ScanPair<T> warp_totals[kWarps];
    const int64_t e = blockIdx.x, b = blockIdx.y, N = in.N, L = in.L;
    const int64_t lane_base = (b * in.E + e) * L;
    for (int64_t n = threadIdx.x; n < N; n += kScanThreads) carry[n] = initial_state(in, b, e, n);
    __syncthreads();
    for (int64_t c = 0; c < chunks; ++c) {
        const int64_t t0 = c * kScanChunk + int64_t(threadIdx.x) * kScanItems;
        T eps[kScanItems], xx[kScanItems], y[kScanItems];
        for (int i = 0; i < kScanItems; ++i) {
            const bool valid = t0 + i < L;
            eps[i] = valid ? step_sizes(in, lane_base, b, e, t0 + i).eps : T(0);
            xx[i] = valid ? in.x[lane_base + t0 + i] : T(0);
            y[i] = T(0);
        }
        for (int64_t n = 0; n < N; ++n) {
            const T hoff = in.hoff ? in.hoff[e * N + n] : T(0);
            const T* kn = in.k + (b * N + n) * L;
            const T* qn = in.q + (b * N + n) * L;
            ScanPair<T> local[kScanItems];
            for (int i = 0; i < kScanItems; ++i) {
                const bool valid = t0 + i < L;
                const T kk = valid ? kn[t0 + i] : T(0);
                const ScanPair<T> step = valid ? ScanPair<T>{T(1) - eps[i] * kk * kk, eps[i] * kk * xx[i]}
                                               : ops::scan_identity<T>();
                local[i] = i == 0 ? step : ops::scan_combine(local[i - 1], step);
            }
            ScanPair<T> total;
            const ScanPair<T> prefix = block_exclusive<T, false>(local[kScanItems - 1], warp_totals, total);
            const T h_in = carry[n];
            for (int i = 0; i < kScanItems; ++i) {
                if (t0 + i >= L) continue;
                const ScanPair<T> upto = ops::scan_combine(prefix, local[i]);
                y[i] += qn[t0 + i] * (upto.a * h_in + upto.b + hoff);
            }
            __syncthreads();  // every thread has read carry[n]
            if (threadIdx.x == 0) {
                const T h_out = total.a * h_in + total.b;
                carry[n] = h_out;
                chunk_states[((b * in.E + e) * chunks + c) * N + n] = h_out;
            }
        }
        for (int i = 0; i < kScanItems; ++i) {
            if (t0 + i >= L) continue;
            T yv = y[i];
            if (in.D) yv += in.D[e] * xx[i];
            if (in.yoff) yv += in.yoff[e];
            if (y_pre) y_pre[lane_base + t0 + i] = yv;
            if (in.z) {
                const T zz = in.z[lane_base + t0 + i];
                yv *= zz * sigmoid_dev(zz);
            }
            out[lane_base + t0 + i] = yv;
        }
        __syncthreads();  // carry written by thread 0 is visible to the next chunk
    }
    if (last)
        for (int64_t n = threadIdx.x; n < N; n += kScanThreads) last[(b * in.E + e) * N + n] = carry[n];
}

template <class T>
struct HornGrads {  // typed views of LonghornScanGrads
    T *dx, *ddt, *dz, *dk_part, *dq_part, *dS_part, *dh0_part, *dhoff_part, *dD_part, *dbias_part, *dyoff_part;
};

template <class T>
__global__ void __launch_bounds__(kScanThreads, kScanBackwardBlocksPerSM<T>)
    horn_backward_kernel(HornInputs<T> in, const T* chunk_states, const T* y_pre, const T* gout, const T* glast,
                         HornGrads<T> g, int64_t chunks, int64_t groups) {
    __shared__ T carry_back[kScanGroupChannels * kScanMaxStates];  // per channel: the adjoint at the first step of
                                                                    // the chunk to the right
    __shared__ T a_chunk[kScanChunk];  // this chunk's forget factors for the current channel and state
    __shared__ T h_chunk[kScanChunk];  // this chunk's recomputed states for the current channel and state
    __shared__ ScanPair<T> warp_totals[kWarps];
    __shared__ T state_sums[kScanMaxStates][kWarps];  // per-warp sums of this chunk's dh′ terms
    __shared__ T channel_sums[3][kWarps];             // per-warp sums of this chunk's dD, dy′ and dbias terms
    const int64_t group = blockIdx.x, b = blockIdx.y, N = in.N, L = in.L, E = in.E;
    const auto [e_begin, e_end] = channel_group(group, groups, E);
    const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;
    T* dk_group = g.dk_part + (b * groups + group) * N * L;
    T* dq_group = g.dq_part + (b * groups + group) * N * L;
    T* dS_group = g.dS_part + (b * groups + group) * L;
    load_carries(carry_back, glast ? glast + (b * E + e_begin) * N : glast, (e_end - e_begin) * N);
    // Chunks right to left, within a chunk the group's channels in order (as in selective_scan.cu): the group's dk,
    // dq and dS partials of one chunk stay in cache while every channel adds to them; the first channel writes them.
    for (int64_t c = chunks - 1; c >= 0; --c) {
        const auto [start, t0, len, has_next, first_chunk] = chunk_at(c, chunks, L);
        for (int64_t e = e_begin; e < e_end; ++e) {
            const int64_t lane_base = (b * E + e) * L;
            const bool first_channel = e == e_begin;
            T* carry = carry_back + (e - e_begin) * N;
            const T eps_next = has_next ? step_sizes(in, lane_base, b, e, start + kScanChunk).eps : T(0);
            StepSizes<T> st[kScanItems];
            T xx[kScanItems], gy[kScanItems], geps[kScanItems], gx[kScanItems];
            T dD_acc = T(0), dyoff_acc = T(0), dbias_acc = T(0);
            for (int i = 0; i < kScanItems; ++i) {
                const int64_t t = t0 + i;
                geps[i] = gx[i] = T(0);
                if (t >= L) {
                    st[i] = StepSizes<T>{T(0), T(0), T(0)};
                    xx[i] = gy[i] = T(0);
                    continue;
                }
                st[i] = step_sizes(in, lane_base, b, e, t);
                xx[i] = in.x[lane_base + t];
                const T go = gout[lane_base + t];
                if (in.z) {  // out = y · SiLU(z): gy = go · SiLU(z), gz = go · y · SiLU'(z)
                    const T zz = in.z[lane_base + t], s = sigmoid_dev(zz);
                    gy[i] = go * zz * s;
                    if (g.dz) g.dz[lane_base + t] = go * y_pre[lane_base + t] * s * (T(1) + zz * (T(1) - s));
                } else {
                    gy[i] = go;
                }
                dD_acc += gy[i] * xx[i];
                dyoff_acc += gy[i];
            }
            for (int64_t n = 0; n < N; ++n) {
                const T hoff = in.hoff ? in.hoff[e * N + n] : T(0);
                const T* kn = in.k + (b * N + n) * L;
                const T* qn = in.q + (b * N + n) * L;
                const T h_in = c == 0 ? initial_state(in, b, e, n) : chunk_states[((b * E + e) * chunks + c - 1) * N + n];
                // 1. The chunk's states, recomputed: forward block scan from h_in.
                ScanPair<T> local[kScanItems];
                T a[kScanItems], kk[kScanItems];
                for (int i = 0; i < kScanItems; ++i) {
                    const bool valid = t0 + i < L;
                    kk[i] = valid ? kn[t0 + i] : T(0);
                    a[i] = valid ? T(1) - st[i].eps * kk[i] * kk[i] : T(1);
                    const ScanPair<T> step =
                        valid ? ScanPair<T>{a[i], st[i].eps * kk[i] * xx[i]} : ops::scan_identity<T>();
                    local[i] = i == 0 ? step : ops::scan_combine(local[i - 1], step);
                }
                ScanPair<T> total;
                ScanPair<T> prefix = block_exclusive<T, false>(local[kScanItems - 1], warp_totals, total);
                T h[kScanItems];
                for (int i = 0; i < kScanItems; ++i) {
                    const ScanPair<T> upto = ops::scan_combine(prefix, local[i]);
                    h[i] = upto.a * h_in + upto.b;
                    a_chunk[tid * kScanItems + i] = a[i];
                    h_chunk[tid * kScanItems + i] = h[i];
                }
                __syncthreads();
                // 2. The adjoint: reverse block scan of (a_{t+1}, q_t gy_t), carried in from the chunk to the right.
                ScanPair<T> rlocal[kScanItems];
                for (int i = kScanItems - 1; i >= 0; --i) {
                    const int64_t j = int64_t(tid) * kScanItems + i;  // index in the chunk
                    ScanPair<T> step = ops::scan_identity<T>();
                    if (j < len) {
                        T a_next = T(1);
                        if (j + 1 < len) {
                            a_next = a_chunk[j + 1];
                        } else if (has_next) {
                            const T k_next = kn[start + kScanChunk];
                            a_next = T(1) - eps_next * k_next * k_next;
                        }
                        step = ScanPair<T>{a_next, qn[t0 + i] * gy[i]};
                    }
                    rlocal[i] = i == kScanItems - 1 ? step : ops::scan_combine(rlocal[i + 1], step);
                }
                prefix = block_exclusive<T, true>(rlocal[0], warp_totals, total);
                const T carry_in = carry[n];
                T dhoff_n = T(0);
                for (int i = 0; i < kScanItems; ++i) {
                    const int64_t j = int64_t(tid) * kScanItems + i, t = t0 + i;
                    if (j >= len) continue;
                    const ScanPair<T> from_right = ops::scan_combine(prefix, rlocal[i]);
                    const T gh = from_right.a * carry_in + from_right.b;  // ∂L/∂h_t
                    const T h_prev = j == 0 ? h_in : h_chunk[j - 1];
                    const T eps = st[i].eps, k = kk[i];
                    geps[i] += gh * (k * xx[i] - k * k * h_prev);
                    const T dk_t = gh * (eps * xx[i] - T(2) * eps * k * h_prev), dq_t = gy[i] * (h[i] + hoff);
                    dk_group[n * L + t] = first_channel ? dk_t : dk_group[n * L + t] + dk_t;
                    gx[i] += gh * eps * k;
                    dq_group[n * L + t] = first_channel ? dq_t : dq_group[n * L + t] + dq_t;
                    dhoff_n += gy[i] * qn[t];
                }
                dhoff_n = warp_sum(dhoff_n);
                if (lane == 0) state_sums[n][warp] = dhoff_n;
                __syncthreads();  // every thread has read carry[n], a_chunk and h_chunk
                if (tid == 0) {
                    const T gh_first = total.a * carry_in + total.b;  // ∂L/∂h at the chunk's first step
                    carry[n] = gh_first;
                    if (c == 0) g.dh0_part[(b * E + e) * N + n] = gh_first * a_chunk[0];  // ∂L/∂h_{−1}
                }
                __syncthreads();
            }
            for (int i = 0; i < kScanItems; ++i) {
                const int64_t t = t0 + i;
                if (t >= L) continue;
                const T eps = st[i].eps, beta = st[i].beta, denom = T(1) + beta * st[i].S;
                const T dS_t = -eps * eps * geps[i];                                    // through ε's normaliser
                dS_group[t] = first_channel ? dS_t : dS_group[t] + dS_t;
                const T graw = geps[i] / (denom * denom) * beta * (T(1) - beta);       // ∂ε/∂β · ∂β/∂logit
                g.ddt[lane_base + t] = graw;
                dbias_acc += graw;
                g.dx[lane_base + t] = gx[i] + gy[i] * (in.D ? in.D[e] : T(0));
            }
            // Per-(b, e) sums over time: per chunk, a fixed warp tree and the warps in order; over chunks, right to
            // left (each state's sum by thread n, the channel's by threads 0-2). No atomics.
            add_channel_sums(dD_acc, dyoff_acc, dbias_acc, channel_sums, g.dD_part + b * E + e, g.dyoff_part + b * E + e,
                             g.dbias_part + b * E + e, first_chunk);
            if (tid < N && g.dhoff_part)
                add_chunk_sum(g.dhoff_part + (b * E + e) * N + tid, state_sums[tid], first_chunk);
            // state_sums and channel_sums are next written after the next channel's first block scan (a barrier).
        }
    }
}

void check_params(const LonghornScanParams& p) {
    SSMTUNE_CHECK(p.N >= 1 && p.N <= kScanMaxStates, "longhorn_scan on CUDA: state size N = ", p.N, " outside [1, ",
                  kScanMaxStates, "]; fix: run this scan on the CPU");
    SSMTUNE_CHECK(p.E <= 2147483647 && p.batch <= 65535, "longhorn_scan on CUDA: B = ", p.batch, ", E = ", p.E,
                  " exceed the launch grid (E < 2^31, B < 65536); fix: split the batch");
}

}  // namespace

void longhorn_scan_forward(int device, DType dtype, const LonghornScanParams& p, void* out, void* y_pre, void* last,
                           void* chunk_states) {
    check_params(p);
    if (p.batch * p.E * p.L == 0) return;
    const int64_t chunks = (p.L + kScanChunk - 1) / kScanChunk;
    cudaStream_t s = stream(device);
    const dim3 grid(unsigned(p.E), unsigned(p.batch));
    dispatch_f32_f64(dtype, "longhorn_scan_forward", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(grid, kScanThreads, s, horn_forward_kernel<T>)(
            typed<T>(p), static_cast<T*>(out), static_cast<T*>(y_pre), static_cast<T*>(last),
            static_cast<T*>(chunk_states), chunks);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void longhorn_scan_backward(int device, DType dtype, const LonghornScanParams& p, const void* chunk_states,
                            const void* y_pre, const void* gout, const void* glast, const LonghornScanGrads& g) {
    check_params(p);
    if (p.batch * p.E * p.L == 0) return;
    const int64_t chunks = (p.L + kScanChunk - 1) / kScanChunk, groups = scan_backward_groups(p.E);
    cudaStream_t s = stream(device);
    const dim3 grid(unsigned(groups), unsigned(p.batch));
    dispatch_f32_f64(dtype, "longhorn_scan_backward", [&](auto tag) {
        using T = decltype(tag);
        const HornGrads<T> gt{static_cast<T*>(g.dx),       static_cast<T*>(g.ddt),     static_cast<T*>(g.dz),
                              static_cast<T*>(g.dk_part),  static_cast<T*>(g.dq_part), static_cast<T*>(g.dS_part),
                              static_cast<T*>(g.dh0_part), static_cast<T*>(g.dstate_offset_part),
                              static_cast<T*>(g.dD_part),  static_cast<T*>(g.ddt_bias_part),
                              static_cast<T*>(g.doutput_offset_part)};
        SSMTUNE_LAUNCH(grid, kScanThreads, s, horn_backward_kernel<T>)(
            typed<T>(p), static_cast<const T*>(chunk_states), static_cast<const T*>(y_pre), static_cast<const T*>(gout),
            static_cast<const T*>(glast), gt, chunks, groups);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

}  // namespace ssmtune::cuda
