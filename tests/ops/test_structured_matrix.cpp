// SURM structured products (ops/structured_matrix.h): the dense materializers against their entry definitions,
// every fast product against y = W x by plain loops (F64 ~1e-12, F32 rounding only) for non-power-of-two sizes
// and leading dims, float64 gradients of every input, skipped gradients of frozen inputs, shape errors that
// name the op, and bit-identical results for 1 and 2 threads.
#include "test_util.h"

#include <array>
#include <functional>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "ops/structured_matrix.h"

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {

// y[..., o] = Σ_i W[o, i] x[..., i] by plain loops in double, returned in x's dtype: the reference product.
Tensor apply_dense(const Tensor& W, const Tensor& x) {
    const int64_t out = W.size(0), in = W.size(1), rows = x.numel() / in;
    const std::vector<double> w = W.detach().to_vector<double>(), xv = x.detach().to_vector<double>();
    std::vector<double> y(size_t(rows * out), 0.0);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t o = 0; o < out; ++o) {
            double acc = 0;
            for (int64_t i = 0; i < in; ++i) acc += w[size_t(o * in + i)] * xv[size_t(r * in + i)];
            y[size_t(r * out + o)] = acc;
        }
    Shape shape = x.shape();
    shape.back() = out;
    return Tensor::from_vector<double>(y, shape).to(x.dtype());
}

// Checks fast(param..., x) == apply_dense(dense(param...), x) in F64 and, for F32 inputs, against the same
// reference built from the F32-rounded values (the op computes in double, so only the final rounding differs).
void check_product(const std::function<Tensor(const std::vector<Tensor>&)>& fast,
                   const std::function<Tensor(const std::vector<Tensor>&)>& dense, const std::vector<Tensor>& args,
                   const std::string& name) {
    INFO(name);
    const Tensor& x = args.back();
    std::vector<Tensor> params(args.begin(), args.end() - 1);
    expect_close(fast(args), apply_dense(dense(params), x), 1e-12, 1e-12, name + " f64");
    std::vector<Tensor> a32, p64;
    for (const Tensor& t : args) a32.push_back(t.to(DType::F32));
    for (size_t i = 0; i + 1 < a32.size(); ++i) p64.push_back(a32[i].to(DType::F64));
    Tensor y32 = fast(a32);
    CHECK(y32.dtype() == DType::F32);
    expect_close(y32, apply_dense(dense(p64), a32.back().to(DType::F64)).to(DType::F32), 1e-6, 1e-6, name + " f32");
}

// The leading shapes every product is tried with: [B, L, n] and [n] alone.
std::vector<Shape> x_shapes(int64_t n) { return {{2, 3, n}, {n}}; }

// Expects an ssmtune::Error whose message contains every part.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
    std::string message;
    try {
        f();
    } catch (const Error& e) {
        message = e.what();
    }
    INFO("message: " << message);
    CHECK(!message.empty());
    for (const std::string& p : parts) CHECK(message.find(p) != std::string::npos);
}

autograd::GradcheckOptions gc_options() {
    autograd::GradcheckOptions o;
    o.atol = 1e-7;
    o.rtol = 1e-6;
    return o;
}

}  // namespace

