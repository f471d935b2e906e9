// Storage allocation and the device-backend registry (see storage.h, device.h).
#include "engine/storage.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "cuda/runtime.h"
#include "engine/error.h"

// Under AddressSanitizer the bytes between a buffer's size and its 64-byte rounding are poisoned, so an op (or an
// emulated CUDA kernel, tests/emulation/) that reads or writes one element past a tensor's end is reported.
#if defined(__SANITIZE_ADDRESS__)
#define SSMTUNE_STORAGE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SSMTUNE_STORAGE_ASAN 1
#endif
#endif
#ifdef SSMTUNE_STORAGE_ASAN
#include <sanitizer/asan_interface.h>
#define SSMTUNE_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define SSMTUNE_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define SSMTUNE_POISON(p, n) ((void)(p), (void)(n))
#define SSMTUNE_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace ssmtune {

namespace {
DeviceBackend g_cuda_backend;
bool g_has_cuda_backend = false;
std::atomic<size_t> g_cpu_bytes{0};
std::atomic<size_t> g_cpu_peak{0};

// The CPU buffer cache (see storage.h): free lists of large buffers keyed by their rounded size. Leaked on purpose
// (never destroyed), so Storages that outlive static destruction can still return their buffers.
constexpr size_t kCacheMinBytes = size_t(256) << 10;
struct SizeClass {
    std::vector<void*> free;  // buffers of this rounded size, last freed at the back
    uint64_t last_use = 0;    // tick of the last request or release of this size
    uint64_t last_request = 0;  // tick of the last request of this size (served from the cache or not)
};
struct CpuCache {
    std::mutex mu;
    std::unordered_map<size_t, SizeClass> classes;
    size_t cached = 0;
    uint64_t tick = 0;
};
CpuCache& cpu_cache() {
    static CpuCache* cache = new CpuCache;
    return *cache;
}

// Bytes actually allocated for a request: 64-byte multiples, 4 KiB multiples for cached sizes.
size_t rounded_bytes(size_t nbytes) {
    const size_t r = (nbytes + 63) / 64 * 64;
    return r == 0 ? 64 : r >= kCacheMinBytes ? (r + 4095) / 4096 * 4096 : r;
}

void* cpu_allocate(size_t rounded) {
    if (rounded >= kCacheMinBytes) {
        CpuCache& c = cpu_cache();
        std::lock_guard<std::mutex> lock(c.mu);
        SizeClass& cls = c.classes[rounded];
        cls.last_use = cls.last_request = ++c.tick;
        if (!cls.free.empty()) {
            void* p = cls.free.back();
            cls.free.pop_back();
            c.cached -= rounded;
            return p;
        }
    }
    void* p = std::aligned_alloc(64, rounded);
    if (p == nullptr && cpu_cached_bytes() > 0) {  // memory is short: give the cache back and try once more
        cpu_empty_cache();
        p = std::aligned_alloc(64, rounded);
    }
    return p;
}

void cpu_release(void* p, size_t rounded) {
    if (rounded >= kCacheMinBytes) {
        CpuCache& c = cpu_cache();
        std::lock_guard<std::mutex> lock(c.mu);
        // Cache at most the peak in use. When full, cached buffers of a size left untouched since this size was
        // last requested make room, the size unused longest first: a shape that is gone (an earlier sequence
        // length, a finished phase) must not keep the current shapes' buffers out, or each step would pay the
        // kernel's page faults again. A size used since this size was last requested is not touched, so a steady
        // loop keeps nearly all its buffers (in the Mamba bench step one 8 MiB buffer per step still goes).
        const size_t budget = g_cpu_peak.load();
        const uint64_t since = c.classes[rounded].last_request;
        while (c.cached + rounded > budget) {
            SizeClass* oldest = nullptr;
            size_t oldest_size = 0;
            for (auto& [size, cls] : c.classes)
                if (size != rounded && !cls.free.empty() && cls.last_use < since &&
                    (!oldest || cls.last_use < oldest->last_use)) {
                    oldest = &cls;
                    oldest_size = size;
                }
            if (!oldest) break;
            std::free(oldest->free.back());
            oldest->free.pop_back();
            c.cached -= oldest_size;
        }
        if (c.cached + rounded <= budget) {
            SizeClass& cls = c.classes[rounded];
            cls.free.push_back(p);
            cls.last_use = ++c.tick;
            c.cached += rounded;
            return;
        }
    }
    std::free(p);
}
}  // namespace

size_t cpu_cached_bytes() {
    CpuCache& c = cpu_cache();
    std::lock_guard<std::mutex> lock(c.mu);
    return c.cached;
}

void cpu_empty_cache() {
    CpuCache& c = cpu_cache();
    std::lock_guard<std::mutex> lock(c.mu);
    for (auto& [size, cls] : c.classes)
        for (void* p : cls.free) std::free(p);
    c.classes.clear();
    c.cached = 0;
}

void register_device_backend(DeviceType type, const DeviceBackend& backend) {
    SSMTUNE_CHECK(type == DeviceType::CUDA, "only a CUDA backend can be registered");
    g_cuda_backend = backend;
    g_has_cuda_backend = true;
}

bool has_device_backend(DeviceType type) { return type == DeviceType::CPU || g_has_cuda_backend; }

const DeviceBackend& device_backend(DeviceType type) {
    if (type == DeviceType::CUDA && !g_has_cuda_backend) cuda::available();  // registers it when a GPU exists
    SSMTUNE_CHECK(type == DeviceType::CUDA && g_has_cuda_backend,
                  cuda::built_with_cuda() ? "no usable CUDA GPU (no driver or no device visible); fix: run on a machine "
                                            "with an NVIDIA GPU, or keep tensors on Device::cpu()"
                                          : "no CUDA backend in this build of ssmtune; fix: configure with "
                                            "-DSSMTUNE_CUDA=ON on a machine with the CUDA Toolkit, or keep tensors on "
                                            "Device::cpu()");
    return g_cuda_backend;
}

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
    if (device.is_cpu()) {
        data_ = cpu_allocate(rounded_bytes(nbytes));
        SSMTUNE_CHECK(data_ != nullptr, "out of host memory allocating ", nbytes, " bytes");
        SSMTUNE_POISON(static_cast<char*>(data_) + nbytes, rounded_bytes(nbytes) - nbytes);
        const size_t now = g_cpu_bytes.fetch_add(nbytes) + nbytes;
        size_t peak = g_cpu_peak.load();
        while (now > peak && !g_cpu_peak.compare_exchange_weak(peak, now)) {}
    } else {
        data_ = device_backend(device.type).allocate(nbytes, device.index);
    }
}

Storage::~Storage() {
    if (device_.is_cpu()) {
        g_cpu_bytes.fetch_sub(nbytes_);
        SSMTUNE_UNPOISON(static_cast<char*>(data_) + nbytes_, rounded_bytes(nbytes_) - nbytes_);
        cpu_release(data_, rounded_bytes(nbytes_));
    } else if (g_has_cuda_backend) {
        g_cuda_backend.release(data_, nbytes_, device_.index);
    }
}

size_t cpu_bytes_in_use() { return g_cpu_bytes.load(); }
size_t cpu_peak_bytes() { return g_cpu_peak.load(); }
void reset_cpu_peak_bytes() { g_cpu_peak.store(g_cpu_bytes.load()); }

}  // namespace ssmtune
