// Structured products for SURM (Sehanobish et al. 2024; reference/peft-methods.md §5): block circulant,
// skew-circulant and symmetric Toeplitz times x with hand-written backward, the Kronecker and LDR composites,
// and the dense materializers (the specification the fast paths are tested against).
//
// Each product convolves length-b blocks with our radix-2 FFT (ops/fft.h) of size N = next_pow2(2b − 1), big
// enough for the linear convolution `lin` without wrap-around; the cyclic or negacyclic result is folded by hand:
//   circulant   y[r] = lin[r] + lin[r + b]        skew   y[r] = lin[r] − lin[r + b]        (for r + b ≤ 2b − 2)
//   Toeplitz    the kernel h[m] = v[|m|] sits at index m mod N, so y = (h ⊛ x)[0, n) directly.
// Backward uses correlations p = F⁻¹(conj(F a) ⊙ F g), p[m] = Σ_t a[t] g[t + m] (negative lags at N + m):
//   circ/skew   dx[t] = p_c[t] ± p_c[t − b],   dc[k] = p_x[k] ± p_x[k − b]   (second terms for t, k ≥ 1)
//   Toeplitz    dx = T g (T symmetric),        dv[k] = p_x[k] + p_x[−k] (k ≥ 1), dv[0] = p_x[0]
// All in double. Two real sequences share one complex FFT (a + i·b); kernel spectra are transformed once per
// call, x and g blocks once per row, and Σ_j K_ij ⊙ X_j is formed in the frequency domain (O((P+Q)·N log N +
// P·Q·N) per row). Rows run in parallel; the parameter gradient is summed per fixed chunk of rows and the
// chunks are added in order, so results are bit-identical for any thread count (no atomics).
// Not here: the SURM adapter (peft/), CUDA kernels, a real-input FFT, Toeplitz blocks (P = Q = 1 only).
#include "ops/structured_matrix.h"

#include <algorithm>
#include <complex>
#include <cstdlib>
#include <vector>

#include "ops/fft.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace ssmtune::ops {

namespace {

using cplx = std::complex<double>;
using cvec = std::vector<cplx>;

enum class Kind { Circulant, Skew, Toeplitz };
enum class Fold { Output, Adjoint, Param };  // y from lin, dx from p_c, dparam from p_x

// Row chunks of the parameter-gradient reduction: a constant, so the summation order ignores the thread count.
constexpr int64_t kMaxChunks = 32;

// Spectra of `count` real sequences of length len stored back to back at src, zero-padded to N, written to
// out[k·N, (k+1)·N). Two sequences share one FFT: with Z = F(a + i·b), F a = (Z_f + conj Z_−f)/2 and
// F b = −i (Z_f − conj Z_−f)/2. work has N entries.
void real_spectra(const double* src, int64_t count, int64_t len, int64_t N, cplx* out, cvec& work) {
    for (int64_t k = 0; k < count; k += 2) {
        const bool pair = k + 1 < count;
        std::fill(work.begin(), work.end(), cplx(0.0, 0.0));
        for (int64_t t = 0; t < len; ++t)
            work[size_t(t)] = cplx(src[k * len + t], pair ? src[(k + 1) * len + t] : 0.0);
        fft_inplace(work, false);
        cplx* a = out + k * N;
        if (!pair) {
            std::copy(work.begin(), work.end(), a);
            continue;
        }
        cplx* b = a + N;
        for (int64_t f = 0; f < N; ++f) {
            const cplx z = work[size_t(f)], zc = std::conj(work[size_t((N - f) & (N - 1))]);
            a[f] = 0.5 * (z + zc);
            b[f] = cplx(0.0, -0.5) * (z - zc);
        }
    }
}

// Folds one real sequence (p[2m], i.e. the real or the imaginary part of an inverse FFT) into the length-b
// result `out`, as in the file comment.
void fold(Kind kind, Fold what, int64_t b, int64_t N, const double* p, double* out) {
    const auto at = [p](int64_t m) { return p[2 * m]; };
    const double sign = kind == Kind::Skew ? -1.0 : 1.0;
    for (int64_t t = 0; t < b; ++t) {
        double v = at(t);
        if (kind == Kind::Toeplitz) {
            if (what == Fold::Param && t > 0) v += at(N - t);
        } else if (what == Fold::Output) {
            if (t < b - 1) v += sign * at(t + b);
        } else if (t > 0) {
            v += sign * at(N + t - b);
        }
        out[t] = v;
    }
}

// work holds A + i·B with A, B spectra of real sequences: inverse FFT, then Re folds into first, Im into second.
void inverse_fold(cvec& work, Kind kind, Fold what, int64_t b, int64_t N, double* first, double* second) {
    fft_inplace(work, true);
    const double* p = reinterpret_cast<const double*>(work.data());
    fold(kind, what, b, N, p, first);
    if (second) fold(kind, what, b, N, p + 1, second);
}

// One structured operator: P·Q kernels of length b (Toeplitz: P = Q = 1 and the kernel is v).
class Structured {
public:
    // param [P, Q, b] in double, or null when only the parameter gradient is wanted (no kernel spectra needed).
    Structured(Kind kind, int64_t P, int64_t Q, int64_t b, const std::vector<double>* param)
        : kind_(kind), P_(P), Q_(Q), b_(b), N_(next_pow2(2 * b - 1)) {
        if (!param) return;
        spec_.resize(size_t(P * Q * N_));
        cvec work(static_cast<size_t>(N_));
        if (kind == Kind::Toeplitz) {  // h[m] = v[|m|] at m mod N
            for (int64_t m = 0; m < b; ++m) work[size_t(m)] = (*param)[size_t(m)];
            for (int64_t m = 1; m < b; ++m) work[size_t(N_ - m)] = (*param)[size_t(m)];
            fft_inplace(work, false);
            std::copy(work.begin(), work.end(), spec_.begin());
        } else {
            real_spectra(param->data(), P * Q, b, N_, spec_.data(), work);
        }
    }

