// CachingAllocator (see caching_allocator.h): host code, built with or without CUDA.
#include "cuda/caching_allocator.h"

#include <algorithm>

#include "engine/error.h"

namespace ssmtune::cuda {

namespace {
constexpr size_t kSmallLimit = size_t(1) << 20;  // 1 MiB
constexpr size_t kSmallRound = 512;
constexpr size_t kLargeRound = size_t(128) << 10;  // 128 KiB
}  // namespace

CachingAllocator::CachingAllocator(RawAlloc raw_alloc, RawFree raw_free, void* context, std::string device_name)
    : raw_alloc_(raw_alloc), raw_free_(raw_free), context_(context), device_name_(std::move(device_name)) {}

CachingAllocator::~CachingAllocator() { empty_cache(); }

size_t CachingAllocator::size_class(size_t nbytes) {
    const size_t round = nbytes < kSmallLimit ? kSmallRound : kLargeRound;
    return std::max(round, (nbytes + round - 1) / round * round);
}

void* CachingAllocator::take_cached(size_t cls) {
    auto it = free_blocks_.lower_bound(cls);
    if (it == free_blocks_.end() || it->first > 2 * cls) return nullptr;
    void* p = it->second;
    const size_t have = it->first;
    free_blocks_.erase(it);
    stats_.cached -= have;
    live_blocks_[p] = have;
    stats_.in_use += have;
    ++stats_.reuses;
    return p;
}

void* CachingAllocator::allocate(size_t nbytes) {
    if (nbytes == 0) return nullptr;
    const size_t cls = size_class(nbytes);
    std::lock_guard<std::mutex> lock(mu_);
    void* p = take_cached(cls);
    if (p == nullptr) {
        p = raw_alloc_(cls, context_);
        if (p == nullptr && !free_blocks_.empty()) {  // the cache may hold what is missing: give it back, try again
            free_cached();
            p = raw_alloc_(cls, context_);
        }
        SSMTUNE_CHECK(p != nullptr, device_name_, " out of memory: asked for ", nbytes, " bytes (", cls,
                      " with rounding), ", stats_.in_use, " bytes in use by tensors, ", stats_.cached,
                      " cached; fix: use a smaller batch or sequence length, or free tensors you no longer need");
        live_blocks_[p] = cls;
        stats_.in_use += cls;
        ++stats_.raw_allocs;
    }
    stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
    return p;
}

void CachingAllocator::release(void* ptr) {
    if (ptr == nullptr) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_blocks_.find(ptr);
    SSMTUNE_CHECK(it != live_blocks_.end(), device_name_, ": release of a pointer this allocator did not hand out");
    const size_t cls = it->second;
    live_blocks_.erase(it);
    stats_.in_use -= cls;
    free_blocks_.emplace(cls, ptr);
    stats_.cached += cls;
}

void CachingAllocator::free_cached() {
    for (auto& [size, block] : free_blocks_) raw_free_(block, context_);
    free_blocks_.clear();
    stats_.cached = 0;
}

void CachingAllocator::empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    free_cached();
}

AllocatorStats CachingAllocator::stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
}

void CachingAllocator::reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_in_use = stats_.in_use;
}

}  // namespace ssmtune::cuda
