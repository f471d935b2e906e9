// embedding: row lookup out[..., :] = weight[ids[...], :], and its scatter-add backward.
//
// Forward copies one weight row per id (the weight may be any strided view; no copy of the table). Every id is
// checked against [0, V) first, and the error names the id, its position in `ids` and V. Backward scatter-adds
// g into zeros [V, D]: the D columns are split in blocks over threads and each block walks the ids in order, so
// repeated ids accumulate in a fixed order whatever the thread count. Not here: padding_idx, max_norm,
// sparse gradients (dweight is dense [V, D]). On a GPU the lookup is index_select of the table's rows (same sums
// in the same order in its backward).
#include <algorithm>

#include "ops/op_util.h"
#include "ops/ops.h"

namespace ssmtune::ops {

namespace {

// ids (I64 or I32, any layout) as a flat row-major vector of int64, validated against [0, V).
std::vector<int64_t> read_ids(const Tensor& ids, int64_t V) {
    SSMTUNE_CHECK(ids.defined(), "embedding: argument 'ids' is an undefined tensor");
    SSMTUNE_CHECK(ids.dtype() == DType::I64 || ids.dtype() == DType::I32, "embedding: ids must be I64 or I32, got ",
                  ids.describe(), "; fix: convert with .to(DType::I64)");
    const std::vector<int64_t> v = ids.to_vector<int64_t>();
    for (size_t i = 0; i < v.size(); ++i) {
        if (v[i] >= 0 && v[i] < V) continue;
        // Position as a multi-index, e.g. [1, 3].
        Shape pos(ids.shape().size());
        int64_t rest = int64_t(i);
        for (int64_t d = int64_t(pos.size()) - 1; d >= 0; --d) {
            pos[size_t(d)] = rest % ids.shape()[size_t(d)];
            rest /= ids.shape()[size_t(d)];
        }
        SSMTUNE_FAIL("embedding: id ", v[i], " at position ", shape_str(pos), " of ids ", ids.describe(),
                     " is outside the vocabulary [0, V = ", V, "); fix: check the tokenizer's vocab size against the",
                     " model's (pad the embedding or remap ids)");
    }
    return v;
}

// dweight[V, D] = Σ_n onehot(ids[n]) g[n, :], g contiguous [n, D]; column blocks per thread, ids in order.
template <class T>
void embedding_backward(const std::vector<int64_t>& ids, const T* g, int64_t D, T* dweight) {
    constexpr int64_t kBlock = 64;
    const int64_t n = int64_t(ids.size()), blocks = (D + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n * D > kParallelGrain)
    for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t j0 = blk * kBlock, j1 = std::min(D, j0 + kBlock);
        for (int64_t i = 0; i < n; ++i) {
            T* row = dweight + ids[size_t(i)] * D;
            const T* gi = g + i * D;
            for (int64_t j = j0; j < j1; ++j) row[j] += gi[j];
        }
    }
}

}  // namespace

// weight[V, D], ids[...] -> out[..., D]
Tensor embedding(const Tensor& weight, const Tensor& ids) {
    check_float_input(weight, "embedding", "weight", kCudaKernel);
    SSMTUNE_CHECK(weight.dim() == 2, "embedding: weight must be [V, D], got ", weight.describe());
    const int64_t V = weight.size(0), D = weight.size(1);
    auto id_list = std::make_shared<const std::vector<int64_t>>(read_ids(ids, V));
    if (weight.device().is_cuda()) {  // index_select of the table's rows (its backward sums per-row lists, no atomics)
        SSMTUNE_CHECK(ids.device() == weight.device(), "embedding: ids ", ids.describe(), " and weight ",
                      weight.describe(), " are on different devices; fix: move the ids with .to()");
        Shape out_shape = ids.shape();
        out_shape.push_back(D);
        return index_select(weight, 0, ids.reshape({-1})).reshape(out_shape);
    }
    const int64_t n = int64_t(id_list->size());
    Shape out_shape = ids.shape();
    out_shape.push_back(D);
    Tensor out = Tensor::empty(out_shape, weight.dtype());
    dispatch_float(weight.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* pw = static_cast<const T*>(weight.storage()->data()) + weight.offset();
        const int64_t s0 = weight.strides()[0], s1 = weight.strides()[1];
        T* po = out.data<T>();
        const std::vector<int64_t>& v = *id_list;
#pragma omp parallel for schedule(static) if (n * D > kParallelGrain)
        for (int64_t i = 0; i < n; ++i) {
            const T* row = pw + v[size_t(i)] * s0;
            T* dst = po + i * D;
            if (s1 == 1) std::copy(row, row + D, dst);
            else for (int64_t j = 0; j < D; ++j) dst[j] = row[j * s1];
        }
    });
    autograd::record("embedding", {weight}, {out}, [id_list, V, D](const auto& g, const auto&) {
        const Tensor gc = g[0].contiguous();
        Tensor dweight = Tensor::zeros({V, D}, gc.dtype());
        dispatch_float(gc.dtype(), [&](auto tag) {
            using T = typename decltype(tag)::type;
            embedding_backward<T>(*id_list, gc.data<T>(), D, dweight.data<T>());
        });
        return std::vector<Tensor>{dweight};
    });
    return out;
}

}  // namespace ssmtune::ops
