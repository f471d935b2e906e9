// The GPU caching allocator's policy, as plain host code: size classes, reuse of freed blocks, statistics,
// empty_cache, and the out-of-memory retry. cuda/runtime.cu instantiates one per device over cudaMalloc/cudaFree;
// the tests run the same class over malloc/free, so the policy is checked on machines without a GPU.
//
// Size classes: requests round up to 512 bytes below 1 MiB and to 128 KiB from 1 MiB up. A request takes the
// smallest cached block of at least its class and at most twice its class (bounded waste); otherwise the raw
// allocator is called. When that fails the cache is emptied and the call retried once; a second failure throws
// with the size asked, the bytes in use and the bytes cached. Freed blocks always go back to the cache (one stream
// per device, so a block freed by the host is reused in stream order, as in PyTorch's allocator).
// Not here: block splitting/merging, per-stream pools, memory-fraction limits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

namespace ssmtune::cuda {

struct AllocatorStats {
    size_t in_use = 0;       // bytes of live blocks (their class sizes)
    size_t peak_in_use = 0;  // highest in_use since start or reset_peak()
    size_t cached = 0;       // bytes of freed blocks held for reuse
    uint64_t raw_allocs = 0;  // calls to the raw allocator that succeeded
    uint64_t reuses = 0;      // requests served from the cache
};

class CachingAllocator {
public:
    // raw_alloc returns nullptr on failure (never throws); raw_free releases a block raw_alloc returned.
    using RawAlloc = void* (*)(size_t nbytes, void* context);
    using RawFree = void (*)(void* ptr, void* context);

    CachingAllocator(RawAlloc raw_alloc, RawFree raw_free, void* context, std::string device_name);
    ~CachingAllocator();  // returns every cached block; live blocks are the owners' business
    CachingAllocator(const CachingAllocator&) = delete;
    CachingAllocator& operator=(const CachingAllocator&) = delete;

    static size_t size_class(size_t nbytes);

    void* allocate(size_t nbytes);  // nullptr for 0 bytes; throws ssmtune::Error when memory is exhausted
    void release(void* ptr);        // nullptr is ignored; unknown pointers are an Error
    void empty_cache();
    AllocatorStats stats() const;
    void reset_peak();

private:
    void* take_cached(size_t cls);  // with mu_ held
    void free_cached();             // with mu_ held

    RawAlloc raw_alloc_;
    RawFree raw_free_;
    void* context_;
    std::string device_name_;
    mutable std::mutex mu_;
    std::multimap<size_t, void*> free_blocks_;      // class size -> cached block
    std::unordered_map<void*, size_t> live_blocks_;  // block -> class size
    AllocatorStats stats_;
};

}  // namespace ssmtune::cuda
