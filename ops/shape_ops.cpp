// Shape and selection ops: concat, split, chunk, slice, index_select, where, masked_fill.
//
// split/chunk/slice return views made with Tensor::narrow, so their gradients come from narrow's backward.
// concat copies each input into its window of the output; its backward narrows the gradient per input.
// index_select gathers rows along one dim; its backward scatter-adds into zeros of x's shape, each output
// row summed by one thread over the index in order, so repeated indices accumulate deterministically.
// where/masked_fill read any dtype as a condition (nonzero = true) and broadcast with for_each_broadcast.
// CUDA tensors: concat copies into windows of the output on the device, index_select gathers by kernel and its
// backward sums per-row position lists (no atomics, the CPU's order), where/masked_fill select by a device mask.
// Not here: the plain views (views.cpp), strided slices (step != 1), negative indices in index_select,
// in-place variants, scatter/gather with a full index tensor.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "cuda/kernels.h"
#include "engine/tensor_copy.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace ssmtune::ops {

namespace {

// Data-movement ops work on any dtype, on the CPU or a GPU (all of them have CUDA kernels or are views).
void check_defined_input(const Tensor& t, const char* op, const char* arg) {
    SSMTUNE_CHECK(t.defined(), op, ": argument '", arg, "' is an undefined tensor");
}

// Product of shape[begin, end).
int64_t shape_prod(const Shape& s, int64_t begin, int64_t end) {
    int64_t p = 1;
    for (int64_t d = begin; d < end; ++d) p *= s[size_t(d)];
    return p;
}

// A contiguous U8 tensor of out_shape holding 1 where cond (broadcast to out_shape) is nonzero. NaN counts as
// nonzero, as in C++ and PyTorch.
Tensor truth_mask(const Tensor& cond, const Shape& out_shape) {
    Tensor mask = Tensor::empty(out_shape, DType::U8, cond.device());
    if (cond.device().is_cuda()) {
        const Shape strides[2] = {mask.strides(), broadcast_strides(cond, out_shape)};
        const int64_t offsets[2] = {0, cond.offset()};
        cuda::nonzero_mask(cond.device().index, cond.dtype(), cond.storage()->data(),
                           static_cast<uint8_t*>(mask.raw_data()), mask.numel(),
                           cuda::make_indexer<2>(out_shape, strides, offsets));
        return mask;
    }
    uint8_t* pm = mask.data<uint8_t>();
    dispatch_any_dtype(cond.dtype(), [&](auto tag) {
        using C = typename decltype(tag)::type;
        const C* pc = static_cast<const C*>(cond.storage()->data());
        for_each_broadcast<1>(out_shape, {broadcast_strides(cond, out_shape)}, {cond.offset()},
                              [&](int64_t i, const std::array<int64_t, 1>& o) {
                                  if constexpr (std::is_same<C, half_t>::value || std::is_same<C, bf16_t>::value)
                                      pm[i] = float(pc[o[0]]) != 0.0f ? 1 : 0;
                                  else
                                      pm[i] = pc[o[0]] != C(0) ? 1 : 0;
                              });
    });
    return mask;
}

// out (contiguous, mask's shape) = a where (mask != 0) == keep, else b; a and b broadcast (CUDA tensors only).
Tensor select_cuda(const Tensor& mask, bool keep, const Tensor& a, const Tensor& b) {
    Tensor out = Tensor::empty(mask.shape(), a.dtype(), a.device());
    const Shape strides[3] = {out.strides(), broadcast_strides(a, mask.shape()), broadcast_strides(b, mask.shape())};
    const int64_t offsets[3] = {0, a.offset(), b.offset()};
    cuda::select_by_mask(a.device().index, a.dtype(), static_cast<const uint8_t*>(mask.raw_data()), keep,
                         a.storage()->data(), b.storage()->data(), out.raw_data(), out.numel(),
                         cuda::make_indexer<3>(mask.shape(), strides, offsets));
    return out;
}

// g (any layout, out_shape) kept where mask == keep, zero elsewhere; contiguous, g's dtype.
Tensor keep_where(const Tensor& g, const Tensor& mask, uint8_t keep) {
    if (g.device().is_cuda()) return select_cuda(mask, keep == 1, g, Tensor::zeros({}, g.dtype(), g.device()));
    Tensor gc = g.contiguous();
    Tensor out = Tensor::empty(g.shape(), g.dtype());
    dispatch_float(g.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* pg = gc.data<T>();
        const uint8_t* pm = mask.data<uint8_t>();
        T* po = out.data<T>();
        const int64_t n = out.numel();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
        for (int64_t i = 0; i < n; ++i) po[i] = pm[i] == keep ? pg[i] : T(0);
    });
    return out;
}

}  // namespace