TEST_CASE("structured dense materializers follow their entry definitions") {
    for (auto [P, Q, b] : {std::array<int64_t, 3>{1, 1, 1}, {1, 1, 5}, {2, 3, 4}, {3, 1, 3}}) {
        Tensor c = Tensor::randn({P, Q, b}, 1, DType::F64), W = ops::block_circulant_dense(c);
        REQUIRE(W.shape() == Shape({P * b, Q * b}));
        for (int64_t i = 0; i < P; ++i)
            for (int64_t j = 0; j < Q; ++j)
                for (int64_t r = 0; r < b; ++r)
                    for (int64_t s = 0; s < b; ++s) CHECK(W.at({i * b + r, j * b + s}) == c.at({i, j, ((r - s) % b + b) % b}));
    }
    for (int64_t n : {1, 4, 7}) {
        Tensor s = Tensor::randn({n}, 2, DType::F64), S = ops::skew_circulant_dense(s);
        Tensor v = Tensor::randn({n}, 3, DType::F64), T = ops::symmetric_toeplitz_dense(v);
        for (int64_t r = 0; r < n; ++r)
            for (int64_t t = 0; t < n; ++t) {
                CHECK(S.at({r, t}) == (r >= t ? s.at({r - t}) : -s.at({n + r - t})));
                CHECK(T.at({r, t}) == v.at({std::abs(r - t)}));
            }
    }
    Tensor Bk = Tensor::randn({2, 3}, 4, DType::F64), Ak = Tensor::randn({4, 5}, 5, DType::F64);
    Tensor K = ops::kronecker_dense(Bk, Ak);
    REQUIRE(K.shape() == Shape({8, 15}));
    for (int64_t a = 0; a < 2; ++a)
        for (int64_t c = 0; c < 3; ++c)
            for (int64_t i = 0; i < 4; ++i)
                for (int64_t j = 0; j < 5; ++j) CHECK(K.at({a * 4 + i, c * 5 + j}) == Bk.at({a, c}) * Ak.at({i, j}));
    // ldr_dense = Σ_i circ(g_i) skewcirc(s_i), with the products by plain loops.
    const int64_t k = 3, n = 5;
    Tensor g = Tensor::randn({k, n}, 6, DType::F64), s = Tensor::randn({k, n}, 7, DType::F64);
    Tensor L = ops::ldr_dense(g, s);
    for (int64_t r = 0; r < n; ++r)
        for (int64_t t = 0; t < n; ++t) {
            double acc = 0;
            for (int64_t i = 0; i < k; ++i) {
                Tensor C = ops::block_circulant_dense(g.select(0, i).reshape({1, 1, n})), S = ops::skew_circulant_dense(s.select(0, i));
                for (int64_t u = 0; u < n; ++u) acc += C.at({r, u}) * S.at({u, t});
            }
            CHECK(L.at({r, t}) == doctest::Approx(acc).epsilon(1e-13));
        }
}

TEST_CASE("structured block_circulant_matmul equals x @ denseᵀ for square and block-tiled sizes") {
    const auto fast = [](const std::vector<Tensor>& a) { return ops::block_circulant_matmul(a[0], a[1]); };
    const auto dense = [](const std::vector<Tensor>& a) { return ops::block_circulant_dense(a[0]); };
    uint64_t seed = 10;
    for (auto [P, Q, b] : {std::array<int64_t, 3>{1, 1, 1}, {1, 1, 3}, {1, 1, 5}, {1, 1, 8}, {1, 1, 12}, {2, 3, 5},
                           {3, 2, 4}, {4, 1, 3}, {1, 3, 12}, {2, 2, 1}, {1, 1, 100}}) {
        for (const Shape& xs : x_shapes(Q * b)) {
            Tensor c = Tensor::randn({P, Q, b}, ++seed, DType::F64), x = Tensor::randn(xs, ++seed, DType::F64);
            check_product(fast, dense, {c, x}, "P " + std::to_string(P) + " Q " + std::to_string(Q) + " b " +
                                                    std::to_string(b) + " x " + shape_str(xs));
        }
    }
    // A non-contiguous x (a transposed view) and an empty batch.
    Tensor c = Tensor::randn({2, 1, 6}, 40, DType::F64), xt = Tensor::randn({6, 4}, 41, DType::F64).transpose(0, 1);
    expect_close(ops::block_circulant_matmul(c, xt), apply_dense(ops::block_circulant_dense(c), xt.contiguous()), 1e-12,
                 1e-12, "transposed x");
    CHECK(ops::block_circulant_matmul(c, Tensor::zeros({0, 6}, DType::F64)).shape() == Shape({0, 12}));
}

TEST_CASE("structured skew_circulant_matmul and symmetric_toeplitz_matmul equal x @ denseᵀ") {
    const auto skew = [](const std::vector<Tensor>& a) { return ops::skew_circulant_matmul(a[0], a[1]); };
    const auto skew_dense = [](const std::vector<Tensor>& a) { return ops::skew_circulant_dense(a[0]); };
    const auto toep = [](const std::vector<Tensor>& a) { return ops::symmetric_toeplitz_matmul(a[0], a[1]); };
    const auto toep_dense = [](const std::vector<Tensor>& a) { return ops::symmetric_toeplitz_dense(a[0]); };
    uint64_t seed = 50;
    for (int64_t n : {1, 2, 3, 5, 8, 12, 33, 200}) {
        for (const Shape& xs : x_shapes(n)) {
            Tensor p = Tensor::randn({n}, ++seed, DType::F64), x = Tensor::randn(xs, ++seed, DType::F64);
            check_product(skew, skew_dense, {p, x}, "skew n " + std::to_string(n) + " x " + shape_str(xs));
            check_product(toep, toep_dense, {p, x}, "toeplitz n " + std::to_string(n) + " x " + shape_str(xs));
        }
    }
}

