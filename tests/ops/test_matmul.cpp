// matmul and linear: forward against a plain triple-loop GEMM (broadcast batches, 1-D rules, strided views),
// float64 gradchecks, shape errors, run-to-run determinism, the GEMM counter behind frozen weights, and the float
// GEMM at each CPU level (baseline Eigen, its AVX2 + FMA build; engine/cpu_isa.h).
#include <algorithm>
#include <array>
#include <cmath>

#include "engine/cpu_isa.h"
#include "test_util.h"

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {

// Plain triple loop in double: c[M, N] = a[M, K] @ b[K, N], row-major vectors.
std::vector<double> reference_gemm(const std::vector<double>& a, const std::vector<double>& b, int64_t M, int64_t K,
                                   int64_t N) {
    std::vector<double> c(size_t(M * N), 0.0);
    for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
            double s = 0;
            for (int64_t k = 0; k < K; ++k) s += a[size_t(m * K + k)] * b[size_t(k * N + n)];
            c[size_t(m * N + n)] = s;
        }
    return c;
}

// a[..., M, K] @ b[..., K, N] (rank >= 2) by the triple loop per batch entry, batch dims broadcast by hand.
Tensor reference_matmul(const Tensor& a, const Tensor& b) {
    const int64_t ra = a.dim(), rb = b.dim(), rank = std::max(ra, rb) - 2;
    const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
    Shape batch(size_t(rank), 1);
    for (int64_t d = 0; d < rank; ++d) {
        const int64_t da = d - (rank - (ra - 2)) >= 0 ? a.shape()[size_t(d - (rank - (ra - 2)))] : 1;
        const int64_t db = d - (rank - (rb - 2)) >= 0 ? b.shape()[size_t(d - (rank - (rb - 2)))] : 1;
        batch[size_t(d)] = std::max(da, db);
    }
    Shape out_shape = batch;
    out_shape.push_back(M);
    out_shape.push_back(N);
    Tensor out = Tensor::zeros(out_shape, DType::F64);
    const Tensor a64 = a.detach().to(DType::F64), b64 = b.detach().to(DType::F64);
    for (int64_t i = 0; i < shape_numel(batch); ++i) {
        std::vector<int64_t> idx(static_cast<size_t>(rank));
        for (int64_t d = rank - 1, rest = i; d >= 0; --d) { idx[size_t(d)] = rest % batch[size_t(d)]; rest /= batch[size_t(d)]; }
        auto own_index = [&](const Tensor& t) {
            std::vector<int64_t> ti;
            for (int64_t d = 0; d < t.dim() - 2; ++d) {
                const int64_t bd = d + (rank - (t.dim() - 2));
                ti.push_back(t.shape()[size_t(d)] == 1 ? 0 : idx[size_t(bd)]);
            }
            return ti;
        };
        std::vector<double> am, bm;
        std::vector<int64_t> ai = own_index(a64), bi = own_index(b64);
        ai.resize(ai.size() + 2);
        bi.resize(bi.size() + 2);
        for (int64_t m = 0; m < M; ++m)
            for (int64_t k = 0; k < K; ++k) { ai[ai.size() - 2] = m; ai.back() = k; am.push_back(a64.at(ai)); }
        for (int64_t k = 0; k < K; ++k)
            for (int64_t n = 0; n < N; ++n) { bi[bi.size() - 2] = k; bi.back() = n; bm.push_back(b64.at(bi)); }
        const std::vector<double> c = reference_gemm(am, bm, M, K, N);
        std::vector<int64_t> oi = idx;
        oi.resize(oi.size() + 2);
        for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < N; ++n) { oi[oi.size() - 2] = m; oi.back() = n; out.set(oi, c[size_t(m * N + n)]); }
    }
    return out;
}

// x[R, in] w[out, in]^T + bias by plain loops (x given as [..., in], flattened), as [..., out].
Tensor reference_linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
    const int64_t in = w.size(1), out_f = w.size(0), R = x.numel() / in;
    const std::vector<double> xv = x.to_vector<double>(), wv = w.to_vector<double>();
    const std::vector<double> bv = bias.defined() ? bias.to_vector<double>() : std::vector<double>(size_t(out_f), 0.0);
    std::vector<double> o(size_t(R * out_f));
    for (int64_t r = 0; r < R; ++r)
        for (int64_t j = 0; j < out_f; ++j) {
            double s = bv[size_t(j)];
            for (int64_t k = 0; k < in; ++k) s += xv[size_t(r * in + k)] * wv[size_t(j * in + k)];
            o[size_t(r * out_f + j)] = s;
        }
    Shape shape = x.shape();
    shape.back() = out_f;
    return Tensor::from_vector(o, shape);
}

}  // namespace

