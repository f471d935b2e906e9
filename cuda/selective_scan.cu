// Mamba's selective scan on the GPU (cuda/kernels.h): forward and backward as block-level parallel scans.
//
//   h_t = exp(Δ_t A) h_{t−1} + Δ_t B_t u_t  is the inclusive scan of pairs (a_t, b_t) under ops/scan_combine.h's
//   operator; y_t = C_t·(h_t + h′) + D u_t + y′; out = y · SiLU(z); Δ = softplus(δ + bias) (threshold 20) or δ + bias.
// Forward: one block of 128 threads per (b, e); a chunk of 512 steps is 4 consecutive steps per thread. For each
// state n: each thread scans its 4 pairs, a warp-shuffle + shared-memory block scan gives every thread the
// combination of the pairs before it, the state carried from the previous chunk is applied, and y accumulates
// C_t (h_t + h′) in registers over n. The state after every chunk is saved ([B, E, chunks, N], not B·E·L·N).
// Backward: one block per (b, group of 32 channels); chunks right to left and, within a chunk, the group's channels
// in order (each channel's adjoint carry in shared memory). Per channel, chunk and state: the forward scan is
// recomputed from the saved state, then the adjoint gh_t = C_t gy_t + a_{t+1} gh_{t+1} runs as a reverse block scan
// of the pairs (a_{t+1}, C_t gy_t) (a_L := 1, carry-in = the last-state gradient), the algorithm of
// chunked_scan_reverse in ops/scan_combine.h. dB and dC: each thread owns its steps, so the group's channels add into
// the group's partial [B, groups, N, L] in order (the first channel writes it); chunk-outer order keeps the chunk's
// [N, 512] slice of it in cache while the 32 channels add to it. The caller sums the groups in order. dA, dh′, dD,
// dy′, dbias: per chunk a fixed warp-shuffle tree and the warps in order, added over the chunks right to left into
// one value per (b, e); the caller sums over b in order.
// No float atomics anywhere, so results are the same run to run. Mirrors ops/selective_scan.cpp (the reference).
// Not here: complex A, grouped B/C, fused conv/projections, state sizes above 64.
#include "cuda/block_scan.cuh"