TEST_CASE("structured kronecker_matmul and ldr_matmul equal x @ denseᵀ") {
    const auto kron = [](const std::vector<Tensor>& a) { return ops::kronecker_matmul(a[0], a[1], a[2]); };
    const auto kron_dense = [](const std::vector<Tensor>& a) { return ops::kronecker_dense(a[0], a[1]); };
    const auto ldr = [](const std::vector<Tensor>& a) { return ops::ldr_matmul(a[0], a[1], a[2]); };
    const auto ldr_dense = [](const std::vector<Tensor>& a) { return ops::ldr_dense(a[0], a[1]); };
    uint64_t seed = 80;
    for (auto [p, q, m, k] : {std::array<int64_t, 4>{1, 1, 1, 1}, {2, 3, 4, 5}, {3, 1, 2, 4}, {1, 4, 3, 1}}) {
        for (const Shape& xs : x_shapes(q * k)) {
            Tensor Bk = Tensor::randn({p, q}, ++seed, DType::F64), Ak = Tensor::randn({m, k}, ++seed, DType::F64);
            Tensor x = Tensor::randn(xs, ++seed, DType::F64);
            check_product(kron, kron_dense, {Bk, Ak, x}, "kron p q m k " + std::to_string(p) + std::to_string(q) +
                                                             std::to_string(m) + std::to_string(k) + " x " + shape_str(xs));
        }
    }
    for (auto [k, n] : {std::array<int64_t, 2>{1, 1}, {1, 5}, {2, 3}, {3, 8}, {4, 12}}) {
        for (const Shape& xs : x_shapes(n)) {
            Tensor g = Tensor::randn({k, n}, ++seed, DType::F64), s = Tensor::randn({k, n}, ++seed, DType::F64);
            Tensor x = Tensor::randn(xs, ++seed, DType::F64);
            check_product(ldr, ldr_dense, {g, s, x}, "ldr k " + std::to_string(k) + " n " + std::to_string(n) + " x " +
                                                         shape_str(xs));
        }
    }
}

TEST_CASE("structured gradients of every op and input in float64") {
    const auto opts = gc_options();
    // Block circulant: square, tiled, b = 1, and a 1-D x.
    for (const auto& sizes : {std::array<int64_t, 3>{1, 1, 5}, {2, 3, 4}, {3, 2, 3}, {2, 2, 1}}) {
        const int64_t P = sizes[0], Q = sizes[1], b = sizes[2];  // not a structured binding: INFO captures them
        INFO("block_circulant P " << P << " Q " << Q << " b " << b);
        expect_gradcheck([](const auto& in) { return ops::block_circulant_matmul(in[0], in[1]); },
                         {rand_input({P, Q, b}, 100 + b), rand_input({2, 3, Q * b}, 200 + b)}, opts);
    }
    expect_gradcheck([](const auto& in) { return ops::block_circulant_matmul(in[0], in[1]); },
                     {rand_input({1, 2, 3}, 301), rand_input({6}, 302)}, opts);
    for (int64_t n : {1, 3, 5, 8}) {
        INFO("n " << n);
        expect_gradcheck([](const auto& in) { return ops::skew_circulant_matmul(in[0], in[1]); },
                         {rand_input({n}, 400 + n), rand_input({2, 3, n}, 500 + n)}, opts);
        expect_gradcheck([](const auto& in) { return ops::symmetric_toeplitz_matmul(in[0], in[1]); },
                         {rand_input({n}, 600 + n), rand_input({2, 3, n}, 700 + n)}, opts);
    }
    expect_gradcheck([](const auto& in) { return ops::skew_circulant_matmul(in[0], in[1]); },
                     {rand_input({6}, 801), rand_input({6}, 802)}, opts);
    expect_gradcheck([](const auto& in) { return ops::symmetric_toeplitz_matmul(in[0], in[1]); },
                     {rand_input({7}, 803), rand_input({7}, 804)}, opts);
    expect_gradcheck([](const auto& in) { return ops::kronecker_matmul(in[0], in[1], in[2]); },
                     {rand_input({2, 3}, 901), rand_input({4, 2}, 902), rand_input({2, 3, 6}, 903)}, opts);
    expect_gradcheck([](const auto& in) { return ops::ldr_matmul(in[0], in[1], in[2]); },
                     {rand_input({3, 5}, 904), rand_input({3, 5}, 905), rand_input({2, 2, 5}, 906)}, opts);
    // The materializers are differentiable too (merging under autograd, e.g. a merged-weight loss).
    expect_gradcheck([](const auto& in) { return ops::block_circulant_dense(in[0]); }, {rand_input({2, 3, 4}, 907)}, opts);
    expect_gradcheck([](const auto& in) { return ops::skew_circulant_dense(in[0]); }, {rand_input({5}, 908)}, opts);
    expect_gradcheck([](const auto& in) { return ops::symmetric_toeplitz_dense(in[0]); }, {rand_input({5}, 909)}, opts);
    expect_gradcheck([](const auto& in) { return ops::kronecker_dense(in[0], in[1]); },
                     {rand_input({2, 3}, 910), rand_input({3, 2}, 911)}, opts);
    expect_gradcheck([](const auto& in) { return ops::ldr_dense(in[0], in[1]); },
                     {rand_input({2, 4}, 912), rand_input({2, 4}, 913)}, opts);
}