    // x [rows, Q·b] -> y [rows, P·b].
    std::vector<double> forward(const std::vector<double>& x, int64_t rows) const {
        const cvec packed = pack(false);
        std::vector<double> y(size_t(rows * P_ * b_));
#pragma omp parallel if (rows * (P_ + Q_ + P_ * Q_) * N_ > kParallelGrain)
        {
            cvec work(static_cast<size_t>(N_)), fx(size_t(Q_ * N_));
#pragma omp for schedule(static)
            for (int64_t r = 0; r < rows; ++r) {
                real_spectra(x.data() + r * Q_ * b_, Q_, b_, N_, fx.data(), work);
                apply(packed, P_, Q_, fx.data(), Fold::Output, y.data() + r * P_ * b_, work);
            }
        }
        return y;
    }

    // g [rows, P·b] -> dx [rows, Q·b] when dx is given (needs the kernel), and dparam [P·Q·b] summed over rows
    // when dparam is given (needs x [rows, Q·b]).
    void backward(const std::vector<double>& g, const std::vector<double>* x, int64_t rows, std::vector<double>* dx,
                  std::vector<double>* dparam) const {
        const cvec packed = dx ? pack(true) : cvec();
        const int64_t PQ = P_ * Q_, chunks = std::min(rows, kMaxChunks);
        std::vector<double> partial(dparam ? size_t(chunks * PQ * b_) : 0);
        if (dx) dx->assign(size_t(rows * Q_ * b_), 0.0);
#pragma omp parallel if (rows * (P_ + Q_ + 2 * PQ) * N_ > kParallelGrain)
        {
            cvec work(static_cast<size_t>(N_)), fg(size_t(P_ * N_)), fx(dparam ? size_t(Q_ * N_) : 0), acc(dparam ? size_t(PQ * N_) : 0);
#pragma omp for schedule(static)
            for (int64_t c = 0; c < chunks; ++c) {
                std::fill(acc.begin(), acc.end(), cplx(0.0, 0.0));
                for (int64_t r = rows * c / chunks; r < rows * (c + 1) / chunks; ++r) {
                    real_spectra(g.data() + r * P_ * b_, P_, b_, N_, fg.data(), work);
                    if (dx) apply(packed, Q_, P_, fg.data(), Fold::Adjoint, dx->data() + r * Q_ * b_, work);
                    if (!dparam) continue;
                    real_spectra(x->data() + r * Q_ * b_, Q_, b_, N_, fx.data(), work);
                    for (int64_t i = 0; i < P_; ++i)
                        for (int64_t j = 0; j < Q_; ++j) {
                            cplx* a = acc.data() + (i * Q_ + j) * N_;
                            const cplx *sx = fx.data() + j * N_, *sg = fg.data() + i * N_;
                            for (int64_t f = 0; f < N_; ++f) a[f] += std::conj(sx[f]) * sg[f];
                        }
                }
                if (!dparam) continue;
                double* out = partial.data() + c * PQ * b_;
                for (int64_t t = 0; t < PQ; t += 2) {  // two kernels per inverse FFT
                    const bool pair = t + 1 < PQ;
                    for (int64_t f = 0; f < N_; ++f)
                        work[size_t(f)] = acc[size_t(t * N_ + f)] +
                                          (pair ? cplx(0.0, 1.0) * acc[size_t((t + 1) * N_ + f)] : cplx(0.0, 0.0));
                    inverse_fold(work, kind_, Fold::Param, b_, N_, out + t * b_, pair ? out + (t + 1) * b_ : nullptr);
                }
            }
        }
        if (!dparam) return;
        dparam->assign(size_t(PQ * b_), 0.0);
        for (int64_t c = 0; c < chunks; ++c)  // chunks in order: the fixed reduction
            for (int64_t e = 0; e < PQ * b_; ++e) (*dparam)[size_t(e)] += partial[size_t(c * PQ * b_ + e)];
    }

private:
    // Kernel spectra packed two output blocks at a time: packed[(o/2)·ins + w] = K(o, w) + i·K(o+1, w), with
    // K(o, w) = spec[o, w] (forward: outputs are the P row blocks) or conj(spec[w, o]) (adjoint: the Q blocks).
    cvec pack(bool adjoint) const {
        const int64_t outs = adjoint ? Q_ : P_, ins = adjoint ? P_ : Q_;
        const auto kernel = [&](int64_t o, int64_t w, int64_t f) {
            return adjoint ? std::conj(spec_[size_t((w * Q_ + o) * N_ + f)]) : spec_[size_t((o * Q_ + w) * N_ + f)];
        };
        cvec packed(size_t((outs + 1) / 2 * ins * N_));
        for (int64_t o = 0; o < outs; o += 2)
            for (int64_t w = 0; w < ins; ++w)
                for (int64_t f = 0; f < N_; ++f)
                    packed[size_t(((o / 2) * ins + w) * N_ + f)] =
                        kernel(o, w, f) + (o + 1 < outs ? cplx(0.0, 1.0) * kernel(o + 1, w, f) : cplx(0.0, 0.0));
        return packed;
    }

