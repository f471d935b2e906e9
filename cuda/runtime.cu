// CUDA build of cuda/runtime.h and runtime_internal.h: per-device contexts (stream, caching allocator, pinned
// staging buffer, cuBLAS handle, cuFFT plans), the engine's device backend, checked errors.
//
// Copies between host and device go through a pinned staging buffer in pieces of at most 64 MiB: the host side
// is a memcpy, the device side a cudaMemcpyAsync on the device's stream, then a wait (the buffer is reused and the
// host must see the data). Device-to-device copies are queued on the stream without waiting. Contexts are created
// on first use and never destroyed (tensors freed during static destruction still find their allocator).
// Not here: peer copies between two GPUs (a copy involves one GPU and the host, or one GPU).
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "cuda/runtime.h"
#include "cuda/runtime_internal.h"
#include "engine/device.h"

namespace ssmtune::cuda {

const char* hint_for(cudaError_t status) {
    switch (status) {
        case cudaErrorMemoryAllocation: return "the GPU is out of memory; use a smaller batch or sequence length";
        case cudaErrorNoDevice:
        case cudaErrorInsufficientDriver: return "no usable GPU or driver; check nvidia-smi, or keep tensors on the CPU";
        case cudaErrorInvalidConfiguration: return "a kernel launch shape is invalid (an internal bug: please report it)";
        case cudaErrorIllegalAddress: return "a kernel read or wrote out of bounds (an internal bug: please report it)";
        default: return "check that the GPU is visible (nvidia-smi) and has free memory";
    }
}

namespace {

constexpr size_t kStagingBytes = size_t(64) << 20;

struct Context {
    int device = 0;
    std::mutex mu;  // guards the lazily created members and the staging buffer
    cudaStream_t stream = nullptr;
    cublasHandle_t blas = nullptr;
    void* staging = nullptr;
    size_t staging_bytes = 0;
    std::map<std::tuple<int, int, bool, bool>, cufftHandle> fft_plans;
    std::unique_ptr<CachingAllocator> allocator;
};

void* raw_device_alloc(size_t nbytes, void* context) {
    auto* ctx = static_cast<Context*>(context);
    void* p = nullptr;
    if (cudaSetDevice(ctx->device) != cudaSuccess || cudaMalloc(&p, nbytes) != cudaSuccess) {
        cudaGetLastError();  // clear the error: the allocator retries after emptying its cache, then reports
        return nullptr;
    }
    return p;
}

void raw_device_free(void* p, void* context) {
    auto* ctx = static_cast<Context*>(context);
    cudaSetDevice(ctx->device);
    cudaFree(p);  // synchronises with the device, so no queued kernel still uses the block
}

Context& context(int device) {
    // Leaked on purpose (see above): tensors freed during static destruction still find the mutex and contexts.
    static std::mutex* mu = new std::mutex();
    static std::vector<Context*>* contexts = new std::vector<Context*>();
    static const int n = device_count();  // asked once, not on every allocation
    std::lock_guard<std::mutex> lock(*mu);
    SSMTUNE_CHECK(device >= 0 && device < n, "cuda:", device, " does not exist: ", n, " CUDA device(s) visible; fix: "
                  "use an index below ", n, " or check CUDA_VISIBLE_DEVICES");
    if (contexts->empty()) contexts->assign(size_t(n), nullptr);
    Context*& c = (*contexts)[size_t(device)];
    if (c == nullptr) {
        c = new Context();
        c->device = device;
        c->allocator = std::make_unique<CachingAllocator>(raw_device_alloc, raw_device_free, c,
                                                          "cuda:" + std::to_string(device));
    }
    return *c;
}

void* backend_allocate(size_t nbytes, int device) { return context(device).allocator->allocate(nbytes); }

void backend_release(void* p, size_t, int device) {
    if (p) context(device).allocator->release(p);
}

// kind: 0 host->device, 1 device->host, 2 device->device (see engine/device.h).
void backend_copy(void* dst, const void* src, size_t nbytes, int kind, int device) {
    if (nbytes == 0) return;
    Context& ctx = context(device);
    cudaStream_t s = stream(device);
    if (kind == 2) {
        SSMTUNE_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, s));
        return;
    }
    std::lock_guard<std::mutex> lock(ctx.mu);
    if (ctx.staging == nullptr) {
        ctx.staging_bytes = kStagingBytes;
        SSMTUNE_CUDA_CHECK(cudaMallocHost(&ctx.staging, ctx.staging_bytes));
    }
    for (size_t done = 0; done < nbytes; done += ctx.staging_bytes) {
        const size_t piece = std::min(ctx.staging_bytes, nbytes - done);
        if (kind == 0) {
            std::memcpy(ctx.staging, static_cast<const char*>(src) + done, piece);
            SSMTUNE_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst) + done, ctx.staging, piece,
                                               cudaMemcpyHostToDevice, s));
            SSMTUNE_CUDA_CHECK(cudaStreamSynchronize(s));
        } else {
            SSMTUNE_CUDA_CHECK(cudaMemcpyAsync(ctx.staging, static_cast<const char*>(src) + done, piece,
                                               cudaMemcpyDeviceToHost, s));
            SSMTUNE_CUDA_CHECK(cudaStreamSynchronize(s));
            std::memcpy(static_cast<char*>(dst) + done, ctx.staging, piece);
        }
    }
}

}  // namespace

