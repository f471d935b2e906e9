// Storage allocation and the device-backend registry (see storage.h, device.h).
#include "engine/storage.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "cuda/runtime.h"
#include "engine/error.h"

namespace ssmtune {

namespace {
DeviceBackend g_cuda_backend;
bool g_has_cuda_backend = false;
std::atomic<size_t> g_cpu_bytes{0};
std::atomic<size_t> g_cpu_peak{0};
}  // namespace

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
        const size_t rounded = (nbytes + 63) / 64 * 64;
        data_ = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
        SSMTUNE_CHECK(data_ != nullptr, "out of host memory allocating ", nbytes, " bytes");
        const size_t now = g_cpu_bytes.fetch_add(nbytes) + nbytes;
        size_t peak = g_cpu_peak.load();
        while (now > peak && !g_cpu_peak.compare_exchange_weak(peak, now)) {}
    } else {
        data_ = device_backend(device.type).allocate(nbytes, device.index);
    }
}

Storage::~Storage() {
    if (device_.is_cpu()) {
        std::free(data_);
        g_cpu_bytes.fetch_sub(nbytes_);
    } else if (g_has_cuda_backend) {
        g_cuda_backend.release(data_, nbytes_, device_.index);
    }
}

size_t cpu_bytes_in_use() { return g_cpu_bytes.load(); }
size_t cpu_peak_bytes() { return g_cpu_peak.load(); }
void reset_cpu_peak_bytes() { g_cpu_peak.store(g_cpu_bytes.load()); }

}  // namespace ssmtune
