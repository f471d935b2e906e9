// The host emulation's machinery (cuda/emulation/host_simt.h): the block's threads as fibers (own stacks) on
// the calling thread, each handing over to the next at every __syncthreads and warp shuffle; barriers that release
// when every live thread of the block (or lane of the warp) waits; and the CUDA runtime, cuFFT and cuBLAS calls the
// .cu files make, on one emulated device whose memory is host memory (direct DFTs, loop GEMMs). Under
// AddressSanitizer every switch is announced (__sanitizer_*_switch_fiber). Switching: a few lines of assembly on
// x86-64 Linux, POSIX ucontext elsewhere. The entry points of cuda/runtime_internal.h come from cuda/runtime.cu (SSMTUNE_CUDA_EMULATION=ON: the
// whole backend) or cuda/emulation/kernel_runtime.cpp (the kernel tests).
#if !(defined(__x86_64__) && defined(__linux__))
#include <ucontext.h>
#endif

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <vector>

#include "cuda/runtime_internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define SSMTUNE_SIMT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SSMTUNE_SIMT_ASAN 1
#endif
#endif
#ifdef SSMTUNE_SIMT_ASAN
#include <pthread.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace ssmtune_simt {

namespace {

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "ssmtune CUDA emulation: %s\n", what);
    std::fflush(stderr);
    std::abort();
}

constexpr size_t kFiberStackBytes = 256 * 1024;  // committed only as far as a kernel's frames reach

// ---- switching between fibers ----
// x86-64 (System V): a hand-written switch that saves the callee-saved registers, MXCSR and the x87 control word on
// the old stack and loads the new stack pointer — no system call, unlike swapcontext (which saves the signal mask).
// Elsewhere: POSIX ucontext.
#if defined(__x86_64__) && defined(__linux__)
extern "C" void ssmtune_simt_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .globl ssmtune_simt_switch
    .type ssmtune_simt_switch, @function
ssmtune_simt_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size ssmtune_simt_switch, .-ssmtune_simt_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");

