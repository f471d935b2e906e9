// matmul (batched, NumPy broadcasting and 1-D rules), linear (x w^T + bias) and the GEMM counter.
//
// Every product is one Eigen GEMM over row-major buffers: Eigen::Map<const Matrix<T, Dynamic, Dynamic, RowMajor>>
// with an outer stride, mapped as the transpose when the view is a transposed row-major matrix, so transposed
// weights (w^T in linear, b^T in matmul's backward) are never copied. Batch dims are walked through their
// strides (broadcast dims have stride 0), so broadcasting copies nothing either. Backward: da = g b^T summed over
// the batch dims a was broadcast along, db = a^T g; each skipped when needs[] is false.
// CUDA tensors: the same operand layouts drive one cuBLAS strided-batched GEMM per product (cuda/matmul.cu).
// Threads: a large batch is split over OpenMP threads (one GEMM per thread at a time, Eigen single-threaded
// inside); otherwise Eigen threads the single GEMM. Each output block is owned by one thread, so results are
// bit-identical run to run for a fixed thread count (not across thread counts: Eigen's blocking depends on it).
// gemm_count() counts Eigen GEMM calls: one per 2-D product, i.e. one per batch entry of a batched product.
// float GEMMs run Eigen's AVX2 + FMA build (ops/matmul_avx2.cpp) when engine/cpu_isa.h says the CPU has it.
// Not here: BLAS backends, integer matmul. A matrix view Eigen cannot map (e.g. an expanded column) is copied once.
#include <algorithm>
#include <atomic>
#include <type_traits>

#include <Eigen/Core>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cuda/kernels.h"
#include "engine/cpu_isa.h"
#include "ops/matmul_avx2.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace ssmtune::ops {