TEST_CASE("structured ops leave the gradient of a frozen input undefined") {
    using Op = std::function<Tensor(const Tensor&, const Tensor&)>;
    using Dense = std::function<Tensor(const Tensor&)>;
    struct Case {
        const char* name;
        Op op;
        Dense dense;
        Shape param, x;
    };
    const std::vector<Case> cases = {
        {"block_circulant", ops::block_circulant_matmul, ops::block_circulant_dense, {2, 3, 5}, {2, 4, 15}},
        {"skew_circulant", ops::skew_circulant_matmul, ops::skew_circulant_dense, {7}, {3, 7}},
        {"symmetric_toeplitz", ops::symmetric_toeplitz_matmul, ops::symmetric_toeplitz_dense, {6}, {2, 2, 6}},
    };
    for (const Case& cs : cases) {
        INFO(cs.name);
        Tensor p = Tensor::randn(cs.param, 1, DType::F64), x = Tensor::randn(cs.x, 2, DType::F64);
        Tensor y0 = cs.op(p, x);
        Tensor w = Tensor::randn(y0.shape(), 3, DType::F64);
        // Reference gradients through the differentiable dense materializer and matmul.
        Tensor pr = p.clone().set_requires_grad(true), xr = x.clone().set_requires_grad(true);
        ops::sum(ops::mul(ops::matmul(xr, cs.dense(pr).transpose(0, 1)), w)).backward();

        {  // only x requires grad
            Tensor xg = x.clone().set_requires_grad(true);
            ops::sum(ops::mul(cs.op(p, xg), w)).backward();
            CHECK_FALSE(p.grad().defined());
            REQUIRE(xg.grad().defined());
            expect_close(xg.grad(), xr.grad(), 1e-12, 1e-12, "dx");
        }
        {  // only the parameter requires grad
            Tensor pg = p.clone().set_requires_grad(true);
            ops::sum(ops::mul(cs.op(pg, x), w)).backward();
            CHECK_FALSE(x.grad().defined());
            REQUIRE(pg.grad().defined());
            expect_close(pg.grad(), pr.grad(), 1e-12, 1e-12, "dparam");
        }
    }
    // The composites: a frozen factor or a frozen x gets nothing.
    Tensor g = Tensor::randn({2, 5}, 4, DType::F64), s = Tensor::randn({2, 5}, 5, DType::F64).set_requires_grad(true);
    Tensor x = Tensor::randn({3, 5}, 6, DType::F64);
    ops::sum(ops::ldr_matmul(g, s, x)).backward();
    CHECK_FALSE(g.grad().defined());
    CHECK_FALSE(x.grad().defined());
    CHECK(s.grad().defined());
    Tensor Bk = Tensor::randn({2, 3}, 7, DType::F64).set_requires_grad(true), Ak = Tensor::randn({2, 2}, 8, DType::F64);
    ops::sum(ops::kronecker_matmul(Bk, Ak, Tensor::randn({4, 6}, 9, DType::F64))).backward();
    CHECK(Bk.grad().defined());
    CHECK_FALSE(Ak.grad().defined());
}