struct Context {
    void* sp = nullptr;
};
void (*g_entry)() = nullptr;
[[noreturn]] void context_trampoline() {
    g_entry();
    die("a fiber's entry returned");
}
// A context that starts entry() on [stack, stack + bytes) when first switched to.
void context_start(Context& c, char* stack, size_t bytes, void (*entry)()) {
    g_entry = entry;
    uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + bytes) & ~uintptr_t(15);
    auto* words = reinterpret_cast<uint64_t*>(top);
    // From the saved stack pointer up: MXCSR + x87 control word, r15, r14, r13, r12, rbx, rbp, the return address
    // (the trampoline), and one pad word so the trampoline starts as if called (rsp = 8 mod 16).
    words -= 2;  // pad + the return address
    words[0] = reinterpret_cast<uint64_t>(&context_trampoline);
    words[1] = 0;
    words -= 6;  // rbp, rbx, r12 .. r15
    for (int i = 0; i < 6; ++i) words[i] = 0;
    words -= 1;
    words[0] = 0x1F80u | (uint64_t(0x037Fu) << 32);  // default MXCSR; default x87 control word
    c.sp = words;
}
void context_switch(Context& from, Context& to) { ssmtune_simt_switch(&from.sp, to.sp); }
#else
struct Context {
    ucontext_t uc;
};
void context_start(Context& c, char* stack, size_t bytes, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = bytes;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
void context_switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

enum class Wait { none, block, warp };

struct Fiber {  // one CUDA thread
    Context context;
    char* stack = nullptr;
    dim3 index;
    Wait wait = Wait::none;
    bool done = false;
    bool synced = false;    // reached a barrier in this block
    unsigned shuffles = 0;  // shuffles done in this block: shuffle k uses buffer k % 2
    void* fake_stack = nullptr;
};

struct WarpBuffer {
    unsigned char value[2][kWarpSize][8];  // double-buffered, so one barrier per shuffle suffices
};

struct Team {  // the threads of one launch, reused block after block
    std::vector<Fiber> fibers;
    std::vector<WarpBuffer> warps;
    Context scheduler;
    int current = -1;
    bool plain = false;  // the launch's threads run as plain calls (its thread 0 met no barrier)
    size_t prepared = 0;  // fibers [0, prepared) are set up for this block
    const std::function<void()>* body = nullptr;
    const void* scheduler_stack = nullptr;  // the calling thread's stack, for the sanitizer's switch notes
    size_t scheduler_stack_bytes = 0;
    void* scheduler_fake_stack = nullptr;
};

thread_local Team* t_team = nullptr;
thread_local std::vector<std::unique_ptr<char[]>> t_stacks;  // fiber stacks, kept for the next launch

Fiber& current_fiber() {
    if (!t_team || t_team->current < 0) die("__syncthreads or a warp shuffle outside an emulated kernel");
    if (t_team->plain)
        die("a barrier in a launch whose thread 0 ran to its end without one (so its threads run as plain calls): "
            "a __syncthreads or shuffle not every thread reaches");
    Fiber& f = t_team->fibers[size_t(t_team->current)];
    f.synced = true;
    return f;
}

void call_body(const Team& team) {
    try {
        (*team.body)();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ssmtune CUDA emulation: a kernel thread threw: %s\n", e.what());
        die("exceptions cannot leave a kernel");
    }
}

// SSMTUNE_EMULATION_SCHEDULE=reverse starts a whole run (e.g. the emulated GPU suite) in the reverse order.
Schedule initial_schedule() {
    const char* v = std::getenv("SSMTUNE_EMULATION_SCHEDULE");
    return v && std::strcmp(v, "reverse") == 0 ? Schedule::reverse : Schedule::forward;
}
Schedule g_schedule = initial_schedule();

// The round's order: position p is thread p (forward) or thread prepared − 1 − p (reverse); the map is its own
// inverse.
int thread_at(const Team& team, int position) {
    return g_schedule == Schedule::forward ? position : int(team.prepared) - 1 - position;
}

// The next fiber of this round: the first at a position after `from` that is neither done nor waiting (-1: none).
int next_runnable(const Team& team, int from) {
    for (int p = from; p < int(team.prepared); ++p) {
        const int t = thread_at(team, p);
        if (!team.fibers[size_t(t)].done && team.fibers[size_t(t)].wait == Wait::none) return t;
    }
    return -1;
}

// From a fiber that waits (or ended) straight to the round's next fiber, or to the scheduler when the round is
// over; returns when some switch resumes this fiber (never, once it is done).
void leave_fiber(Fiber& f) {
    Team& team = *t_team;
    const int next = next_runnable(team, thread_at(team, team.current) + 1);
    Context& target = next >= 0 ? team.fibers[size_t(next)].context : team.scheduler;
#ifdef SSMTUNE_SIMT_ASAN
    __sanitizer_start_switch_fiber(f.done ? nullptr : &f.fake_stack,
                                   next >= 0 ? team.fibers[size_t(next)].stack : team.scheduler_stack,
                                   next >= 0 ? kFiberStackBytes : team.scheduler_stack_bytes);
#endif
    team.current = next;
    if (next >= 0) threadIdx = team.fibers[size_t(next)].index;
    context_switch(f.context, target);
#ifdef SSMTUNE_SIMT_ASAN
    __sanitizer_finish_switch_fiber(f.fake_stack, nullptr, nullptr);
#endif
}

void fiber_entry() {
    Team& team = *t_team;
    Fiber& f = team.fibers[size_t(team.current)];
#ifdef SSMTUNE_SIMT_ASAN
    __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
    call_body(team);
    f.done = true;
    leave_fiber(f);
    die("a finished fiber was resumed");
}

// From the scheduler into fiber t; returns when the round is over.
void resume(Team& team, int t) {
    Fiber& f = team.fibers[size_t(t)];
    team.current = t;
    threadIdx = f.index;
#ifdef SSMTUNE_SIMT_ASAN
    __sanitizer_start_switch_fiber(&team.scheduler_fake_stack, f.stack, kFiberStackBytes);
#endif
    context_switch(team.scheduler, f.context);
#ifdef SSMTUNE_SIMT_ASAN
    __sanitizer_finish_switch_fiber(team.scheduler_fake_stack, nullptr, nullptr);
#endif
    team.current = -1;
}

// Releases the barriers every live waiter has reached; false when none could be released.
bool release_barriers(Team& team) {
    bool released = false;
    const int threads = int(team.fibers.size());
    int live = 0, at_block = 0;
    for (const Fiber& f : team.fibers) {
        live += !f.done;
        at_block += f.wait == Wait::block;
    }
    if (at_block > 0 && at_block == live) {
        for (Fiber& f : team.fibers) f.wait = Wait::none;
        return true;
    }
    for (int first = 0; first < threads; first += kWarpSize) {
        const int last = std::min(threads, first + kWarpSize);
        int warp_live = 0, at_warp = 0;
        for (int t = first; t < last; ++t) {
            warp_live += !team.fibers[size_t(t)].done;
            at_warp += team.fibers[size_t(t)].wait == Wait::warp;
        }
        if (at_warp > 0 && at_warp == warp_live) {
            for (int t = first; t < last; ++t) team.fibers[size_t(t)].wait = Wait::none;
            released = true;
        }
    }
    return released;
}

void prepare_fiber(Fiber& f) {
    f.wait = Wait::none;
    f.done = false;
    f.synced = false;
    f.shuffles = 0;
    f.fake_stack = nullptr;
    context_start(f.context, f.stack, kFiberStackBytes, fiber_entry);
}

// Threads first .. end of the block as plain calls, one after another.
void run_plain(Team& team, size_t first) {
    team.plain = true;
    for (size_t t = first; t < team.fibers.size(); ++t) {
        team.current = int(t);
        threadIdx = team.fibers[t].index;
        call_body(team);
    }
    team.current = -1;
}

enum class Mode { unknown, plain, fibers };

// One block. The launch's first thread runs as a fiber; if it ends without meeting a barrier, every other thread
// of the launch runs as a plain call (elementwise kernels cost no switches). Otherwise every fiber runs to its
// next barrier (or its end), in thread order, then the barriers all live waiters reached release, and so on.
void run_block(Team& team, Mode& mode) {
    team.prepared = 0;
    if (mode == Mode::plain) return run_plain(team, 0);
    if (mode == Mode::unknown) {
        prepare_fiber(team.fibers[0]);
        team.prepared = 1;
        resume(team, 0);
        if (team.fibers[0].done && !team.fibers[0].synced) {
            mode = Mode::plain;
            return run_plain(team, 1);
        }
        mode = Mode::fibers;
    }
    for (size_t t = team.prepared; t < team.fibers.size(); ++t) prepare_fiber(team.fibers[t]);
    team.prepared = team.fibers.size();
    const auto live = [&team] {
        int n = 0;
        for (const Fiber& f : team.fibers) n += !f.done;
        return n;
    };
    while (live() > 0) {
        const int first = next_runnable(team, 0);
        const bool ran = first >= 0;
        if (ran) resume(team, first);  // the round: each runnable fiber hands over to the next
        if (live() > 0 && !release_barriers(team) && !ran)
            die("deadlock: a __syncthreads or warp shuffle that not every live thread of the block (or lane of the "
                "warp) reaches — a divergent barrier");
    }
}

}  // namespace

