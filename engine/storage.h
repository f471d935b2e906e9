// Storage: one owned buffer of bytes on one device, shared by every Tensor view of it.
//
// CPU buffers are 64-byte aligned (cache line, AVX-512 width) and rounded up to a multiple of 64 bytes.
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

}  // namespace ssmtune