TEST_CASE("structured ops reject bad shapes naming the op, both shapes and a fix") {
    const Tensor c = Tensor::zeros({2, 3, 4}), x10 = Tensor::zeros({5, 10});
    expect_error([&] { ops::block_circulant_matmul(c, x10); },
                 {"block_circulant_matmul", "x last dim 10 is not Q*b = 12", "[2, 3, 4]", "[5, 10]", "fix:"});
    expect_error([&] { ops::block_circulant_matmul(Tensor::zeros({3, 4}), x10); }, {"block_circulant_matmul", "[P, Q, b]", "fix:"});
    expect_error([&] { ops::block_circulant_matmul(Tensor::zeros({2, 0, 4}), x10); }, {"block_circulant_matmul", "fix:"});
    expect_error([&] { ops::block_circulant_matmul(c, Tensor::scalar(1.0)); }, {"block_circulant_matmul", "x last dim"});
    expect_error([&] { ops::block_circulant_matmul(c, Tensor::zeros({12}, DType::F64)); }, {"block_circulant_matmul", "dtypes differ"});
    expect_error([&] { ops::block_circulant_matmul(c, Tensor::zeros({12}, DType::I64)); }, {"block_circulant_matmul", "F32 or F64"});
    expect_error([&] { ops::skew_circulant_matmul(Tensor::zeros({5}), Tensor::zeros({2, 4})); },
                 {"skew_circulant_matmul", "[5]", "[2, 4]", "fix:"});
    expect_error([&] { ops::skew_circulant_matmul(Tensor::zeros({2, 2}), Tensor::zeros({2, 4})); }, {"skew_circulant_matmul", "[n]"});
    expect_error([&] { ops::symmetric_toeplitz_matmul(Tensor::zeros({3}), Tensor::zeros({4})); },
                 {"symmetric_toeplitz_matmul", "[3]", "[4]", "fix:"});
    expect_error([&] { ops::symmetric_toeplitz_matmul(Tensor::zeros({0}), Tensor::zeros({0})); }, {"symmetric_toeplitz_matmul", "n >= 1"});
    expect_error([&] { ops::kronecker_matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5}), Tensor::zeros({7, 14})); },
                 {"kronecker_matmul", "q*k = 15", "[2, 3]", "[4, 5]", "[7, 14]", "fix:"});
    expect_error([&] { ops::kronecker_matmul(Tensor::zeros({2}), Tensor::zeros({4, 5}), Tensor::zeros({5})); }, {"kronecker_matmul", "[p, q]"});
    expect_error([&] { ops::ldr_matmul(Tensor::zeros({2, 5}), Tensor::zeros({3, 5}), Tensor::zeros({5})); },
                 {"ldr_matmul", "[3, 5]", "[2, 5]", "fix:"});
    expect_error([&] { ops::ldr_matmul(Tensor::zeros({2, 5}), Tensor::zeros({2, 5}), Tensor::zeros({4, 6})); },
                 {"ldr_matmul", "[2, 5]", "[4, 6]", "fix:"});
    expect_error([&] { ops::block_circulant_dense(Tensor::zeros({4})); }, {"block_circulant_dense", "[P, Q, b]"});
    expect_error([&] { ops::skew_circulant_dense(Tensor::zeros({2, 2})); }, {"skew_circulant_dense", "[n]"});
    expect_error([&] { ops::symmetric_toeplitz_dense(Tensor::zeros({2, 2})); }, {"symmetric_toeplitz_dense", "[n]"});
    expect_error([&] { ops::kronecker_dense(Tensor::zeros({2}), Tensor::zeros({2, 2})); }, {"kronecker_dense", "[p, q]"});
    expect_error([&] { ops::ldr_dense(Tensor::zeros({2, 3}), Tensor::zeros({2, 4})); }, {"ldr_dense", "[2, 4]", "[2, 3]"});
}

TEST_CASE("structured ops give the same bits on every run with 2 threads, and with 1 thread") {
    if (!threads_can_run()) return;
#ifdef _OPENMP
    // Big enough that forward and backward are split across threads (rows · blocks · FFT size > the grain).
    const auto run = [](int threads) {
        omp_set_num_threads(threads);
        Tensor c = Tensor::randn({2, 3, 48}, 1).set_requires_grad(true), x = Tensor::randn({4, 64, 144}, 2).set_requires_grad(true);
        Tensor s = Tensor::randn({144}, 3).set_requires_grad(true), v = Tensor::randn({144}, 4).set_requires_grad(true);
        Tensor y = ops::block_circulant_matmul(c, x);
        Tensor z = ops::symmetric_toeplitz_matmul(v, ops::skew_circulant_matmul(s, x));
        ops::sum(ops::mul(y, y)).backward();
        ops::sum(ops::mul(z, z)).backward();
        std::vector<float> all = y.to_vector<float>();
        for (const Tensor& t : {z, c.grad(), x.grad(), s.grad(), v.grad()}) {
            const std::vector<float> part = t.to_vector<float>();
            all.insert(all.end(), part.begin(), part.end());
        }
        return all;
    };
    const int before = omp_get_max_threads();
    const auto a = run(2), b = run(2), one = run(1);
    omp_set_num_threads(before);
    CHECK(a == b);
    CHECK(a == one);
#endif
}