    // out (outs blocks of b) = fold(F⁻¹ Σ_w packed(o, w) ⊙ spectra_w): one inverse FFT per two output blocks.
    void apply(const cvec& packed, int64_t outs, int64_t ins, const cplx* spectra, Fold what, double* out,
               cvec& work) const {
        for (int64_t o = 0; o < outs; o += 2) {
            std::fill(work.begin(), work.end(), cplx(0.0, 0.0));
            for (int64_t w = 0; w < ins; ++w) {
                const cplx *k = packed.data() + ((o / 2) * ins + w) * N_, *s = spectra + w * N_;
                for (int64_t f = 0; f < N_; ++f) work[size_t(f)] += k[f] * s[f];
            }
            inverse_fold(work, kind_, what, b_, N_, out + o * b_, o + 1 < outs ? out + (o + 1) * b_ : nullptr);
        }
    }

    Kind kind_;
    int64_t P_, Q_, b_, N_;
    cvec spec_;  // [P, Q, N] kernel spectra
};

// param [P, Q, b] (any shape with P·Q·b elements), x [..., Q·b] -> [..., P·b], recorded as `op`.
Tensor structured_product(const char* op, Kind kind, const Tensor& param, int64_t P, int64_t Q, int64_t b,
                          const Tensor& x) {
    const int64_t rows = x.numel() / (Q * b);
    Shape out_shape = x.shape();
    out_shape.back() = P * b;
    const std::vector<double> pv = param.to_vector<double>();
    const Structured plan(kind, P, Q, b, &pv);
    Tensor out = Tensor::from_vector<double>(plan.forward(x.to_vector<double>(), rows), out_shape).to(x.dtype());
    // dx needs only the kernel and dparam only x: keep just those (detached views, no copies).
    const Tensor keep_param = x.requires_grad() ? param.detach() : Tensor();
    const Tensor keep_x = param.requires_grad() ? x.detach() : Tensor();
    autograd::record(op, {param, x}, {out},
                     [keep_param, keep_x, kind, P, Q, b, rows, pshape = param.shape(), xshape = x.shape(),
                      dtype = x.dtype()](const auto& grads, const auto& needs) {
                         const std::vector<double> g = grads[0].template to_vector<double>();
                         const std::vector<double> kv = needs[1] ? keep_param.to_vector<double>() : std::vector<double>();
                         const std::vector<double> xv = needs[0] ? keep_x.to_vector<double>() : std::vector<double>();
                         std::vector<double> dparam, dx;
                         const Structured back(kind, P, Q, b, needs[1] ? &kv : nullptr);
                         back.backward(g, needs[0] ? &xv : nullptr, rows, needs[1] ? &dx : nullptr,
                                       needs[0] ? &dparam : nullptr);
                         return std::vector<Tensor>{
                             needs[0] ? Tensor::from_vector<double>(dparam, pshape).to(dtype) : Tensor(),
                             needs[1] ? Tensor::from_vector<double>(dx, xshape).to(dtype) : Tensor()};
                     });
    return out;
}

void check_pair(const char* op, const Tensor& param, const char* param_name, const Tensor& x) {
    check_float_input(param, op, param_name, kCudaKernel);
    check_float_input(x, op, "x", kCudaKernel);
    check_same_kind(param, x, op);
}

// On a GPU the fused products run as x @ denseᵀ: the dense materializer (index gathers) and one cuBLAS GEMM, ops
// the GPU has kernels for, with their autograd backward. O(out·in) per row instead of the FFT's O(n log n): the cost
// of the adapted layer's own GEMM. The CPU keeps the FFT path.
Tensor dense_product(const Tensor& dense, const Tensor& x) { return linear(x, dense, Tensor()); }

// x must be [..., want]; the message names both shapes and the fix.
void check_last_dim(const char* op, const Tensor& x, int64_t want, const char* want_name, const Tensor& param,
                    const char* param_name, const char* fix) {
    SSMTUNE_CHECK(x.dim() >= 1 && x.size(-1) == want, op, ": x last dim ", x.dim() >= 1 ? x.size(-1) : 0, " is not ",
                  want_name, " = ", want, " (", param_name, " ", shape_str(param.shape()), ", x ",
                  shape_str(x.shape()), "); fix: ", fix);
}

// A 1-D, non-empty parameter of length n (skew-circulant s, Toeplitz v).
void check_vector(const char* op, const Tensor& v, const char* name) {
    SSMTUNE_CHECK(v.dim() == 1 && v.size(0) > 0, op, ": ", name, " must be [n] with n >= 1, got ", v.describe(),
                  "; fix: pass the first column as a 1-D tensor");
}

// Blocks [k, n] of an LDR matrix (g or s), both non-empty.
void check_ldr(const char* op, const Tensor& g, const Tensor& s) {
    check_float_input(g, op, "g", kCudaKernel);
    check_float_input(s, op, "s", kCudaKernel);
    check_same_kind(g, s, op);
    SSMTUNE_CHECK(g.dim() == 2 && g.size(0) > 0 && g.size(1) > 0, op, ": g must be [k, n] with k, n >= 1, got ",
                  g.describe(), "; fix: stack the k circulant first columns into a [k, n] tensor");
    SSMTUNE_CHECK(s.shape() == g.shape(), op, ": s ", shape_str(s.shape()), " must have g's shape ",
                  shape_str(g.shape()), "; fix: one skew-circulant column per circulant column, both of length n");
}

// Gathers param (flattened) at idx, times sign where negative, into `shape`: the plain-loop definition written as
// an index map, which also makes the materializer differentiable.
Tensor gather_dense(const Tensor& param, const std::vector<int64_t>& idx, const std::vector<double>& sign,
                    const Shape& shape) {
    const int64_t n = int64_t(idx.size());
    Tensor w = index_select(param.reshape({-1}), 0, Tensor::from_vector<int64_t>(idx, {n}).to(param.device()));
    if (std::any_of(sign.begin(), sign.end(), [](double v) { return v < 0; }))
        w = mul(w, Tensor::from_vector<double>(sign, {n}).to(param.dtype()).to(param.device()));
    return w.reshape(shape);
}

void check_block_param(const char* op, const Tensor& c) {
    SSMTUNE_CHECK(c.dim() == 3 && c.size(0) > 0 && c.size(1) > 0 && c.size(2) > 0, op,
                  ": c must be [P, Q, b] with P, Q, b >= 1 (P·Q circulant first columns of length b), got ",
                  c.describe(), "; fix: for an out x in layer use c [out/b, in/b, b] with b dividing both");
}

}  // namespace