namespace {

std::atomic<uint64_t> g_gemm_count{0};

template <class T>
using RowMajorMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstMatrixMap = Eigen::Map<const RowMajorMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using MatrixMap = Eigen::Map<RowMajorMatrix<T>>;

int max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// How a logical [rows, cols] matrix sits in memory: a row-major matrix with leading dimension ld, used as is,
// or (transposed) a row-major [cols, rows] matrix read as its transpose.
struct MatrixLayout {
    int64_t rows = 0, cols = 0, ld = 1;
    bool transposed = false;
};

// Layout of a matrix with element strides (row_stride, col_stride), or false when Eigen cannot map it.
bool find_layout(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride, MatrixLayout& m) {
    m.rows = rows;
    m.cols = cols;
    if ((cols <= 1 || col_stride == 1) && (rows <= 1 || row_stride >= std::max<int64_t>(cols, 1))) {
        m.transposed = false;
        m.ld = rows <= 1 ? std::max<int64_t>(cols, 1) : row_stride;
        return true;
    }
    if ((rows <= 1 || row_stride == 1) && (cols <= 1 || col_stride >= std::max<int64_t>(rows, 1))) {
        m.transposed = true;
        m.ld = cols <= 1 ? std::max<int64_t>(rows, 1) : col_stride;
        return true;
    }
    return false;
}

// Row-major index (or element offset, given `strides`) of each entry of `batch` in a tensor whose batch dims
// are `own` (right-aligned against `batch`; size-1 and missing dims broadcast).
std::vector<int64_t> entry_offsets(const Shape& own, const Shape& strides, const Shape& batch) {
    const int64_t n = shape_numel(batch), rank = int64_t(batch.size()), own_rank = int64_t(own.size());
    std::vector<int64_t> offs(size_t(n), 0);
    for (int64_t i = 0; i < n; ++i) {
        int64_t rest = i, off = 0;
        for (int64_t d = rank - 1; d >= 0; --d) {
            const int64_t idx = rest % batch[size_t(d)];
            rest /= batch[size_t(d)];
            const int64_t od = d - (rank - own_rank);
            if (od >= 0 && own[size_t(od)] != 1) off += idx * strides[size_t(od)];
        }
        offs[size_t(i)] = off;
    }
    return offs;
}

// One GEMM operand: logical matrices t[..., rows, cols], where each batch entry starts, and how to map it.
struct Operand {
    Tensor keep;                 // the (detached) view, or a contiguous copy when the view was not mappable
    MatrixLayout layout;
    std::vector<int64_t> entry;  // element offset of each batch entry from keep's first element
};

Operand make_operand(const Tensor& t, const Shape& batch) {
    Operand op;
    op.keep = t.detach();
    const int64_t r = t.dim();
    const int64_t rows = t.shape()[size_t(r - 2)], cols = t.shape()[size_t(r - 1)];
    if (!find_layout(rows, cols, t.strides()[size_t(r - 2)], t.strides()[size_t(r - 1)], op.layout)) {
        op.keep = op.keep.contiguous();  // e.g. an expanded column: no row-major reading of it exists
        find_layout(rows, cols, cols, 1, op.layout);
    }
    const Shape own(t.shape().begin(), t.shape().end() - 2);
    const Shape own_strides(op.keep.strides().begin(), op.keep.strides().end() - 2);
    op.entry = entry_offsets(own, own_strides, batch);
    return op;
}

// The last two dims swapped, as a raw view (no autograd).
Tensor transpose_last2(const Tensor& t) {
    Shape sh = t.shape(), st = t.strides();
    std::swap(sh[sh.size() - 2], sh[sh.size() - 1]);
    std::swap(st[st.size() - 2], st[st.size() - 1]);
    return t.detach().as_strided(sh, st, t.offset());
}

// out[M, N] (row-major, contiguous) += A[M, K] @ B[K, N]: one Eigen GEMM, counted.
template <class T>
void gemm_accumulate(T* out, const T* a, const MatrixLayout& la, const T* b, const MatrixLayout& lb) {
    const int64_t M = la.rows, K = la.cols, N = lb.cols;
    if (M == 0 || N == 0 || K == 0) return;
    g_gemm_count.fetch_add(1, std::memory_order_relaxed);
#if SSMTUNE_CPU_DISPATCH
    if constexpr (std::is_same<T, float>::value)
        if (cpu_isa() == CpuIsa::avx2)
            return detail::gemm_accumulate_avx2(out, M, N, K, a, la.ld, la.transposed, b, lb.ld, lb.transposed);
#endif
    MatrixMap<T> o(out, M, N);
    auto with_b = [&](const auto& am) {
        if (lb.transposed) o.noalias() += am * ConstMatrixMap<T>(b, N, K, Eigen::OuterStride<>(lb.ld)).transpose();
        else o.noalias() += am * ConstMatrixMap<T>(b, K, N, Eigen::OuterStride<>(lb.ld));
    };
    if (la.transposed) with_b(ConstMatrixMap<T>(a, K, M, Eigen::OuterStride<>(la.ld)).transpose());
    else with_b(ConstMatrixMap<T>(a, M, K, Eigen::OuterStride<>(la.ld)));
}

// out (zeros [n_out, M, N] contiguous) [target[i]] += A[i] @ B[i] for every batch entry i. Entries that share
// an output matrix (a gradient summed over broadcast dims) are added in increasing i by one thread.
template <class T>
void batched_gemm(T* out, const Operand& A, const Operand& B, const std::vector<int64_t>& target, int64_t n_out) {
    const int64_t M = A.layout.rows, N = B.layout.cols;
    std::vector<std::vector<int64_t>> groups(static_cast<size_t>(n_out));
    for (size_t i = 0; i < target.size(); ++i) groups[size_t(target[i])].push_back(int64_t(i));
    const T* pa = A.keep.data<T>();
    const T* pb = B.keep.data<T>();
    auto run_group = [&](int64_t o) {
        for (int64_t i : groups[size_t(o)])
            gemm_accumulate<T>(out + o * M * N, pa + A.entry[size_t(i)], A.layout, pb + B.entry[size_t(i)], B.layout);
    };
    if (n_out > 1 && n_out >= max_threads()) {
        // Eigen sees it is inside a parallel region and stays single-threaded per GEMM.
#pragma omp parallel for schedule(static)
        for (int64_t o = 0; o < n_out; ++o) run_group(o);
    } else {
        for (int64_t o = 0; o < n_out; ++o) run_group(o);
    }
}

// The GPU version of batched_product: one cuBLAS strided-batched GEMM. An operand whose batch entries are not
// evenly spaced (a partly broadcast batch) is materialised to [batch, rows, cols]; products that a gradient sums
// over broadcast dims are computed per entry, then summed by sum_to_shape (deterministic, no atomics).
Tensor batched_product_cuda(const Tensor& a, const Tensor& b, const Shape& batch, const Shape& out_shape) {
    const int64_t n = shape_numel(batch);
    // (layout, pointer, stride between entries) of an operand, with evenly spaced entries.
    auto prepare = [&](const Tensor& t, Operand& op, int64_t& stride) {
        op = make_operand(t, batch);
        stride = n > 1 ? op.entry[1] - op.entry[0] : 0;
        for (int64_t i = 0; i < n; ++i)
            if (op.entry[size_t(i)] != i * stride) {
                Shape full = batch;
                full.push_back(t.size(-2));
                full.push_back(t.size(-1));
                op = make_operand(t.detach().expand(full).contiguous(), batch);
                stride = t.size(-2) * t.size(-1);
                break;
            }
    };
    Operand A, B;
    int64_t stride_a = 0, stride_b = 0;
    prepare(a, A, stride_a);
    prepare(b, B, stride_b);
    const int64_t M = A.layout.rows, K = A.layout.cols, N = B.layout.cols;
    const Shape out_batch(out_shape.begin(), out_shape.end() - 2);
    const bool summed = shape_numel(out_batch) != n;
    Shape full_shape = batch;
    full_shape.push_back(M);
    full_shape.push_back(N);
    Tensor out = Tensor::empty(summed ? full_shape : out_shape, a.dtype(), a.device());
    cuda::gemm(a.device().index, a.dtype(), A.layout.transposed, B.layout.transposed, M, N, K, A.keep.raw_data(),
               A.layout.ld, stride_a, B.keep.raw_data(), B.layout.ld, stride_b, out.raw_data(), M * N, n, false);
    g_gemm_count.fetch_add(uint64_t(n), std::memory_order_relaxed);
    return summed ? sum_to_shape(out, out_shape) : out;
}

// Σ over batch of A[i] @ B[i], written into a new tensor of out_shape (out_shape's batch dims broadcast
// against `batch`). A, B: any strided views with batch dims broadcastable to `batch`.
Tensor batched_product(const Tensor& a, const Tensor& b, const Shape& batch, const Shape& out_shape) {
    if (a.device().is_cuda()) return batched_product_cuda(a, b, batch, out_shape);
    Tensor out = Tensor::zeros(out_shape, a.dtype());
    const Operand A = make_operand(a, batch), B = make_operand(b, batch);
    const Shape out_batch(out_shape.begin(), out_shape.end() - 2);
    const std::vector<int64_t> target = entry_offsets(out_batch, contiguous_strides(out_batch), batch);
    dispatch_float(a.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        batched_gemm<T>(out.data<T>(), A, B, target, shape_numel(out_batch));
    });
    return out;
}