TEST_CASE("matmul 2-D forward matches the triple-loop reference") {
    Tensor a = Tensor::randn({5, 7}, 1, DType::F64), b = Tensor::randn({7, 3}, 2, DType::F64);
    expect_close(ops::matmul(a, b), reference_matmul(a, b), 1e-13, 1e-13, "f64 [5,7]@[7,3]");
    Tensor af = Tensor::randn({33, 65}, 3), bf = Tensor::randn({65, 17}, 4);
    Tensor cf = ops::matmul(af, bf);
    CHECK(cf.dtype() == DType::F32);
    expect_close(cf, reference_matmul(af, bf), 1e-5, 1e-5, "f32 [33,65]@[65,17]");
}

TEST_CASE("matmul float32 256x256 matches the double reference to 1e-4 relative") {
    Tensor a = Tensor::randn({256, 256}, 5), b = Tensor::randn({256, 256}, 6);
    const std::vector<double> ref = reference_gemm(a.to_vector<double>(), b.to_vector<double>(), 256, 256, 256);
    const std::vector<double> got = ops::matmul(a, b).to_vector<double>();
    double max_ref = 0, max_diff = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        max_ref = std::max(max_ref, std::fabs(ref[i]));
        max_diff = std::max(max_diff, std::fabs(got[i] - ref[i]));
    }
    INFO("max |diff| " << max_diff << ", max |ref| " << max_ref);
    CHECK(max_diff <= 1e-4 * max_ref);
}

TEST_CASE("matmul broadcasts batch dims like NumPy") {
    Tensor a = Tensor::randn({2, 1, 3, 4}, 7, DType::F64), b = Tensor::randn({5, 4, 2}, 8, DType::F64);
    Tensor c = ops::matmul(a, b);
    CHECK(c.shape() == Shape{2, 5, 3, 2});
    expect_close(c, reference_matmul(a, b), 1e-13, 1e-13, "[2,1,3,4]@[5,4,2]");
    Tensor x = Tensor::randn({2, 3, 4}, 9, DType::F64), w = Tensor::randn({4, 6}, 10, DType::F64);
    expect_close(ops::matmul(x, w), reference_matmul(x, w), 1e-13, 1e-13, "[2,3,4]@[4,6] (batch folded into rows)");
    Tensor m = Tensor::randn({3, 4}, 11, DType::F64), bb = Tensor::randn({2, 4, 5}, 12, DType::F64);
    expect_close(ops::matmul(m, bb), reference_matmul(m, bb), 1e-13, 1e-13, "[3,4]@[2,4,5]");
}

TEST_CASE("matmul 1-D operands follow NumPy") {
    Tensor v = Tensor::randn({4}, 13, DType::F64), m = Tensor::randn({4, 3}, 14, DType::F64);
    Tensor mt = Tensor::randn({3, 4}, 15, DType::F64), bt = Tensor::randn({2, 4, 3}, 16, DType::F64);
    Tensor vm = ops::matmul(v, m);  // [4] @ [4, 3] -> [3]
    CHECK(vm.shape() == Shape{3});
    expect_close(vm, reference_matmul(v.reshape({1, 4}), m).reshape({3}), 1e-13, 1e-13, "vec @ mat");
    Tensor mv = ops::matmul(mt, v);  // [3, 4] @ [4] -> [3]
    CHECK(mv.shape() == Shape{3});
    expect_close(mv, reference_matmul(mt, v.reshape({4, 1})).reshape({3}), 1e-13, 1e-13, "mat @ vec");
    Tensor vv = ops::matmul(v, v);  // [4] @ [4] -> []
    CHECK(vv.dim() == 0);
    double dot = 0;
    for (int64_t k = 0; k < 4; ++k) dot += v.at({k}) * v.at({k});
    CHECK(vv.item() == doctest::Approx(dot).epsilon(1e-14));
    Tensor vb = ops::matmul(v, bt);  // [4] @ [2, 4, 3] -> [2, 3]
    CHECK(vb.shape() == Shape{2, 3});
    expect_close(vb, reference_matmul(v.reshape({1, 1, 4}), bt).reshape({2, 3}), 1e-13, 1e-13, "vec @ batch");
    Tensor bv = ops::matmul(bt.transpose(1, 2), v);  // [2, 3, 4] @ [4] -> [2, 3]
    CHECK(bv.shape() == Shape{2, 3});
    expect_close(bv, reference_matmul(bt.transpose(1, 2), v.reshape({4, 1})).reshape({2, 3}), 1e-13, 1e-13,
                 "batch @ vec");
}