// ---- fused products ----

Tensor block_circulant_matmul(const Tensor& c, const Tensor& x) {
    const char* op = "block_circulant_matmul";
    check_pair(op, c, "c", x);
    check_block_param(op, c);
    const int64_t P = c.size(0), Q = c.size(1), b = c.size(2);
    check_last_dim(op, x, Q * b, "Q*b", c, "c", "x must be [..., Q*b]; for in features d choose c [P, d / b, b]");
    if (x.device().is_cuda()) return dense_product(block_circulant_dense(c), x);
    return structured_product(op, Kind::Circulant, c, P, Q, b, x);
}

Tensor skew_circulant_matmul(const Tensor& s, const Tensor& x) {
    const char* op = "skew_circulant_matmul";
    check_pair(op, s, "s", x);
    check_vector(op, s, "s");
    check_last_dim(op, x, s.size(0), "n", s, "s", "s must have as many entries as x's last dim");
    if (x.device().is_cuda()) return dense_product(skew_circulant_dense(s), x);
    return structured_product(op, Kind::Skew, s, 1, 1, s.size(0), x);
}

Tensor symmetric_toeplitz_matmul(const Tensor& v, const Tensor& x) {
    const char* op = "symmetric_toeplitz_matmul";
    check_pair(op, v, "v", x);
    check_vector(op, v, "v");
    check_last_dim(op, x, v.size(0), "n", v, "v", "v must have as many entries as x's last dim");
    if (x.device().is_cuda()) return dense_product(symmetric_toeplitz_dense(v), x);
    return structured_product(op, Kind::Toeplitz, v, 1, 1, v.size(0), x);
}