// a[..., M, K] @ b[..., K, N], both of rank >= 2, K already checked.
Tensor matmul_nd(const Tensor& a, const Tensor& b) {
    const Shape a_batch(a.shape().begin(), a.shape().end() - 2), b_batch(b.shape().begin(), b.shape().end() - 2);
    const size_t rank = std::max(a_batch.size(), b_batch.size());
    Shape batch(rank);
    for (size_t i = 0; i < rank; ++i) {
        const int64_t da = i < rank - a_batch.size() ? 1 : a_batch[i - (rank - a_batch.size())];
        const int64_t db = i < rank - b_batch.size() ? 1 : b_batch[i - (rank - b_batch.size())];
        SSMTUNE_CHECK(da == db || da == 1 || db == 1, "matmul: batch dims of a ", a.describe(), " and b ",
                      b.describe(), " cannot be broadcast together (", da, " vs ", db,
                      "); fix: make the leading dims equal or 1");
        batch[i] = da == 1 ? db : da;
    }
    Shape out_shape = batch;
    out_shape.push_back(a.size(-2));
    out_shape.push_back(b.size(-1));
    Tensor out = batched_product(a, b, batch, out_shape);
    // da = g b^T (summed to a's batch), db = a^T g (summed to b's batch)
    autograd::record("matmul", {a, b}, {out},
                     [a = a.detach(), b = b.detach(), batch](const auto& g, const auto& needs) {
                         return std::vector<Tensor>{
                             needs[0] ? batched_product(g[0], transpose_last2(b), batch, a.shape()) : Tensor(),
                             needs[1] ? batched_product(transpose_last2(a), g[0], batch, b.shape()) : Tensor()};
                     });
    return out;
}

}  // namespace