TEST_CASE("matmul reads transposed narrowed expanded and permuted views") {
    Tensor base = Tensor::randn({6, 5}, 17, DType::F64), b = Tensor::randn({6, 4}, 18, DType::F64);
    Tensor at = base.transpose(0, 1);  // [5, 6], mapped as a transpose
    CHECK_FALSE(at.is_contiguous());
    expect_close(ops::matmul(at, b), reference_matmul(at, b), 1e-13, 1e-13, "transposed a");
    expect_close(ops::matmul(b.transpose(0, 1), base), reference_matmul(b.transpose(0, 1), base), 1e-13, 1e-13,
                 "transposed a (2)");
    Tensor wide = Tensor::randn({4, 9}, 19, DType::F64);
    Tensor cols = wide.narrow(1, 2, 5);  // [4, 5] with row stride 9
    expect_close(ops::matmul(base, cols.transpose(0, 1)), reference_matmul(base, cols.transpose(0, 1)), 1e-13, 1e-13,
                 "narrowed and transposed b");
    Tensor col = Tensor::randn({5, 1}, 20, DType::F64).expand({5, 3});  // stride 0 along columns: copied
    expect_close(ops::matmul(base, col), reference_matmul(base, col), 1e-13, 1e-13, "expanded b");
    Tensor p = Tensor::randn({3, 2, 4}, 21, DType::F64).permute({1, 0, 2});  // [2, 3, 4], batch stride 4
    Tensor q = Tensor::randn({2, 5, 4}, 22, DType::F64).transpose(1, 2);     // [2, 4, 5], transposed matrices
    expect_close(ops::matmul(p, q), reference_matmul(p, q), 1e-13, 1e-13, "permuted batch");
}

TEST_CASE("matmul shape errors name both shapes") {
    Tensor a = Tensor::ones({2, 3}), b = Tensor::ones({4, 5});
    std::string msg = error_of([&] { ops::matmul(a, b); });
    CHECK(msg.find("[2, 3]") != std::string::npos);
    CHECK(msg.find("[4, 5]") != std::string::npos);
    msg = error_of([&] { ops::matmul(Tensor::ones({2, 3, 4}), Tensor::ones({3, 4, 5})); });
    CHECK(msg.find("[2, 3, 4]") != std::string::npos);
    CHECK(msg.find("[3, 4, 5]") != std::string::npos);
    msg = error_of([&] { ops::matmul(Tensor::ones({3}), Tensor::ones({4})); });
    CHECK(msg.find("[3]") != std::string::npos);
    CHECK(msg.find("[4]") != std::string::npos);
    CHECK_THROWS_AS(ops::matmul(Tensor::scalar(1.0), a), Error);
    CHECK_THROWS_AS(ops::matmul(a, Tensor::ones({3, 2}, DType::F64)), Error);
    msg = error_of([&] { ops::linear(Tensor::ones({2, 4}), Tensor::ones({3, 5})); });
    CHECK(msg.find("[2, 4]") != std::string::npos);
    CHECK(msg.find("[3, 5]") != std::string::npos);
    CHECK_THROWS_AS(ops::linear(Tensor::ones({2, 5}), Tensor::ones({3, 5}), Tensor::ones({4})), Error);
}

TEST_CASE("matmul gradients (float64 gradcheck)") {
    auto mm = [](const std::vector<Tensor>& x) { return ops::matmul(x[0], x[1]); };
    expect_gradcheck(mm, {rand_input({3, 4}, 30), rand_input({4, 2}, 31)});
    expect_gradcheck(mm, {rand_input({2, 1, 3, 4}, 32), rand_input({5, 4, 2}, 33)});
    expect_gradcheck(mm, {rand_input({3, 4}, 34), rand_input({2, 4, 2}, 35)});
    expect_gradcheck(mm, {rand_input({2, 3, 4}, 36), rand_input({4, 2}, 37)});  // folded batch
    expect_gradcheck(mm, {rand_input({4}, 38), rand_input({4, 3}, 39)});
    expect_gradcheck(mm, {rand_input({3, 4}, 40), rand_input({4}, 41)});
    expect_gradcheck(mm, {rand_input({4}, 42), rand_input({4}, 43)});
    expect_gradcheck(mm, {rand_input({4}, 44), rand_input({2, 4, 3}, 45)});
    // transposed (non-contiguous) operands
    expect_gradcheck([](const auto& x) { return ops::matmul(x[0].transpose(0, 1), x[1]); },
                     {rand_input({4, 3}, 46), rand_input({4, 2}, 47)});
    expect_gradcheck([](const auto& x) { return ops::matmul(x[0], x[1].transpose(-1, -2)); },
                     {rand_input({2, 3, 4}, 48), rand_input({2, 5, 4}, 49)});
}

