// Index math of the CUDA kernels, in host/device functions so the CPU tests check it on machines without a GPU.
//
// - StridedIndexer<N>: maps the i-th element (row-major) of an output shape to the element offsets of N
//   operands, each with its own strides (0 on broadcast dims) and offset. Built on the host by make_indexer,
//   which drops size-1 dims and merges dims that are contiguous in every operand, so most tensors become rank 1.
// - launch_blocks: the grid size of a grid-stride loop.
// - max_candidate_wins: the argmax rule max_rows combines lanes with.
// - build_index_lists: the per-row position lists that make embedding/index_select backward atomic-free.
// - The deterministic block reduction: each of `threads` lanes sums elements lane, lane + threads, ... of a row
//   in order (lane_partial), then a shared-memory tree halves the active lanes each pass (tree_pass). The kernel
//   and reduce_row_emulated (the test's host copy of the schedule) call the same two functions.
// Not here: kernels (cuda/*.cu), tensors.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/error.h"
#include "engine/host_device.h"

namespace ssmtune::cuda {

constexpr int kMaxDims = 8;

template <int N>
struct StridedIndexer {
    int rank = 0;
    int64_t shape[kMaxDims] = {};
    int64_t strides[N][kMaxDims] = {};
    int64_t offsets[N] = {};

    // off[k] = offset of operand k for output element i.
    SSMTUNE_HD void operand_offsets(int64_t i, int64_t* off) const {
        for (int k = 0; k < N; ++k) off[k] = offsets[k];
        for (int d = rank - 1; d >= 0; --d) {
            const int64_t idx = i % shape[d];
            i /= shape[d];
            for (int k = 0; k < N; ++k) off[k] += idx * strides[k][d];
        }
    }
};

// An indexer over out_shape for operands with the given strides (one per dim of out_shape) and offsets.
template <int N>
StridedIndexer<N> make_indexer(const std::vector<int64_t>& out_shape, const std::vector<int64_t> (&strides)[N],
                               const int64_t (&offsets)[N]) {
    // Keep dims of size > 1, then merge dim d into d+1 when, for every operand, stride[d] = stride[d+1]·size[d+1].
    std::vector<int64_t> shape;
    std::vector<std::vector<int64_t>> st(N);
    for (size_t d = 0; d < out_shape.size(); ++d) {
        if (out_shape[d] == 1) continue;
        const bool merge = !shape.empty() && [&] {
            for (int k = 0; k < N; ++k)
                if (st[size_t(k)].back() != strides[k][d] * out_shape[d]) return false;
            return true;
        }();
        if (merge) {
            shape.back() *= out_shape[d];
            for (int k = 0; k < N; ++k) st[size_t(k)].back() = strides[k][d];
        } else {
            shape.push_back(out_shape[d]);
            for (int k = 0; k < N; ++k) st[size_t(k)].push_back(strides[k][d]);
        }
    }
    SSMTUNE_CHECK(shape.size() <= size_t(kMaxDims), "CUDA kernels take at most ", kMaxDims,
                  " non-mergeable dimensions, this view has ", shape.size(), "; fix: call .contiguous() first");
    StridedIndexer<N> ix;
    ix.rank = int(shape.size());
    for (size_t d = 0; d < shape.size(); ++d) {
        ix.shape[d] = shape[d];
        for (int k = 0; k < N; ++k) ix.strides[k][d] = st[size_t(k)][d];
    }
    for (int k = 0; k < N; ++k) ix.offsets[k] = offsets[k];
    return ix;
}

// Blocks for a grid-stride loop over n elements: enough to cover n, at most max_blocks.
SSMTUNE_HD inline int64_t launch_blocks(int64_t n, int threads, int64_t max_blocks = 65535) {
    const int64_t need = (n + threads - 1) / threads;
    return need < 1 ? 1 : (need > max_blocks ? max_blocks : need);
}

// Lane `lane` of `threads`: the in-order sum of row[lane], row[lane + threads], ... (Acc accumulates).
template <class Acc, class T>
SSMTUNE_HD inline Acc lane_partial(const T* row, int64_t count, int lane, int threads) {
    Acc acc = Acc(0);
    for (int64_t j = lane; j < count; j += threads) acc += Acc(row[j]);
    return acc;
}

// One pass of the tree: lanes below `half` add the partial `half` above them. Passes run for half = threads/2,
// threads/4, ..., 1 (threads a power of two); lane 0 then holds the row's sum.
template <class Acc>
SSMTUNE_HD inline void tree_pass(Acc* partials, int lane, int half) {
    if (lane < half) partials[lane] += partials[lane + half];
}

// Argmax rule of max_rows, as on the CPU: NaN beats any number, a larger value beats a smaller one, and between
// equals (or two NaNs) the lower index wins, so the winner of any combination order is the first maximum.
template <class T>
SSMTUNE_HD inline bool max_candidate_wins(T value, int64_t index, T best, int64_t best_index) {
    const bool nan = value != value, best_nan = best != best;
    if (nan != best_nan) return nan;
    if (!nan && value != best) return value > best;
    return index < best_index;
}

// For scatter-add backwards without atomics: the positions k of idx grouped by target row, each group in increasing
// k (a counting sort on the host, where the indices already are for their range check). Row r's positions are
// positions[offsets[r] .. offsets[r+1]); a kernel thread per target element then sums its group in order.
struct IndexLists {
    std::vector<int64_t> offsets;    // [rows + 1]
    std::vector<int64_t> positions;  // [idx.size()]
};

inline IndexLists build_index_lists(const std::vector<int64_t>& idx, int64_t rows) {
    IndexLists out;
    out.offsets.assign(static_cast<size_t>(rows + 1), 0);
    for (int64_t v : idx) ++out.offsets[size_t(v + 1)];
    for (int64_t r = 0; r < rows; ++r) out.offsets[size_t(r + 1)] += out.offsets[size_t(r)];
    out.positions.resize(idx.size());
    std::vector<int64_t> fill(out.offsets.begin(), out.offsets.end() - 1);
    for (size_t k = 0; k < idx.size(); ++k) out.positions[size_t(fill[size_t(idx[k])]++)] = int64_t(k);
    return out;
}

// The kernel's reduction schedule run on the host: what one block computes for one row.
template <class Acc, class T>
Acc reduce_row_emulated(const T* row, int64_t count, int threads) {
    std::vector<Acc> partials(static_cast<size_t>(threads));
    for (int lane = 0; lane < threads; ++lane) partials[size_t(lane)] = lane_partial<Acc>(row, count, lane, threads);
    for (int half = threads / 2; half > 0; half /= 2)
        for (int lane = 0; lane < half; ++lane) tree_pass(partials.data(), lane, half);
    return partials[0];
}

}  // namespace ssmtune::cuda