uint64_t gemm_count() { return g_gemm_count.load(std::memory_order_relaxed); }

Tensor matmul(const Tensor& a, const Tensor& b) {
    check_float_input(a, "matmul", "a", kCudaKernel);
    check_float_input(b, "matmul", "b", kCudaKernel);
    check_same_kind(a, b, "matmul");
    SSMTUNE_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: both operands need at least one dim, got a ", a.describe(),
                  " and b ", b.describe(), "; fix: use ops::mul for scalars");
    const int64_t ka = a.size(-1), kb = b.dim() == 1 ? b.size(0) : b.size(-2);
    SSMTUNE_CHECK(ka == kb, "matmul: a ", a.describe(), " and b ", b.describe(), " do not chain (a's last dim ", ka,
                  " vs b's ", b.dim() == 1 ? "only" : "second-to-last", " dim ", kb,
                  "); fix: transpose an operand or check the shapes");
    // NumPy's 1-D rules: a[K] is [1, K] and b[K] is [K, 1], the added dim removed from the result.
    if (a.dim() == 1 && b.dim() == 1) return matmul_nd(a.unsqueeze(0), b.unsqueeze(1)).reshape({});
    if (a.dim() == 1) return matmul_nd(a.unsqueeze(0), b).squeeze(-2);
    if (b.dim() == 1) return matmul_nd(a, b.unsqueeze(1)).squeeze(-1);
    // a[..., M, K] @ b[K, N] with a contiguous: fold a's batch into rows, one GEMM (and one GEMM for db).
    if (a.dim() > 2 && b.dim() == 2 && a.is_contiguous() && ka > 0) {
        Shape out_shape = a.shape();
        out_shape.back() = b.size(1);
        return matmul_nd(a.reshape({-1, ka}), b).reshape(out_shape);
    }
    return matmul_nd(a, b);
}