cudaStream_t stream(int device) {
    Context& ctx = context(device);
    SSMTUNE_CUDA_CHECK(cudaSetDevice(device));
    std::lock_guard<std::mutex> lock(ctx.mu);
    if (ctx.stream == nullptr) SSMTUNE_CUDA_CHECK(cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking));
    return ctx.stream;
}

cublasHandle_t cublas(int device) {
    cudaStream_t s = stream(device);
    Context& ctx = context(device);
    std::lock_guard<std::mutex> lock(ctx.mu);
    if (ctx.blas == nullptr) {
        SSMTUNE_CUBLAS_CHECK(lib::cublasCreate(&ctx.blas));
        SSMTUNE_CUBLAS_CHECK(lib::cublasSetStream(ctx.blas, s));
        SSMTUNE_CUBLAS_CHECK(lib::cublasSetMathMode(ctx.blas, CUBLAS_DEFAULT_MATH));  // no TF32: results track the CPU
    }
    return ctx.blas;
}

cufftHandle fft_plan(int device, int n, int batch, bool inverse, bool f64) {
    cudaStream_t s = stream(device);
    Context& ctx = context(device);
    std::lock_guard<std::mutex> lock(ctx.mu);
    const auto key = std::make_tuple(n, batch, inverse, f64);
    auto it = ctx.fft_plans.find(key);
    if (it != ctx.fft_plans.end()) return it->second;
    cufftHandle plan;
    const cufftType type = f64 ? (inverse ? CUFFT_Z2D : CUFFT_D2Z) : (inverse ? CUFFT_C2R : CUFFT_R2C);
    SSMTUNE_CUFFT_CHECK(lib::cufftPlan1d(&plan, n, type, batch));
    SSMTUNE_CUFFT_CHECK(lib::cufftSetStream(plan, s));
    ctx.fft_plans.emplace(key, plan);
    return plan;
}

bool built_with_cuda() { return true; }

int device_count() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no driver" error
        return 0;
    }
    return n;
}

bool available() {
    static const bool ok = [] {
        if (device_count() <= 0) return false;
        DeviceBackend backend;
        backend.allocate = backend_allocate;
        backend.release = backend_release;
        backend.copy = backend_copy;
        register_device_backend(DeviceType::CUDA, backend);
        return true;
    }();
    return ok;
}

std::string device_name(int index) {
    cudaDeviceProp prop;
    if (!available() || cudaGetDeviceProperties(&prop, index) != cudaSuccess) return "none";
    return prop.name;
}

double peak_bandwidth_gbs(int index) {
    if (!available()) return 0.0;
    int clock_khz = 0, bus_bits = 0;
    SSMTUNE_CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, index));
    SSMTUNE_CUDA_CHECK(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, index));
    return 2.0 * double(clock_khz) * 1e3 * double(bus_bits) / 8.0 / 1e9;  // double data rate
}

namespace {
Context& checked_context(int index) {
    SSMTUNE_CHECK(available(), "no usable CUDA GPU (no driver or no device visible); fix: run on a machine with an "
                               "NVIDIA GPU, or keep tensors on Device::cpu()");
    return context(index);
}
}  // namespace

AllocatorStats memory_stats(int index) { return checked_context(index).allocator->stats(); }

void empty_cache(int index) {
    synchronize(index);
    checked_context(index).allocator->empty_cache();
}

void reset_peak_memory(int index) { checked_context(index).allocator->reset_peak(); }

void synchronize(int index) {
    checked_context(index);
    SSMTUNE_CUDA_CHECK(cudaStreamSynchronize(stream(index)));
}

}  // namespace ssmtune::cuda