namespace ssmtune::cuda {

namespace {

using namespace block_scan;
using ops::ScanPair;
using ops::scan_combine;
using ops::scan_identity;

template <class T>
struct Inputs {  // typed views of SelectiveScanParams
    const T *u, *delta, *A, *B, *C, *D, *z, *bias, *h0, *hoff, *yoff;
    int64_t batch, E, N, L;
    bool softplus, h0_batched;
};

template <class T>
Inputs<T> typed(const SelectiveScanParams& p) {
    return {static_cast<const T*>(p.u), static_cast<const T*>(p.delta), static_cast<const T*>(p.A),
            static_cast<const T*>(p.B), static_cast<const T*>(p.C), static_cast<const T*>(p.D),
            static_cast<const T*>(p.z), static_cast<const T*>(p.delta_bias), static_cast<const T*>(p.h0),
            static_cast<const T*>(p.state_offset), static_cast<const T*>(p.output_offset), p.batch, p.E, p.N, p.L,
            p.softplus, p.h0_batched};
}

template <class T>
__device__ inline T delta_at(const Inputs<T>& in, int64_t lane_base, int64_t e, int64_t t) {
    const T x = in.delta[lane_base + t] + (in.bias ? in.bias[e] : T(0));
    return in.softplus ? softplus20(x) : x;
}

template <class T>
__device__ inline T initial_state(const Inputs<T>& in, int64_t b, int64_t e, int64_t n) {
    return in.h0 ? in.h0[((in.h0_batched ? b * in.E : 0) + e) * in.N + n] : T(0);
}

template <class T>
__global__ void __launch_bounds__(kScanThreads) scan_forward_kernel(Inputs<T> in, T* out, T* y_pre, T* last,
                                                                    T* chunk_states, int64_t chunks) {
    __shared__ T carry[kScanMaxStates];
    __shared__ ScanPair<T> warp_totals[kWarps];
    const int64_t e = blockIdx.x, b = blockIdx.y, N = in.N, L = in.L;
    const int64_t lane_base = (b * in.E + e) * L;
    for (int64_t n = threadIdx.x; n < N; n += kScanThreads) carry[n] = initial_state(in, b, e, n);
    __syncthreads();
    for (int64_t c = 0; c < chunks; ++c) {
        const int64_t t0 = c * kScanChunk + int64_t(threadIdx.x) * kScanItems;
        T dt[kScanItems], uu[kScanItems], y[kScanItems];
        for (int i = 0; i < kScanItems; ++i) {
            const bool valid = t0 + i < L;
            dt[i] = valid ? delta_at(in, lane_base, e, t0 + i) : T(0);
            uu[i] = valid ? in.u[lane_base + t0 + i] : T(0);
            y[i] = T(0);
        }
        for (int64_t n = 0; n < N; ++n) {
            const T An = in.A[e * N + n], hoff = in.hoff ? in.hoff[e * N + n] : T(0);
            const T* Bn = in.B + (b * N + n) * L;
            const T* Cn = in.C + (b * N + n) * L;
            ScanPair<T> local[kScanItems];
            for (int i = 0; i < kScanItems; ++i) {
                const bool valid = t0 + i < L;
                const ScanPair<T> step = valid ? ScanPair<T>{decay_exp(dt[i] * An), dt[i] * Bn[t0 + i] * uu[i]}
                                               : scan_identity<T>();
                local[i] = i == 0 ? step : scan_combine(local[i - 1], step);
            }
            ScanPair<T> total;
            const ScanPair<T> prefix = block_exclusive<T, false>(local[kScanItems - 1], warp_totals, total);
            const T h_in = carry[n];
            for (int i = 0; i < kScanItems; ++i) {
                if (t0 + i >= L) continue;
                const ScanPair<T> upto = scan_combine(prefix, local[i]);
                y[i] += Cn[t0 + i] * (upto.a * h_in + upto.b + hoff);
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
            if (in.D) yv += in.D[e] * uu[i];
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
struct Grads {  // typed views of SelectiveScanGrads
    T *du, *ddelta, *dz, *dB_part, *dC_part, *dA_part, *dhoff_part, *dh0_part, *dD_part, *dbias_part, *dyoff_part;
};

template <class T>
__global__ void __launch_bounds__(kScanThreads, kScanBackwardBlocksPerSM<T>)
    scan_backward_kernel(Inputs<T> in, const T* chunk_states, const T* y_pre, const T* gout, const T* glast,
                         Grads<T> g, int64_t chunks, int64_t groups) {
    __shared__ T carry_back[kScanGroupChannels * kScanMaxStates];  // per channel: the adjoint at the first step of
                                                                    // the chunk to the right
    __shared__ T a_chunk[kScanChunk];  // this chunk's decays for the current channel and state
    __shared__ T h_chunk[kScanChunk];  // this chunk's recomputed states for the current channel and state
    __shared__ ScanPair<T> warp_totals[kWarps];
    __shared__ T state_sums[2][kScanMaxStates][kWarps];  // per-warp sums of this chunk's dA and dh′ terms
    __shared__ T channel_sums[3][kWarps];                // per-warp sums of this chunk's dD, dy′ and dbias terms
    const int64_t group = blockIdx.x, b = blockIdx.y, N = in.N, L = in.L, E = in.E;
    const auto [e_begin, e_end] = channel_group(group, groups, E);
    const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;
    T* dB_group = g.dB_part + (b * groups + group) * N * L;
    T* dC_group = g.dC_part + (b * groups + group) * N * L;
    load_carries(carry_back, glast ? glast + (b * E + e_begin) * N : glast, (e_end - e_begin) * N);
    // Chunks right to left, and within a chunk the group's channels in order, so the group's dB and dC partials of
    // one chunk ([N, 512] each) stay in cache while every channel adds to them; the first channel writes them.
    for (int64_t c = chunks - 1; c >= 0; --c) {
        const auto [start, t0, len, has_next, first_chunk] = chunk_at(c, chunks, L);
        for (int64_t e = e_begin; e < e_end; ++e) {
            const int64_t lane_base = (b * E + e) * L;
            const bool first_channel = e == e_begin;
            T* carry = carry_back + (e - e_begin) * N;
            const T dt_next = has_next ? delta_at(in, lane_base, e, start + kScanChunk) : T(0);
            T dt[kScanItems], uu[kScanItems], gy[kScanItems], slope[kScanItems], du[kScanItems], gdt[kScanItems];
            T dD_acc = T(0), dyoff_acc = T(0), dbias_acc = T(0);
            for (int i = 0; i < kScanItems; ++i) {
                const int64_t t = t0 + i;
                du[i] = gdt[i] = T(0);
                if (t >= L) {
                    dt[i] = uu[i] = gy[i] = slope[i] = T(0);
                    continue;
                }
                const T x = in.delta[lane_base + t] + (in.bias ? in.bias[e] : T(0));
                dt[i] = in.softplus ? softplus20(x) : x;
                slope[i] = in.softplus ? (x > T(20) ? T(1) : sigmoid_dev(x)) : T(1);
                uu[i] = in.u[lane_base + t];
                const T go = gout[lane_base + t];
                if (in.z) {  // out = y · SiLU(z): gy = go · SiLU(z), gz = go · y · SiLU'(z)
                    const T zz = in.z[lane_base + t], s = sigmoid_dev(zz);
                    gy[i] = go * zz * s;
                    if (g.dz) g.dz[lane_base + t] = go * y_pre[lane_base + t] * s * (T(1) + zz * (T(1) - s));
                } else {
                    gy[i] = go;
                }
                dD_acc += gy[i] * uu[i];
                dyoff_acc += gy[i];
            }
            for (int64_t n = 0; n < N; ++n) {
                const T An = in.A[e * N + n], hoff = in.hoff ? in.hoff[e * N + n] : T(0);
                const T* Bn = in.B + (b * N + n) * L;
                const T* Cn = in.C + (b * N + n) * L;
                const T h_in = c == 0 ? initial_state(in, b, e, n) : chunk_states[((b * E + e) * chunks + c - 1) * N + n];
                // 1. The chunk's states, recomputed: forward block scan from h_in.
                ScanPair<T> local[kScanItems];
                T a[kScanItems];
                for (int i = 0; i < kScanItems; ++i) {
                    const bool valid = t0 + i < L;
                    a[i] = valid ? decay_exp(dt[i] * An) : T(1);
                    const ScanPair<T> step = valid ? ScanPair<T>{a[i], dt[i] * Bn[t0 + i] * uu[i]} : scan_identity<T>();
                    local[i] = i == 0 ? step : scan_combine(local[i - 1], step);
                }
                ScanPair<T> total;
                ScanPair<T> prefix = block_exclusive<T, false>(local[kScanItems - 1], warp_totals, total);
                T h[kScanItems];
                for (int i = 0; i < kScanItems; ++i) {
                    const ScanPair<T> upto = scan_combine(prefix, local[i]);
                    h[i] = upto.a * h_in + upto.b;
                    a_chunk[tid * kScanItems + i] = a[i];
                    h_chunk[tid * kScanItems + i] = h[i];
                }
                __syncthreads();
                // 2. The adjoint: reverse block scan of (a_{t+1}, C_t gy_t), carried in from the chunk to the right.
                ScanPair<T> rlocal[kScanItems];
                for (int i = kScanItems - 1; i >= 0; --i) {
                    const int64_t k = int64_t(tid) * kScanItems + i;  // index in the chunk
                    ScanPair<T> step = scan_identity<T>();
                    if (k < len) {
                        const T a_next = k + 1 < len ? a_chunk[k + 1] : (has_next ? decay_exp(dt_next * An) : T(1));
                        step = ScanPair<T>{a_next, Cn[t0 + i] * gy[i]};
                    }
                    rlocal[i] = i == kScanItems - 1 ? step : scan_combine(rlocal[i + 1], step);
                }
                prefix = block_exclusive<T, true>(rlocal[0], warp_totals, total);
                const T carry_in = carry[n];
                T dA_n = T(0), dhoff_n = T(0);
                for (int i = 0; i < kScanItems; ++i) {
                    const int64_t k = int64_t(tid) * kScanItems + i, t = t0 + i;
                    if (k >= len) continue;
                    const ScanPair<T> from_right = scan_combine(prefix, rlocal[i]);
                    const T gh = from_right.a * carry_in + from_right.b;  // ∂L/∂h_t
                    const T h_prev = k == 0 ? h_in : h_chunk[k - 1];
                    const T ga = gh * h_prev;  // ∂L/∂a_t
                    gdt[i] += ga * a[i] * An + gh * Bn[t] * uu[i];
                    dA_n += ga * a[i] * dt[i];
                    du[i] += gh * dt[i] * Bn[t];
                    const T dB_t = gh * dt[i] * uu[i], dC_t = gy[i] * (h[i] + hoff);
                    dB_group[n * L + t] = first_channel ? dB_t : dB_group[n * L + t] + dB_t;
                    dC_group[n * L + t] = first_channel ? dC_t : dC_group[n * L + t] + dC_t;
                    dhoff_n += gy[i] * Cn[t];
                }
                dA_n = warp_sum(dA_n);
                dhoff_n = warp_sum(dhoff_n);
                if (lane == 0) state_sums[0][n][warp] = dA_n, state_sums[1][n][warp] = dhoff_n;
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
                g.du[lane_base + t] = du[i] + gy[i] * (in.D ? in.D[e] : T(0));
                const T gd = gdt[i] * slope[i];
                g.ddelta[lane_base + t] = gd;
                dbias_acc += gd;
            }
            // Per-(b, e) sums over time: per chunk, a fixed warp tree and the warps in order; over chunks, right to
            // left (each state's sum by thread n, the channel's by threads 0-2). No atomics.
            add_channel_sums(dD_acc, dyoff_acc, dbias_acc, channel_sums, g.dD_part + b * E + e, g.dyoff_part + b * E + e,
                             g.dbias_part + b * E + e, first_chunk);
            if (tid < N) {
                add_chunk_sum(g.dA_part + (b * E + e) * N + tid, state_sums[0][tid], first_chunk);
                if (g.dhoff_part) add_chunk_sum(g.dhoff_part + (b * E + e) * N + tid, state_sums[1][tid], first_chunk);
            }
            // state_sums and channel_sums are next written after the next channel's first block scan (a barrier).
        }
    }
}

template <class T>
__global__ void scan_sequential_kernel(Inputs<T> in, T* out, T* last) {
    const int64_t N = in.N, L = in.L;
    SSMTUNE_GRID_LOOP(lane, in.batch * in.E) {
        const int64_t b = lane / in.E, e = lane % in.E, base = lane * L;
        T h[kScanMaxStates];
        for (int64_t n = 0; n < N; ++n) h[n] = initial_state(in, b, e, n);
        for (int64_t t = 0; t < L; ++t) {
            const T dt = delta_at(in, base, e, t), uu = in.u[base + t];
            T y = T(0);
            for (int64_t n = 0; n < N; ++n) {
                h[n] = decay_exp(dt * in.A[e * N + n]) * h[n] + dt * in.B[(b * N + n) * L + t] * uu;
                y += in.C[(b * N + n) * L + t] * (h[n] + (in.hoff ? in.hoff[e * N + n] : T(0)));
            }
            if (in.D) y += in.D[e] * uu;
            if (in.yoff) y += in.yoff[e];
            if (in.z) y *= in.z[base + t] * sigmoid_dev(in.z[base + t]);
            out[base + t] = y;
        }
        if (last)
            for (int64_t n = 0; n < N; ++n) last[lane * N + n] = h[n];
    }
}

// The naive per-state baseline, first half: one thread per (b, e, n) runs its state through time and writes the
// state's term C_t (h_t + h′) of y_t to terms [B, E, N, L].
template <class T>
__global__ void scan_per_state_kernel(Inputs<T> in, T* terms, T* last) {
    const int64_t N = in.N, L = in.L;
    SSMTUNE_GRID_LOOP(lane, in.batch * in.E * N) {
        const int64_t channel = lane / N, n = lane % N, b = channel / in.E, e = channel % in.E, base = channel * L;
        const T a = in.A[e * N + n], hoff = in.hoff ? in.hoff[e * N + n] : T(0);
        T h = initial_state(in, b, e, n);
        for (int64_t t = 0; t < L; ++t) {
            const T dt = delta_at(in, base, e, t);
            h = decay_exp(dt * a) * h + dt * in.B[(b * N + n) * L + t] * in.u[base + t];
            terms[lane * L + t] = in.C[(b * N + n) * L + t] * (h + hoff);
        }
        if (last) last[lane] = h;
    }
}

// Second half: one thread per (b, e, t) sums the N terms in order, then adds D u and y′ and applies the gate.
template <class T>
__global__ void sum_state_terms_kernel(Inputs<T> in, const T* terms, T* out) {
    const int64_t N = in.N, L = in.L;
    SSMTUNE_GRID_LOOP(i, in.batch * in.E * L) {
        const int64_t channel = i / L, t = i % L, e = channel % in.E;
        T y = T(0);
        for (int64_t n = 0; n < N; ++n) y += terms[(channel * N + n) * L + t];
        const T uu = in.u[i];
        if (in.D) y += in.D[e] * uu;
        if (in.yoff) y += in.yoff[e];
        if (in.z) y *= in.z[i] * sigmoid_dev(in.z[i]);
        out[i] = y;
    }
}

void check_params(const SelectiveScanParams& p) {
    SSMTUNE_CHECK(p.N >= 1 && p.N <= kScanMaxStates, "selective_scan on CUDA: state size N = ", p.N, " outside [1, ",
                  kScanMaxStates, "]; fix: run this scan on the CPU");
    SSMTUNE_CHECK(p.E <= 2147483647 && p.batch <= 65535, "selective_scan on CUDA: B = ", p.batch, ", E = ", p.E,
                  " exceed the launch grid (E < 2^31, B < 65536); fix: split the batch");
}

}  // namespace

void selective_scan_forward(int device, DType dtype, const SelectiveScanParams& p, void* out, void* y_pre, void* last,
                            void* chunk_states) {
    check_params(p);
    if (p.batch * p.E * p.L == 0) return;
    const int64_t chunks = (p.L + kScanChunk - 1) / kScanChunk;
    cudaStream_t s = stream(device);
    const dim3 grid(unsigned(p.E), unsigned(p.batch));
    dispatch_f32_f64(dtype, "selective_scan_forward", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(grid, kScanThreads, s, scan_forward_kernel<T>)(
            typed<T>(p), static_cast<T*>(out), static_cast<T*>(y_pre), static_cast<T*>(last),
            static_cast<T*>(chunk_states), chunks);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void selective_scan_forward_sequential(int device, DType dtype, const SelectiveScanParams& p, void* out, void* last) {
    check_params(p);
    if (p.batch * p.E * p.L == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "selective_scan_forward_sequential", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(unsigned(launch_blocks(p.batch * p.E, 64)), 64, s, scan_sequential_kernel<T>)(
            typed<T>(p), static_cast<T*>(out), static_cast<T*>(last));
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void selective_scan_forward_per_state(int device, DType dtype, const SelectiveScanParams& p, void* out, void* last,
                                      void* state_terms) {
    check_params(p);
    if (p.batch * p.E * p.L == 0) return;
    cudaStream_t s = stream(device);
    dispatch_f32_f64(dtype, "selective_scan_forward_per_state", [&](auto tag) {
        using T = decltype(tag);
        SSMTUNE_LAUNCH(unsigned(launch_blocks(p.batch * p.E * p.N, 64)), 64, s, scan_per_state_kernel<T>)(
            typed<T>(p), static_cast<T*>(state_terms), static_cast<T*>(last));
        SSMTUNE_LAUNCH(grid_for(p.batch * p.E * p.L), kThreads, s, sum_state_terms_kernel<T>)(
            typed<T>(p), static_cast<const T*>(state_terms), static_cast<T*>(out));
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

void selective_scan_backward(int device, DType dtype, const SelectiveScanParams& p, const void* chunk_states,
                             const void* y_pre, const void* gout, const void* glast, const SelectiveScanGrads& g) {
    check_params(p);
    if (p.batch * p.E * p.L == 0) return;
    const int64_t chunks = (p.L + kScanChunk - 1) / kScanChunk, groups = scan_backward_groups(p.E);
    cudaStream_t s = stream(device);
    const dim3 grid(unsigned(groups), unsigned(p.batch));
    dispatch_f32_f64(dtype, "selective_scan_backward", [&](auto tag) {
        using T = decltype(tag);
        const Grads<T> gt{static_cast<T*>(g.du), static_cast<T*>(g.ddelta), static_cast<T*>(g.dz),
                          static_cast<T*>(g.dB_part), static_cast<T*>(g.dC_part), static_cast<T*>(g.dA_part),
                          static_cast<T*>(g.dstate_offset_part), static_cast<T*>(g.dh0_part),
                          static_cast<T*>(g.dD_part), static_cast<T*>(g.ddelta_bias_part),
                          static_cast<T*>(g.doutput_offset_part)};
        SSMTUNE_LAUNCH(grid, kScanThreads, s, scan_backward_kernel<T>)(
            typed<T>(p), static_cast<const T*>(chunk_states), static_cast<const T*>(y_pre), static_cast<const T*>(gout),
            static_cast<const T*>(glast), gt, chunks, groups);
    });
    SSMTUNE_CUDA_LAUNCH_CHECK();
}

}  // namespace ssmtune::cuda