int lane_id() { return t_team ? t_team->current % kWarpSize : 0; }

void set_schedule(Schedule s) { g_schedule = s; }
Schedule schedule() { return g_schedule; }

void sync_block() {
    Fiber& f = current_fiber();
    f.wait = Wait::block;
    leave_fiber(f);
}

void warp_exchange(const void* mine, void* theirs, int source_lane, size_t bytes) {
    Fiber& f = current_fiber();
    if (bytes > 8) die("warp shuffle of a value wider than 8 bytes");
    const int t = t_team->current, first = t - t % kWarpSize;
    WarpBuffer& w = t_team->warps[size_t(t / kWarpSize)];
    const unsigned slot = f.shuffles++ % 2;
    std::memcpy(w.value[slot][t % kWarpSize], mine, bytes);
    f.wait = Wait::warp;
    leave_fiber(f);
    const size_t source = size_t(first + source_lane);
    if (source >= t_team->fibers.size() || t_team->fibers[source].done)
        die("warp shuffle from a lane that does not exist or has returned");
    std::memcpy(theirs, w.value[slot][source_lane], bytes);
}

void run_grid(dim3 grid, dim3 block, const std::function<void()>& body) {
    const int64_t threads = int64_t(block.x) * block.y * block.z;
    if (threads < 1 || threads > 1024) die("a block of more than 1024 (or no) threads");
    if (block.z > 64) die("a block with blockDim.z above 64");
    if (grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) die("a grid beyond 2^31 - 1 × 65535 × 65535 blocks");
    if (int64_t(grid.x) * grid.y * grid.z == 0) die("a launch with an empty grid (CUDA: invalid configuration)");
    if (t_team) die("a kernel launch from inside a kernel");
    Team team;
    team.body = &body;
    team.fibers.resize(size_t(threads));
    team.warps.resize(size_t((threads + kWarpSize - 1) / kWarpSize));
    while (t_stacks.size() < size_t(threads)) t_stacks.emplace_back(new char[kFiberStackBytes]);
    for (int64_t t = 0; t < threads; ++t) {
        Fiber& f = team.fibers[size_t(t)];
        f.stack = t_stacks[size_t(t)].get();
        f.index = dim3(unsigned(t) % block.x, (unsigned(t) / block.x) % block.y, unsigned(t) / (block.x * block.y));
    }
#ifdef SSMTUNE_SIMT_ASAN
    pthread_attr_t attr;  // the calling thread's stack, announced when a round hands back to the scheduler
    void* stack_low = nullptr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        pthread_attr_getstack(&attr, &stack_low, &team.scheduler_stack_bytes);
        pthread_attr_destroy(&attr);
    }
    team.scheduler_stack = stack_low;