// ---- concat: tensors[i] [..., n_i, ...] -> out [..., Σ n_i, ...] ----

Tensor concat(const std::vector<Tensor>& tensors, int64_t dim) {
    SSMTUNE_CHECK(!tensors.empty(), "concat: empty list of tensors; fix: pass at least one tensor");
    const Tensor& first = tensors[0];
    check_defined_input(first, "concat", "tensors[0]");
    SSMTUNE_CHECK(first.dim() > 0, "concat: tensors[0] is zero-dimensional (", first.describe(),
                  "); fix: unsqueeze(0) each scalar first");
    dim = wrap_dim(dim, first.dim(), "concat");
    Shape out_shape = first.shape();
    out_shape[size_t(dim)] = 0;
    std::vector<int64_t> starts;
    for (size_t i = 0; i < tensors.size(); ++i) {
        const Tensor& t = tensors[i];
        SSMTUNE_CHECK(t.defined(), "concat: tensors[", i, "] is an undefined tensor");
        SSMTUNE_CHECK(t.device() == first.device(), "concat: tensors[", i, "] is ", t.describe(),
                      " but tensors[0] is ", first.describe(), "; fix: move all to one device with .to()");
        SSMTUNE_CHECK(t.dtype() == first.dtype(), "concat: tensors[", i, "] is ", t.describe(), " but tensors[0] is ",
                      first.describe(), "; fix: convert with .to() so all share one dtype");
        bool same = t.dim() == first.dim();
        for (int64_t d = 0; same && d < t.dim(); ++d)
            same = d == dim || t.shape()[size_t(d)] == first.shape()[size_t(d)];
        SSMTUNE_CHECK(same, "concat: tensors[", i, "] has shape ", shape_str(t.shape()), " but tensors[0] has ",
                      shape_str(first.shape()), "; all shapes must match except in dimension ", dim);
        starts.push_back(out_shape[size_t(dim)]);
        out_shape[size_t(dim)] += t.shape()[size_t(dim)];
    }
    Tensor out = Tensor::empty(out_shape, first.dtype(), first.device());
    if (first.device().is_cuda()) {  // each input copied into its window of the output by the strided-copy kernel
        for (size_t i = 0; i < tensors.size(); ++i) {
            Tensor window = out.detach().narrow(dim, starts[i], tensors[i].shape()[size_t(dim)]);
            copy_into(window, tensors[i].detach());
        }
    }
    // Row o of the output (the dims before `dim`) is the rows o of every input laid end to end.
    const int64_t rank = int64_t(out_shape.size());
    const int64_t outer = shape_prod(out_shape, 0, dim), inner = shape_prod(out_shape, dim + 1, rank);
    const int64_t elem = int64_t(dtype_size(first.dtype()));
    const int64_t out_row = out_shape[size_t(dim)] * inner * elem;
    char* po = static_cast<char*>(out.raw_data());
    for (size_t i = 0; i < tensors.size() && first.device().is_cpu(); ++i) {
        const Tensor ti = tensors[i].detach().contiguous();
        const int64_t row = ti.shape()[size_t(dim)] * inner * elem;
        if (row == 0 || outer == 0) continue;
        const char* pi = static_cast<const char*>(ti.raw_data());
        const int64_t at = starts[i] * inner * elem;
#pragma omp parallel for schedule(static) if (outer * row > kParallelGrain * 4)
        for (int64_t o = 0; o < outer; ++o) std::memcpy(po + o * out_row + at, pi + o * row, size_t(row));
    }
    std::vector<int64_t> lengths;
    for (const Tensor& t : tensors) lengths.push_back(t.shape()[size_t(dim)]);
    autograd::record("concat", tensors, {out}, [dim, starts, lengths](const auto& g, const auto& needs) {
        std::vector<Tensor> dtensors(needs.size());
        for (size_t i = 0; i < needs.size(); ++i)
            if (needs[i]) dtensors[i] = g[0].narrow(dim, starts[i], lengths[i]);
        return dtensors;
    });
    return out;
}

