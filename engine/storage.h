// Storage: one owned buffer of bytes on one device, shared by every Tensor view of it.
//
// CPU buffers are 64-byte aligned (cache line, AVX-512 width) and rounded up to a multiple of 64 bytes. Large
// ones (256 KiB and up, rounded to 4 KiB) are cached when freed and reused by the next request of the same rounded
// size: a training loop allocates the same shapes every step, and fresh large blocks would each cost the kernel's
// page faults (about a tenth of a CPU Mamba step before the cache). At most the peak of bytes in use is kept;
// when that is full, cached buffers of sizes left untouched since the freed buffer's size was last requested are
// released to make room for it, unused longest first (else a shape that is gone, such as an earlier sequence
// length, could keep the current shapes' buffers out for good); cpu_empty_cache() returns it all.
// Reused buffers are not zeroed (Tensor::empty never promised it).
// Not here: reference-counting by hand (std::shared_ptr does it), copy-on-write.
#pragma once

#include <cstddef>
#include <memory>

#include "engine/device.h"

namespace ssmtune {

class Storage {
public:
    Storage(size_t nbytes, Device device);
    ~Storage();
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;

    void* data() { return data_; }
    const void* data() const { return data_; }
    size_t nbytes() const { return nbytes_; }
    Device device() const { return device_; }

    static std::shared_ptr<Storage> allocate(size_t nbytes, Device device) {
        return std::make_shared<Storage>(nbytes, device);
    }

private:
    void* data_ = nullptr;
    size_t nbytes_ = 0;
    Device device_;
};

// Bytes currently held by CPU storages, and the peak since start (for benchmarks' memory figures).
size_t cpu_bytes_in_use();
size_t cpu_peak_bytes();
void reset_cpu_peak_bytes();
// Bytes of freed CPU buffers held for reuse, and a call that frees them all.
size_t cpu_cached_bytes();
void cpu_empty_cache();

}  // namespace ssmtune