#endif
    const dim3 saved_thread = threadIdx, saved_block = blockIdx, saved_dim = blockDim, saved_grid = gridDim;
    blockDim = block;
    gridDim = grid;
    t_team = &team;
    Mode mode = Mode::unknown;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                blockIdx = dim3(x, y, z);
                run_block(team, mode);
            }
    t_team = nullptr;
    threadIdx = saved_thread, blockIdx = saved_block, blockDim = saved_dim, gridDim = saved_grid;
}

// ---- the runtime: one device, host memory ----
namespace {
thread_local cudaError_t t_last_error = cudaSuccess;
cudaError_t fail(cudaError_t e) { return t_last_error = e; }

struct FftPlan {
    int n = 0, batch = 0;
    cufftType type = CUFFT_D2Z;
};
std::mutex g_plans_mutex;
std::vector<FftPlan> g_plans;

FftPlan plan_at(cufftHandle h) {
    std::lock_guard<std::mutex> lock(g_plans_mutex);
    if (h < 0 || size_t(h) >= g_plans.size()) die("unknown cuFFT plan");
    return g_plans[size_t(h)];
}
// cos and sin of 2π i / n for i < n (angles reduced exactly: (j·k) mod n).
void twiddles(int n, std::vector<double>& c, std::vector<double>& s) {
    c.resize(size_t(n));
    s.resize(size_t(n));
    const double two_pi = 6.283185307179586476925286766559;
    for (int i = 0; i < n; ++i) {
        c[size_t(i)] = std::cos(two_pi * i / n);
        s[size_t(i)] = std::sin(two_pi * i / n);
    }
}

// C[i, j] (column-major, ldc) = α Σ_p op(A)[i, p] op(B)[p, j] + β C[i, j]; C is not read when β = 0, as in cuBLAS,
// and arguments cuBLAS rejects are rejected.
template <class T>
cublasStatus_t gemm_strided_batched(cublasOperation_t op_a, cublasOperation_t op_b, int m, int n, int k, T alpha,
                                    const T* A, int lda, long long stride_a, const T* B, int ldb, long long stride_b,
                                    T beta, T* C, int ldc, long long stride_c, int batch) {
    // cuBLAS's argument rules: each leading dimension at least max(1, rows of the matrix as stored).
    const auto at_least_rows = [](int ld, int rows) { return ld >= (rows > 1 ? rows : 1); };
    if (m < 0 || n < 0 || k < 0 || batch < 0 || !at_least_rows(lda, op_a == CUBLAS_OP_N ? m : k) ||
        !at_least_rows(ldb, op_b == CUBLAS_OP_N ? k : n) || !at_least_rows(ldc, m))
        return CUBLAS_STATUS_INVALID_VALUE;
    for (int b = 0; b < batch; ++b) {
        const T* a = A + b * stride_a;
        const T* bb = B + b * stride_b;
        T* c = C + b * stride_c;
        for (int j = 0; j < n; ++j)
            for (int i = 0; i < m; ++i) {
                double acc = 0;
                for (int p = 0; p < k; ++p) {
                    const T av = op_a == CUBLAS_OP_N ? a[i + int64_t(p) * lda] : a[p + int64_t(i) * lda];
                    const T bv = op_b == CUBLAS_OP_N ? bb[p + int64_t(j) * ldb] : bb[j + int64_t(p) * ldb];
                    acc += double(av) * double(bv);
                }
                T& out = c[i + int64_t(j) * ldc];
                out = beta == T(0) ? T(double(alpha) * acc) : T(double(alpha) * acc + double(beta) * double(out));
            }
    }
    return CUBLAS_STATUS_SUCCESS;
}
}  // namespace

}  // namespace ssmtune_simt