// ---- split / chunk / slice: views via narrow ----

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
    check_defined_input(x, "split", "x");
    SSMTUNE_CHECK(x.dim() > 0, "split: x is zero-dimensional (", x.describe(), ")");
    dim = wrap_dim(dim, x.dim(), "split");
    int64_t total = 0;
    for (int64_t s : sizes) {
        SSMTUNE_CHECK(s >= 0, "split: negative size ", s, " in sizes ", shape_str(sizes));
        total += s;
    }
    SSMTUNE_CHECK(total == x.size(dim), "split: sizes ", shape_str(sizes), " sum to ", total, " but dimension ", dim,
                  " of ", x.describe(), " has ", x.size(dim), "; fix: make the sizes add up to ", x.size(dim));
    std::vector<Tensor> parts;
    int64_t start = 0;
    for (int64_t s : sizes) {
        parts.push_back(x.narrow(dim, start, s));
        start += s;
    }
    return parts;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
    check_defined_input(x, "chunk", "x");
    SSMTUNE_CHECK(x.dim() > 0, "chunk: x is zero-dimensional (", x.describe(), ")");
    SSMTUNE_CHECK(chunks > 0, "chunk: chunks must be positive, got ", chunks);
    dim = wrap_dim(dim, x.dim(), "chunk");
    const int64_t n = x.size(dim);
    // PyTorch's rule: pieces of ceil(n / chunks), the last one smaller; may give fewer than `chunks` pieces.
    // An empty dimension gives `chunks` empty pieces.
    const int64_t piece = (n + chunks - 1) / chunks;
    std::vector<int64_t> sizes;
    if (n == 0) sizes.assign(size_t(chunks), 0);
    for (int64_t start = 0; start < n; start += piece) sizes.push_back(std::min(piece, n - start));
    return split(x, sizes, dim);
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end) {
    check_defined_input(x, "slice", "x");
    SSMTUNE_CHECK(x.dim() > 0, "slice: x is zero-dimensional (", x.describe(), ")");
    dim = wrap_dim(dim, x.dim(), "slice");
    const int64_t n = x.size(dim);
    // Python's x[start:end]: negative counts from the end, then clamp into [0, n]; end before start is empty.
    auto clamp_index = [n](int64_t i) {
        if (i < 0) i += n;
        return std::min(std::max(i, int64_t(0)), n);
    };
    const int64_t s = clamp_index(start), e = std::max(clamp_index(end), s);
    return x.narrow(dim, s, e - s);
}