namespace {

// dbias[j] = Σ_r g[r, j], g contiguous [R, O]: column blocks split over threads, rows summed in order.
template <class T>
void column_sums(const T* g, int64_t R, int64_t O, T* out) {
    constexpr int64_t kBlock = 64;
    const int64_t blocks = (O + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (R * O > kParallelGrain)
    for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t j0 = blk * kBlock, j1 = std::min(O, j0 + kBlock);
        double acc[kBlock] = {};
        for (int64_t r = 0; r < R; ++r)
            for (int64_t j = j0; j < j1; ++j) acc[j - j0] += double(g[r * O + j]);
        for (int64_t j = j0; j < j1; ++j) out[j] = T(acc[j - j0]);
    }
}

// out[R, out_f] = bias + x2 w^T: the bias rows, then one Eigen GEMM accumulated onto them (w^T mapped, not copied).
void linear_forward_cpu(Tensor& out, const Tensor& x2, const Tensor& w, const Tensor& bias, int64_t R, int64_t out_f) {
    const Operand X = make_operand(x2, {}), Wt = make_operand(transpose_last2(w), {});
    dispatch_float(out.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        T* po = out.data<T>();
        if (bias.defined()) {
            const Tensor bc = bias.detach().contiguous();
            const T* pb = bc.data<T>();
            for (int64_t r = 0; r < R; ++r) std::copy(pb, pb + out_f, po + r * out_f);
        } else {
            std::fill(po, po + R * out_f, T(0));
        }
        gemm_accumulate<T>(po, X.keep.data<T>(), X.layout, Wt.keep.data<T>(), Wt.layout);
    });
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
    check_float_input(x, "linear", "x", kCudaKernel);
    check_float_input(w, "linear", "w", kCudaKernel);
    check_same_kind(x, w, "linear");
    SSMTUNE_CHECK(w.dim() == 2, "linear: weight must be [out, in], got ", w.describe());
    SSMTUNE_CHECK(x.dim() >= 1 && x.size(-1) == w.size(1), "linear: x ", x.describe(), " does not match weight ",
                  w.describe(), " (x's last dim must equal the weight's in = ", w.size(1),
                  "); fix: check the layer's in_features");
    const int64_t in = w.size(1), out_f = w.size(0);
    const int64_t R = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
    if (bias.defined()) {
        check_float_input(bias, "linear", "bias", kCudaKernel);
        check_same_kind(x, bias, "linear");
        SSMTUNE_CHECK(bias.dim() == 1 && bias.size(0) == out_f, "linear: bias ", bias.describe(),
                      " must be [out] = [", out_f, "] for weight ", w.describe());
    }
    // x2[R, in] (a view when x is contiguous), w^T mapped as a transpose: no copy of the weight.
    const Tensor x2 = x.detach().reshape({R, in});
    Shape out_shape = x.shape();
    out_shape.back() = out_f;
    Tensor out;
    if (x.device().is_cuda()) {  // one GEMM, then the bias broadcast over rows
        out = batched_product(x2, transpose_last2(w), {}, {R, out_f});
        if (bias.defined()) out = add(out, bias.detach());
        out = out.reshape(out_shape);
    } else {
        out = Tensor::empty(out_shape, x.dtype());
        linear_forward_cpu(out, x2, w, bias, R, out_f);
    }
    // dx = g w (one GEMM), dw = g^T x (one GEMM, skipped for a frozen weight), dbias = column sums of g.
    autograd::record("linear", {x, w, bias}, {out},
                     [x2, w = w.detach(), x_shape = x.shape(), R, in, out_f](const auto& g, const auto& needs) {
                         const Tensor g2 = g[0].reshape({R, out_f});
                         std::vector<Tensor> grads(3);
                         if (needs[0]) grads[0] = batched_product(g2, w, {}, {R, in}).reshape(x_shape);
                         if (needs[1]) grads[1] = batched_product(transpose_last2(g2), x2, {}, {out_f, in});
                         if (needs[2] && g2.device().is_cuda()) {
                             grads[2] = sum(g2, {0});
                         } else if (needs[2]) {
                             const Tensor gc = g2.contiguous();
                             grads[2] = Tensor::empty({out_f}, g2.dtype());
                             dispatch_float(g2.dtype(), [&](auto tag) {
                                 using T = typename decltype(tag)::type;
                                 column_sums<T>(gc.data<T>(), R, out_f, grads[2].data<T>());
                             });
                         }
                         return grads;
                     });
    return out;
}

}  // namespace ssmtune::ops
