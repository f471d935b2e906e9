// Walking a strided view in row-major order, the one loop every CPU copy and broadcast uses.
//
// for_each_offset(shape, strides, offset, fn) calls fn(linear_index, element_offset) for every element; the
// innermost dimension runs as a plain loop so contiguous rows stay fast. Not here: threading (callers split
// work by rows), dtype handling (offsets are in elements).
#pragma once

#include <cstdint>
#include <vector>

namespace ssmtune {

template <class Fn>
void for_each_offset(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides, int64_t offset, Fn&& fn) {
    const int64_t ndim = int64_t(shape.size());
    int64_t total = 1;
    for (int64_t s : shape) total *= s;
    if (total == 0) return;
    if (ndim == 0) { fn(int64_t(0), offset); return; }
    const int64_t inner = shape[ndim - 1], inner_stride = strides[ndim - 1];
    std::vector<int64_t> counter(size_t(ndim), 0);
    int64_t base = offset, linear = 0;
    while (true) {
        for (int64_t i = 0; i < inner; ++i) fn(linear + i, base + i * inner_stride);
        linear += inner;
        int64_t d = ndim - 2;
        for (; d >= 0; --d) {
            ++counter[size_t(d)];
            base += strides[size_t(d)];
            if (counter[size_t(d)] < shape[size_t(d)]) break;
            base -= strides[size_t(d)] * shape[size_t(d)];
            counter[size_t(d)] = 0;
        }
        if (d < 0) return;
    }
}

// Element offset of row-major linear index `linear` in a strided view (division-based; for random access).
inline int64_t strided_offset(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides, int64_t offset,
                              int64_t linear) {
    int64_t off = offset;
    for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
        const int64_t s = shape[size_t(d)];
        off += (linear % s) * strides[size_t(d)];
        linear /= s;
    }
    return off;
}

}  // namespace ssmtune