// ---- composites ----

Tensor kronecker_matmul(const Tensor& Bk, const Tensor& Ak, const Tensor& x) {
    const char* op = "kronecker_matmul";
    check_float_input(Bk, op, "Bk", kCudaKernel);
    check_pair(op, Ak, "Ak", x);
    check_same_kind(Bk, x, op);
    SSMTUNE_CHECK(Bk.dim() == 2 && Ak.dim() == 2, op, ": Bk must be [p, q] and Ak [m, k], got Bk ", Bk.describe(),
                  " and Ak ", Ak.describe(), "; fix: pass both Kronecker factors as matrices");
    const int64_t p = Bk.size(0), q = Bk.size(1), m = Ak.size(0), k = Ak.size(1);
    SSMTUNE_CHECK(q > 0 && k > 0, op, ": Bk ", shape_str(Bk.shape()), " and Ak ", shape_str(Ak.shape()),
                  " must have non-empty columns; fix: ΔW = Bk ⊗ Ak maps q*k inputs, give both factors >= 1 column");
    SSMTUNE_CHECK(x.dim() >= 1 && x.size(-1) == q * k, op, ": x last dim ", x.dim() >= 1 ? x.size(-1) : 0,
                  " is not q*k = ", q * k, " (Bk ", shape_str(Bk.shape()), ", Ak ", shape_str(Ak.shape()), ", x ",
                  shape_str(x.shape()), "); fix: choose Bk [p, q], Ak [m, k] with q*k = in features");
    Shape lead(x.shape().begin(), x.shape().end() - 1);
    const int64_t rows = shape_numel(lead);
    // Z = X Akᵀ as one GEMM over all rows ([rows·q, k] @ [k, m]), then Y = Bk Z per row ([p, q] @ [q, m]).
    Tensor z = matmul(x.reshape({rows * q, k}), Ak.transpose(0, 1)).reshape({rows, q, m});
    Tensor y = matmul(Bk, z);  // [rows, p, m]
    lead.push_back(p * m);
    return y.reshape(lead);
}