TEST_CASE("linear forward matches x w^T + bias") {
    Tensor x = Tensor::randn({2, 3, 5}, 50, DType::F64), w = Tensor::randn({4, 5}, 51, DType::F64);
    Tensor bias = Tensor::randn({4}, 52, DType::F64);
    Tensor y = ops::linear(x, w, bias);
    CHECK(y.shape() == Shape{2, 3, 4});
    expect_close(y, reference_linear(x, w, bias), 1e-13, 1e-13, "linear 3-D with bias");
    expect_close(ops::linear(x.select(0, 1), w), reference_linear(x.select(0, 1), w, Tensor()), 1e-13, 1e-13,
                 "linear 2-D without bias");
    Tensor wt = Tensor::randn({5, 4}, 53, DType::F64).transpose(0, 1);  // tied-style transposed weight
    expect_close(ops::linear(x, wt, bias), reference_linear(x, wt, bias), 1e-13, 1e-13, "linear transposed weight");
    Tensor xf = Tensor::randn({7, 40}, 54), wf = Tensor::randn({24, 40}, 55), bf = Tensor::randn({24}, 56);
    expect_close(ops::linear(xf, wf, bf), reference_linear(xf, wf, bf), 1e-5, 1e-5, "linear f32");
}

TEST_CASE("float32 matmul and linear match the double reference at each CPU level") {
    // Odd sizes (partial register tiles), every transposition, a batch, a linear with bias and its gradients; sizes
    // past Eigen's blocking (K = 300) so several K panels add up.
    const CpuIsa before = cpu_isa();
    for (const CpuIsa isa : {CpuIsa::baseline, CpuIsa::avx2}) {
        if (!cpu_isa_available(isa)) {
            MESSAGE("CPU level " << cpu_isa_name(isa) << " not available here: not run");
            CHECK_THROWS_AS(set_cpu_isa(isa), Error);
            continue;
        }
        set_cpu_isa(isa);
        INFO("CPU level " << cpu_isa_name(isa));
        const std::vector<std::array<int64_t, 3>> sizes = {{37, 29, 53}, {130, 300, 70}, {1, 17, 9}};
        for (const std::array<int64_t, 3>& mkn : sizes) {
            const int64_t M = mkn[0], K = mkn[1], N = mkn[2];  // plain locals: clang < 16 cannot capture bindings
            INFO("M, K, N = " << M << ", " << K << ", " << N);
            const double tol = 2e-6 * std::sqrt(double(K));
            const Tensor a = Tensor::randn({M, K}, 90), b = Tensor::randn({K, N}, 91);
            const Tensor at = Tensor::randn({K, M}, 92).transpose(0, 1), bt = Tensor::randn({N, K}, 93).transpose(0, 1);
            expect_close(ops::matmul(a, b), reference_matmul(a, b).to(DType::F32), tol, tol, "a b");
            expect_close(ops::matmul(at, b), reference_matmul(at, b).to(DType::F32), tol, tol, "a^T b");
            expect_close(ops::matmul(a, bt), reference_matmul(a, bt).to(DType::F32), tol, tol, "a b^T");
            expect_close(ops::matmul(at, bt), reference_matmul(at, bt).to(DType::F32), tol, tol, "a^T b^T");
        }
        const Tensor p = Tensor::randn({3, 2, 40}, 94).permute({1, 0, 2}), q = Tensor::randn({2, 40, 11}, 95);
        expect_close(ops::matmul(p, q), reference_matmul(p, q).to(DType::F32), 2e-5, 2e-5, "batched, permuted");
        Tensor x = Tensor::randn({6, 9, 48}, 96).set_requires_grad(true), w = Tensor::randn({33, 48}, 97);
        w.set_requires_grad(true);
        const Tensor bias = Tensor::randn({33}, 98), g = Tensor::randn({6, 9, 33}, 99);
        expect_close(ops::linear(x, w, bias), reference_linear(x, w, bias).to(DType::F32), 2e-5, 2e-5, "linear");
        ops::sum(ops::mul(ops::linear(x, w, bias), g)).backward();
        const Tensor g2 = g.reshape({54, 33}), x2 = x.detach().reshape({54, 48});
        expect_close(x.grad().reshape({54, 48}), reference_matmul(g2, w.detach()).to(DType::F32), 2e-5, 2e-5, "dx");
        expect_close(w.grad(), reference_matmul(g2.transpose(0, 1), x2).to(DType::F32), 5e-5, 5e-5, "dw");
    }
    set_cpu_isa(before);
}