// ---- index_select: x [P, n, Q] (P = dims before `dim`, Q = after), index [K] -> out [P, K, Q] ----

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
    check_defined_input(x, "index_select", "x");
    check_defined_input(index, "index_select", "index");
    SSMTUNE_CHECK(index.dtype() == DType::I64 || index.dtype() == DType::I32,
                  "index_select: index must be I64 or I32, got ", index.describe(), "; fix: .to(DType::I64)");
    SSMTUNE_CHECK(index.dim() == 1, "index_select: index must be 1-D, got ", index.describe(),
                  "; fix: flatten it with reshape({-1})");
    SSMTUNE_CHECK(x.dim() > 0, "index_select: x is zero-dimensional (", x.describe(), ")");
    dim = wrap_dim(dim, x.dim(), "index_select");
    const int64_t n = x.size(dim), k_count = index.numel();
    const std::vector<int64_t> idx = index.to_vector<int64_t>();
    for (int64_t k = 0; k < k_count; ++k)
        SSMTUNE_CHECK(idx[size_t(k)] >= 0 && idx[size_t(k)] < n, "index_select: index[", k, "] = ", idx[size_t(k)],
                      " is out of range [0, ", n, ") for dimension ", dim, " of ", x.describe());
    Shape out_shape = x.shape();
    out_shape[size_t(dim)] = k_count;
    SSMTUNE_CHECK(index.device() == x.device(), "index_select: index ", index.describe(), " and x ", x.describe(),
                  " are on different devices; fix: move both to one device with .to()");
    Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
    const int64_t outer = shape_prod(x.shape(), 0, dim), inner = shape_prod(x.shape(), dim + 1, x.dim());
    const int64_t row = inner * int64_t(dtype_size(x.dtype()));  // bytes of one [Q] row
    if (x.device().is_cuda()) {
        const Tensor xc = x.detach().contiguous(), ic = Tensor::from_vector(idx, {k_count}).to(x.device());
        cuda::index_select_forward(x.device().index, x.dtype(), xc.raw_data(),
                                   static_cast<const int64_t*>(ic.raw_data()), out.raw_data(), outer, n, k_count, inner);
    } else if (out.numel() > 0) {
        const Tensor xc = x.detach().contiguous();
        const char* px = static_cast<const char*>(xc.raw_data());
        char* po = static_cast<char*>(out.raw_data());
        const int64_t rows = outer * k_count;
#pragma omp parallel for schedule(static) if (rows * inner > kParallelGrain)
        for (int64_t r = 0; r < rows; ++r) {
            const int64_t o = r / k_count, k = r % k_count;
            std::memcpy(po + r * row, px + (o * n + idx[size_t(k)]) * row, size_t(row));
        }
    }
    autograd::record("index_select", {x}, {out},
                     [idx, in_shape = x.shape(), outer, n, inner](const auto& g, const auto&) {
                         // dx[p, idx[k], q] += g[p, k, q], k in order: one thread per p, so deterministic.
                         Tensor gc = g[0].contiguous();
                         if (gc.device().is_cuda()) {  // per-row position lists: the same sums, no atomics
                             const cuda::IndexLists lists = cuda::build_index_lists(idx, n);
                             const Tensor offsets = Tensor::from_vector(lists.offsets, {n + 1}).to(gc.device());
                             const Tensor positions =
                                 Tensor::from_vector(lists.positions, {int64_t(idx.size())}).to(gc.device());
                             Tensor dx = Tensor::empty(in_shape, gc.dtype(), gc.device());
                             cuda::index_select_backward(gc.device().index, gc.dtype(), gc.raw_data(),
                                                         static_cast<const int64_t*>(offsets.raw_data()),
                                                         static_cast<const int64_t*>(positions.raw_data()),
                                                         dx.raw_data(), outer, n, int64_t(idx.size()), inner);
                             return std::vector<Tensor>{dx};
                         }
                         Tensor dx = Tensor::zeros(in_shape, gc.dtype());
                         const int64_t k_count = int64_t(idx.size());
                         dispatch_float(gc.dtype(), [&](auto tag) {
                             using T = typename decltype(tag)::type;
                             const T* pg = gc.data<T>();
                             T* pd = dx.data<T>();
#pragma omp parallel for schedule(static) if (outer * k_count * inner > kParallelGrain && outer > 1)
                             for (int64_t p = 0; p < outer; ++p)
                                 for (int64_t k = 0; k < k_count; ++k) {
                                     T* dst = pd + (p * n + idx[size_t(k)]) * inner;
                                     const T* src = pg + (p * k_count + k) * inner;
                                     for (int64_t q = 0; q < inner; ++q) dst[q] += src[q];
                                 }
                         });
                         return std::vector<Tensor>{dx};
                     });
    return out;
}