Tensor ldr_matmul(const Tensor& g, const Tensor& s, const Tensor& x) {
    const char* op = "ldr_matmul";
    check_ldr(op, g, s);
    check_pair(op, g, "g", x);
    const int64_t k = g.size(0), n = g.size(1);
    check_last_dim(op, x, n, "n", g, "g", "g and s must be [k, n] with n = x's last dim");
    if (x.device().is_cuda()) return dense_product(ldr_dense(g, s), x);
    // z_i = skewcirc(s_i) x for all i at once (a [k, 1, n] block column: x is transformed once), then
    // y = Σ_i circ(g_i) z_i as a [1, k, n] block row. Both are the fused ops above with their own backward.
    Tensor z = structured_product("skew_circulant_matmul", Kind::Skew, s.reshape({k, 1, n}), k, 1, n, x);
    return structured_product("block_circulant_matmul", Kind::Circulant, g.reshape({1, k, n}), 1, k, n, z);
}

// ---- dense materializers ----

Tensor block_circulant_dense(const Tensor& c) {
    const char* op = "block_circulant_dense";
    check_float_input(c, op, "c", kCudaKernel);
    check_block_param(op, c);
    const int64_t P = c.size(0), Q = c.size(1), b = c.size(2);
    std::vector<int64_t> idx(size_t(P * b * Q * b));
    for (int64_t i = 0; i < P; ++i)
        for (int64_t r = 0; r < b; ++r)
            for (int64_t j = 0; j < Q; ++j)
                for (int64_t s = 0; s < b; ++s)  // circ(c[i, j])[r, s] = c[i, j, (r − s) mod b]
                    idx[size_t((i * b + r) * Q * b + j * b + s)] = (i * Q + j) * b + (r - s + b) % b;
    return gather_dense(c, idx, {}, {P * b, Q * b});
}

Tensor skew_circulant_dense(const Tensor& s) {
    const char* op = "skew_circulant_dense";
    check_float_input(s, op, "s", kCudaKernel);
    check_vector(op, s, "s");
    const int64_t n = s.size(0);
    std::vector<int64_t> idx(size_t(n * n));
    std::vector<double> sign(size_t(n * n));
    for (int64_t r = 0; r < n; ++r)
        for (int64_t t = 0; t < n; ++t) {  // s[r − t] if r >= t, else −s[n + r − t]
            idx[size_t(r * n + t)] = r >= t ? r - t : n + r - t;
            sign[size_t(r * n + t)] = r >= t ? 1.0 : -1.0;
        }
    return gather_dense(s, idx, sign, {n, n});
}

Tensor symmetric_toeplitz_dense(const Tensor& v) {
    const char* op = "symmetric_toeplitz_dense";
    check_float_input(v, op, "v", kCudaKernel);
    check_vector(op, v, "v");
    const int64_t n = v.size(0);
    std::vector<int64_t> idx(size_t(n * n));
    for (int64_t r = 0; r < n; ++r)
        for (int64_t t = 0; t < n; ++t) idx[size_t(r * n + t)] = std::abs(r - t);
    return gather_dense(v, idx, {}, {n, n});
}

Tensor kronecker_dense(const Tensor& Bk, const Tensor& Ak) {
    const char* op = "kronecker_dense";
    check_float_input(Bk, op, "Bk", kCudaKernel);
    check_float_input(Ak, op, "Ak", kCudaKernel);
    check_same_kind(Bk, Ak, op);
    SSMTUNE_CHECK(Bk.dim() == 2 && Ak.dim() == 2, op, ": Bk must be [p, q] and Ak [m, k], got Bk ", Bk.describe(),
                  " and Ak ", Ak.describe(), "; fix: pass both Kronecker factors as matrices");
    const int64_t p = Bk.size(0), q = Bk.size(1), m = Ak.size(0), k = Ak.size(1);
    // (Bk ⊗ Ak)[a·m + i, c·k + j] = Bk[a, c] · Ak[i, j]: a broadcast product laid out as [p, m, q, k].
    return mul(Bk.reshape({p, 1, q, 1}), Ak.reshape({1, m, 1, k})).reshape({p * m, q * k});
}

Tensor ldr_dense(const Tensor& g, const Tensor& s) {
    check_ldr("ldr_dense", g, s);
    const int64_t k = g.size(0), n = g.size(1);
    Tensor w;
    for (int64_t i = 0; i < k; ++i) {
        Tensor term = matmul(block_circulant_dense(g.select(0, i).reshape({1, 1, n})), skew_circulant_dense(s.select(0, i)));
        w = w.defined() ? add(w, term) : term;
    }
    return w;
}

}  // namespace ssmtune::ops
