// Where a tensor's storage lives.
//
// CPU storage is plain 64-byte-aligned host memory. CUDA storage is allocated through a backend that the
// cuda/ folder registers at start-up when the library is built with CUDA; without it, asking for a CUDA
// device is an Error that says how to rebuild. Not here: streams, allocator policy (cuda/ owns those).
#pragma once

#include <cstddef>
#include <string>

namespace ssmtune {

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
    DeviceType type = DeviceType::CPU;
    int index = 0;

    static Device cpu() { return {DeviceType::CPU, 0}; }
    static Device cuda(int index = 0) { return {DeviceType::CUDA, index}; }
    bool is_cpu() const { return type == DeviceType::CPU; }
    bool is_cuda() const { return type == DeviceType::CUDA; }
    bool operator==(const Device& o) const { return type == o.type && index == o.index; }
    bool operator!=(const Device& o) const { return !(*this == o); }
    std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};

// What a GPU backend provides to the engine. cuda/ fills one in and calls register_device_backend().
struct DeviceBackend {
    void* (*allocate)(size_t nbytes, int device_index) = nullptr;
    void (*release)(void* ptr, size_t nbytes, int device_index) = nullptr;
    // kind: 0 host->device, 1 device->host, 2 device->device
    void (*copy)(void* dst, const void* src, size_t nbytes, int kind, int device_index) = nullptr;
};

void register_device_backend(DeviceType type, const DeviceBackend& backend);
// The registered backend; throws Error (with the rebuild hint) when none is registered for `type`.
const DeviceBackend& device_backend(DeviceType type);
bool has_device_backend(DeviceType type);

}  // namespace ssmtune