// ---- where: cond, a, b broadcast together -> out; da = Σ_broadcast g·[cond], db = Σ_broadcast g·[!cond] ----

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
    check_defined_input(cond, "where", "cond");
    check_float_input(a, "where", "a", kCudaKernel);
    check_float_input(b, "where", "b", kCudaKernel);
    check_same_kind(a, b, "where");
    SSMTUNE_CHECK(cond.device() == a.device(), "where: cond ", cond.describe(), " and a ", a.describe(),
                  " are on different devices; fix: move both to one device with .to()");
    const Shape out_shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape()), b.shape());
    const Tensor mask = truth_mask(cond, out_shape);
    Tensor out = a.device().is_cuda() ? select_cuda(mask, true, a, b) : Tensor::empty(out_shape, a.dtype());
    if (a.device().is_cpu()) dispatch_float(a.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* pa = static_cast<const T*>(a.storage()->data());
        const T* pb = static_cast<const T*>(b.storage()->data());
        const uint8_t* pm = mask.data<uint8_t>();
        T* po = out.data<T>();
        for_each_broadcast<2>(out_shape, {broadcast_strides(a, out_shape), broadcast_strides(b, out_shape)},
                              {a.offset(), b.offset()}, [&](int64_t i, const std::array<int64_t, 2>& o) {
                                  po[i] = pm[i] ? pa[o[0]] : pb[o[1]];
                              });
    });
    // cond is not an input of the node: it is not differentiable, even when it is a float that requires grad.
    autograd::record("where", {a, b}, {out},
                     [mask, sa = a.shape(), sb = b.shape()](const auto& g, const auto& needs) {
                         return std::vector<Tensor>{
                             needs[0] ? sum_to_shape(keep_where(g[0], mask, 1), sa) : Tensor(),
                             needs[1] ? sum_to_shape(keep_where(g[0], mask, 0), sb) : Tensor()};
                     });
    return out;
}

// ---- masked_fill: x, mask broadcast to x's shape -> out = value where mask, else x; dx = g·[!mask] ----

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
    check_float_input(x, "masked_fill", "x", kCudaKernel);
    check_defined_input(mask, "masked_fill", "mask");
    SSMTUNE_CHECK(broadcast_shapes(mask.shape(), x.shape()) == x.shape(), "masked_fill: mask ", mask.describe(),
                  " does not broadcast to x ", x.describe(), "; fix: give the mask x's shape or size-1 dims");
    SSMTUNE_CHECK(mask.device() == x.device(), "masked_fill: mask ", mask.describe(), " and x ", x.describe(),
                  " are on different devices; fix: move both to one device with .to()");
    const Tensor m = truth_mask(mask, x.shape());
    Tensor out = x.device().is_cuda() ? select_cuda(m, true, Tensor::full({}, value, x.dtype(), x.device()), x)
                                      : Tensor::empty(x.shape(), x.dtype());
    if (x.device().is_cpu()) dispatch_float(x.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* px = static_cast<const T*>(x.storage()->data());
        const uint8_t* pm = m.data<uint8_t>();
        T* po = out.data<T>();
        const T fill = T(value);
        for_each_broadcast<1>(x.shape(), {x.strides()}, {x.offset()},
                              [&](int64_t i, const std::array<int64_t, 1>& o) { po[i] = pm[i] ? fill : px[o[0]]; });
    });
    // The mask is an input only for its shape and values; it gets no gradient even if it is a float leaf.
    autograd::record("masked_fill", {x}, {out}, [m](const auto& g, const auto&) {
        return std::vector<Tensor>{keep_where(g[0], m, 0)};
    });
    return out;
}

}  // namespace ssmtune::ops