using ssmtune_simt::fail;

cudaError_t cudaGetLastError() {
    const cudaError_t e = ssmtune_simt::t_last_error;
    ssmtune_simt::t_last_error = cudaSuccess;
    return e;
}
const char* cudaGetErrorName(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "cudaSuccess";
        case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
        case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
        default: return "cudaErrorInvalidValue";
    }
}
const char* cudaGetErrorString(cudaError_t e) { return cudaGetErrorName(e); }
cudaError_t cudaGetDeviceCount(int* count) {
    *count = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice); }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
    if (device != 0) return fail(cudaErrorInvalidDevice);
    std::snprintf(prop->name, sizeof(prop->name), "%s", "ssmtune host emulation (not a GPU)");
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
    if (device != 0) return fail(cudaErrorInvalidDevice);
    *value = attr == cudaDevAttrMemoryClockRate ? 1000000 : 64;  // nominal: 16 GB/s "peak"
    return cudaSuccess;
}
cudaError_t cudaMalloc(void** p, size_t bytes) {
    *p = std::malloc(bytes ? bytes : 1);
    if (!*p) return fail(cudaErrorMemoryAllocation);
    std::memset(*p, 0xFF, bytes);  // NaN in floats: reading memory nobody wrote shows up
    return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
    std::free(p);
    return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t bytes) { return cudaMalloc(p, bytes); }
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) { return cudaMalloc(p, bytes); }
cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return cudaFree(p); }
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t) {
    if (bytes) std::memmove(dst, src, bytes);
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
    *s = nullptr;  // one in-order queue: every launch runs to its end before the call returns
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

cufftResult cufftPlan1d(cufftHandle* plan, int n, cufftType type, int batch) {
    if (n < 1 || batch < 1) return CUFFT_INVALID_PLAN;
    std::lock_guard<std::mutex> lock(ssmtune_simt::g_plans_mutex);
    ssmtune_simt::g_plans.push_back(ssmtune_simt::FftPlan{n, batch, type});
    *plan = cufftHandle(ssmtune_simt::g_plans.size() - 1);
    return CUFFT_SUCCESS;
}
cufftResult cufftSetStream(cufftHandle, cudaStream_t) { return CUFFT_SUCCESS; }

// X[k] = Σ_j x[j] e^{−2πi jk/n}, k = 0 .. n/2, per row.
cufftResult cufftExecD2Z(cufftHandle plan, cufftDoubleReal* in, cufftDoubleComplex* out) {
    const ssmtune_simt::FftPlan p = ssmtune_simt::plan_at(plan);
    if (p.type != CUFFT_D2Z) return CUFFT_INVALID_TYPE;
    const int n = p.n, m = n / 2 + 1;
    std::vector<double> c, s;
    ssmtune_simt::twiddles(n, c, s);
    std::vector<cufftDoubleComplex> row(static_cast<size_t>(m));
    for (int r = 0; r < p.batch; ++r) {
        const double* x = in + int64_t(r) * n;
        for (int k = 0; k < m; ++k) {
            double re = 0, im = 0;
            for (int j = 0; j < n; ++j) {
                const size_t a = size_t((int64_t(j) * k) % n);
                re += x[j] * c[a];
                im -= x[j] * s[a];
            }
            row[size_t(k)] = {re, im};
        }
        std::memcpy(out + int64_t(r) * m, row.data(), sizeof(cufftDoubleComplex) * size_t(m));
    }
    return CUFFT_SUCCESS;
}

// x[j] = Σ_{k<n} X[k] e^{+2πi jk/n} with X[n−k] = conj(X[k]) (unnormalised); the imaginary parts of X[0] and, for
// even n, X[n/2] do not enter, as in cuFFT.
cufftResult cufftExecZ2D(cufftHandle plan, cufftDoubleComplex* in, cufftDoubleReal* out) {
    const ssmtune_simt::FftPlan p = ssmtune_simt::plan_at(plan);
    if (p.type != CUFFT_Z2D) return CUFFT_INVALID_TYPE;
    const int n = p.n, m = n / 2 + 1;
    std::vector<double> c, s;
    ssmtune_simt::twiddles(n, c, s);
    std::vector<double> row(static_cast<size_t>(n));
    for (int r = 0; r < p.batch; ++r) {
        const cufftDoubleComplex* X = in + int64_t(r) * m;
        for (int j = 0; j < n; ++j) {
            double v = X[0].x;
            if (n % 2 == 0 && n > 1) v += (j % 2 ? -1.0 : 1.0) * X[n / 2].x;
            for (int k = 1; k <= (n - 1) / 2; ++k) {
                const size_t a = size_t((int64_t(j) * k) % n);
                v += 2.0 * (X[k].x * c[a] - X[k].y * s[a]);
            }
            row[size_t(j)] = v;
        }
        std::memcpy(out + int64_t(r) * n, row.data(), sizeof(double) * size_t(n));
    }
    return CUFFT_SUCCESS;
}

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
    static int token;
    *handle = reinterpret_cast<cublasHandle_t>(&token);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t, cublasOperation_t op_a, cublasOperation_t op_b, int m, int n,
                                         int k, const float* alpha, const float* A, int lda, long long stride_a,
                                         const float* B, int ldb, long long stride_b, const float* beta, float* C,
                                         int ldc, long long stride_c, int batch) {
    return ssmtune_simt::gemm_strided_batched(op_a, op_b, m, n, k, *alpha, A, lda, stride_a, B, ldb, stride_b, *beta,
                                              C, ldc, stride_c, batch);
}
cublasStatus_t cublasDgemmStridedBatched(cublasHandle_t, cublasOperation_t op_a, cublasOperation_t op_b, int m, int n,
                                         int k, const double* alpha, const double* A, int lda, long long stride_a,
                                         const double* B, int ldb, long long stride_b, const double* beta, double* C,
                                         int ldc, long long stride_c, int batch) {
    return ssmtune_simt::gemm_strided_batched(op_a, op_b, m, n, k, *alpha, A, lda, stride_a, B, ldb, stride_b, *beta,
                                              C, ldc, stride_c, batch);
}
