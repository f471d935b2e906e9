// CUDA build of cuda/runtime.h: device queries and the engine's device backend (plain cudaMalloc, cudaFree,
// synchronous cudaMemcpy). Every CUDA call is checked; errors name the call, file:line and a hint.
// Not here (CUDA backend issue): caching allocator, streams, pinned buffers, cuBLAS/cuFFT handles, kernels.
#include <cuda_runtime.h>

#include "cuda/runtime.h"
#include "engine/device.h"
#include "engine/error.h"

#define SSMTUNE_CUDA_CHECK(call)                                                                          \
    do {                                                                                                  \
        cudaError_t status_ = (call);                                                                     \
        SSMTUNE_CHECK(status_ == cudaSuccess, "CUDA call ", #call, " failed: ", cudaGetErrorString(status_), \
                      "; hint: check that the GPU is visible (nvidia-smi) and has free memory");          \
    } while (0)

namespace ssmtune::cuda {

namespace {
void* cuda_allocate(size_t nbytes, int device) {
    SSMTUNE_CUDA_CHECK(cudaSetDevice(device));
    void* p = nullptr;
    if (nbytes == 0) return nullptr;
    const cudaError_t status = cudaMalloc(&p, nbytes);
    if (status != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        cudaGetLastError();
        cudaMemGetInfo(&free_b, &total_b);
        SSMTUNE_FAIL("CUDA out of memory: asked for ", nbytes, " bytes on cuda:", device, ", ", free_b, " of ", total_b,
                     " bytes free; fix: use a smaller batch or sequence length");
    }
    return p;
}
void cuda_release(void* p, size_t, int) {
    if (p) cudaFree(p);
}
void cuda_copy(void* dst, const void* src, size_t nbytes, int kind, int) {
    if (nbytes == 0) return;
    const cudaMemcpyKind k = kind == 0 ? cudaMemcpyHostToDevice : (kind == 1 ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice);
    SSMTUNE_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, k));
}
}  // namespace

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
        backend.allocate = cuda_allocate;
        backend.release = cuda_release;
        backend.copy = cuda_copy;
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

}  // namespace ssmtune::cuda