TEST_CASE("linear gradients (float64 gradcheck)") {
    auto lin = [](const std::vector<Tensor>& x) { return ops::linear(x[0], x[1], x.size() > 2 ? x[2] : Tensor()); };
    expect_gradcheck(lin, {rand_input({3, 5}, 60), rand_input({4, 5}, 61), rand_input({4}, 62)});
    expect_gradcheck(lin, {rand_input({3, 5}, 63), rand_input({4, 5}, 64)});
    expect_gradcheck(lin, {rand_input({2, 3, 5}, 65), rand_input({4, 5}, 66), rand_input({4}, 67)});
    expect_gradcheck([](const auto& x) { return ops::linear(x[0].transpose(0, 1), x[1].transpose(0, 1), x[2]); },
                     {rand_input({5, 3}, 68), rand_input({5, 4}, 69), rand_input({4}, 70)});
}

TEST_CASE("frozen weight gets no weight-gradient GEMM") {
    Tensor x = rand_input({2, 3, 5}, 80), bias = rand_input({4}, 81);
    Tensor w = rand_input({4, 5}, 82, false);
    const Tensor seed = Tensor::ones({2, 3, 4}, DType::F64);

    uint64_t before = ops::gemm_count();
    Tensor y = ops::linear(x, w, bias);
    CHECK(ops::gemm_count() - before == 1);  // one GEMM forward
    before = ops::gemm_count();
    y.backward(seed);
    CHECK(ops::gemm_count() - before == 1);  // dx only
    CHECK(x.grad().defined());
    CHECK_FALSE(w.grad().defined());

    w.set_requires_grad(true);
    Tensor y2 = ops::linear(x, w, bias);
    before = ops::gemm_count();
    y2.backward(seed);
    CHECK(ops::gemm_count() - before == 2);  // dx and dw
    CHECK(w.grad().defined());

    // Batched matmul counts one GEMM per batch entry; a frozen operand costs none.
    Tensor a = rand_input({3, 2, 4}, 83), b = rand_input({3, 4, 5}, 84, false);
    Tensor c = ops::matmul(a, b);
    before = ops::gemm_count();
    c.backward(Tensor::ones({3, 2, 5}, DType::F64));
    CHECK(ops::gemm_count() - before == 3);
}

TEST_CASE("matmul and linear results are bit-identical run to run") {
    Tensor a = Tensor::randn({160, 300}, 90), b = Tensor::randn({300, 200}, 91);  // big enough for Eigen threads
    const std::vector<float> c1 = ops::matmul(a, b).to_vector<float>(), c2 = ops::matmul(a, b).to_vector<float>();
    CHECK(c1 == c2);
    Tensor x = Tensor::randn({16, 40, 48}, 92), y = Tensor::randn({16, 48, 40}, 93);  // batch split over threads
    CHECK(ops::matmul(x, y).to_vector<float>() == ops::matmul(x, y).to_vector<float>());
    Tensor g = Tensor::randn({64, 96}, 94);
    Tensor w1 = Tensor::randn({96, 128}, 95).set_requires_grad(true), w2 = w1.detach().clone().set_requires_grad(true);
    Tensor h = Tensor::randn({64, 128}, 96);
    ops::linear(h, w1).backward(g);
    ops::linear(h, w2).backward(g);
    CHECK(w1.grad().to_vector<float>() == w2.grad().to_vector<float>());
}

TEST_CASE("matmul and linear handle empty dims and a 1-D input") {
    Tensor e = ops::matmul(Tensor::ones({0, 3}), Tensor::ones({3, 2}));
    CHECK(e.shape() == Shape{0, 2});
    Tensor z = ops::matmul(Tensor::ones({2, 0}), Tensor::ones({0, 3}));  // K = 0: zeros
    CHECK(z.shape() == Shape{2, 3});
    CHECK(z.to_vector<float>() == std::vector<float>(6, 0.0f));
    CHECK(ops::matmul(Tensor::ones({2, 0, 3, 4}), Tensor::ones({4, 5})).shape() == Shape{2, 0, 3, 5});
    Tensor x = Tensor::randn({5}, 100, DType::F64), w = Tensor::randn({3, 5}, 101, DType::F64);
    Tensor b = Tensor::randn({3}, 102, DType::F64);
    Tensor y = ops::linear(x, w, b);
    CHECK(y.shape() == Shape{3});
    expect_close(y, reference_linear(x, w, b), 1e-13, 1e-13, "linear 1-D x");
    CHECK(ops::linear(Tensor::ones({0, 5}), Tensor::ones({3, 5}), Tensor::ones({3})).shape() == Shape{0, 3});
}
