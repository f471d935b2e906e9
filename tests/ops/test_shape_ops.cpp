// concat, split, chunk, slice, index_select, where, masked_fill: forward against plain loops (non-contiguous
// inputs, broadcasting, several dtypes), gradients by float64 gradcheck, and the errors they raise.
#include "test_util.h"

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {

// CHECKs that f throws an Error whose message contains every one of `parts`.
template <class F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
    try {
        f();
        FAIL("expected an Error");
    } catch (const Error& e) {
        const std::string msg = e.what();
        for (const std::string& p : parts) {
            INFO("message: " << msg << "\nmissing: " << p);
            CHECK(msg.find(p) != std::string::npos);
        }
    }
}

// Plain-loop concat of 3-D tensors along `dim` (0..2).
Tensor reference_concat(const std::vector<Tensor>& ts, int64_t dim) {
    Shape shape = ts[0].shape();
    shape[size_t(dim)] = 0;
    for (const Tensor& t : ts) shape[size_t(dim)] += t.size(dim);
    Tensor out = Tensor::zeros(shape, DType::F64);
    int64_t base = 0;
    for (const Tensor& t : ts) {
        for (int64_t i = 0; i < t.size(0); ++i)
            for (int64_t j = 0; j < t.size(1); ++j)
                for (int64_t k = 0; k < t.size(2); ++k) {
                    std::vector<int64_t> at = {i, j, k};
                    at[size_t(dim)] += base;
                    out.set(at, t.at({i, j, k}));
                }
        base += t.size(dim);
    }
    return out;
}

// Plain-loop index_select on a 3-D tensor.
Tensor reference_index_select(const Tensor& x, int64_t dim, const std::vector<int64_t>& idx) {
    Shape shape = x.shape();
    shape[size_t(dim)] = int64_t(idx.size());
    Tensor out = Tensor::zeros(shape, DType::F64);
    for (int64_t i = 0; i < shape[0]; ++i)
        for (int64_t j = 0; j < shape[1]; ++j)
            for (int64_t k = 0; k < shape[2]; ++k) {
                std::vector<int64_t> src = {i, j, k};
                src[size_t(dim)] = idx[size_t(src[size_t(dim)])];
                out.set({i, j, k}, x.at(src));
            }
    return out;
}

// Row-major values of a tensor, for exact comparisons of small results.
std::vector<double> values(const Tensor& t) { return t.detach().to_vector<double>(); }

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// concat

TEST_CASE("concat forward matches plain loops along every dim") {
    for (int64_t dim = 0; dim < 3; ++dim) {
        Shape s0 = {2, 3, 4}, s1 = {2, 3, 4}, s2 = {2, 3, 4};
        s1[size_t(dim)] = 1;
        s2[size_t(dim)] = 3;
        Tensor a = Tensor::randn(s0, 1, DType::F64), b = Tensor::randn(s1, 2, DType::F64);
        Tensor c = Tensor::randn(s2, 3, DType::F64);
        expect_close(ops::concat({a, b, c}, dim), reference_concat({a, b, c}, dim), 0, 1e-15, "concat");
        expect_close(ops::concat({a, b, c}, dim - 3), reference_concat({a, b, c}, dim), 0, 1e-15,
                     "concat negative dim");
    }
}

TEST_CASE("concat of non-contiguous and empty and integer tensors") {
    Tensor a = Tensor::randn({4, 3, 2}, 4).permute({2, 1, 0});  // [2, 3, 4], non-contiguous
    Tensor b = Tensor::randn({2, 3, 5}, 5);
    Tensor empty = Tensor::zeros({2, 3, 0});
    CHECK_FALSE(a.is_contiguous());
    Tensor out = ops::concat({a, empty, b}, 2);
    CHECK(out.dtype() == DType::F32);
    expect_close(out, reference_concat({a.to(DType::F64), b.to(DType::F64)}, 2), 0, 1e-15, "concat of a permuted view");

    Tensor i0 = Tensor::from_vector<int64_t>({1, 2, 3, 4}, {2, 2}), i1 = Tensor::from_vector<int64_t>({5, 6}, {2, 1});
    Tensor ic = ops::concat({i0, i1}, 1);
    CHECK(ic.dtype() == DType::I64);
    CHECK(ic.to_vector<int64_t>() == std::vector<int64_t>{1, 2, 5, 3, 4, 6});
}

TEST_CASE("concat errors name the offending tensor and shapes") {
    Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({2, 4}), c = Tensor::zeros({3, 4});
    expect_error([&] { ops::concat({a, b, c}, 1); }, {"tensors[2]", "[3, 4]", "[2, 3]"});
    expect_error([&] { ops::concat({a, b}, 0); }, {"tensors[1]", "[2, 4]", "[2, 3]"});
    expect_error([&] { ops::concat({a, Tensor::zeros({2, 3, 1})}, 0); }, {"tensors[1]", "[2, 3, 1]"});
    expect_error([&] { ops::concat({a, Tensor::zeros({2, 3}, DType::F64)}, 0); }, {"tensors[1]", "F64", "F32"});
    expect_error([&] { ops::concat({}, 0); }, {"empty"});
    expect_error([&] { ops::concat({Tensor::scalar(1), Tensor::scalar(2)}, 0); }, {"zero-dimensional"});
    CHECK_THROWS_AS(ops::concat({a, a}, 2), Error);
}

TEST_CASE("concat gradients (float64 gradcheck with views and frozen inputs)") {
    Tensor a = rand_input({3, 2}, 10), b = rand_input({3, 4}, 11), c = rand_input({2, 3}, 12);
    Tensor frozen = rand_input({3, 1}, 13, false);
    expect_gradcheck([](const auto& x) { return ops::concat({x[0], x[1], x[2].transpose(0, 1), x[3]}, 1); },
                     {a, b, c, frozen});
    CHECK_FALSE(frozen.grad().defined());
    expect_gradcheck([](const auto& x) { return ops::concat({x[0], x[0] * x[1]}, 0); },
                     {rand_input({2, 3}, 14), rand_input({2, 3}, 15)});
    expect_gradcheck([](const auto& x) { return ops::concat({x[0], x[1], x[2]}, -1); }, {a, b, frozen});
}

// ---------------------------------------------------------------------------------------------------------
// split / chunk / slice

TEST_CASE("split returns views that add up to the input") {
    Tensor x = Tensor::randn({3, 7}, 20, DType::F64);
    std::vector<Tensor> parts = ops::split(x, {2, 0, 5}, 1);
    REQUIRE(parts.size() == 3);
    CHECK(parts[0].shape() == Shape{3, 2});
    CHECK(parts[1].shape() == Shape{3, 0});
    CHECK(parts[2].shape() == Shape{3, 5});
    CHECK(parts[2].storage() == x.storage());  // a view, no copy
    for (int64_t i = 0; i < 3; ++i) {
        for (int64_t j = 0; j < 2; ++j) CHECK(parts[0].at({i, j}) == x.at({i, j}));
        for (int64_t j = 0; j < 5; ++j) CHECK(parts[2].at({i, j}) == x.at({i, 2 + j}));
    }
    std::vector<Tensor> rows = ops::split(x, {1, 2}, -2);
    CHECK(rows[1].shape() == Shape{2, 7});
    CHECK(rows[1].at({1, 6}) == x.at({2, 6}));
}

TEST_CASE("split errors when sizes do not add up") {
    Tensor x = Tensor::zeros({3, 7});
    expect_error([&] { ops::split(x, {2, 4}, 1); }, {"[2, 4]", "6", "7"});
    expect_error([&] { ops::split(x, {8, -1}, 1); }, {"negative"});
    CHECK_THROWS_AS(ops::split(x, {3}, 2), Error);
}

TEST_CASE("split gradients (float64 gradcheck on a transposed view)") {
    Tensor x = rand_input({6, 3}, 21);
    expect_gradcheck(
        [](const auto& in) {
            auto p = ops::split(in[0].transpose(0, 1), {1, 3, 2}, 1);  // [3, 6] split along the 6
            return ops::concat({p[2] * p[2], p[0] * 3.0, p[1]}, 1);
        },
        {x});
}

TEST_CASE("chunk sizes follow PyTorch") {
    auto sizes = [](int64_t n, int64_t chunks) {
        std::vector<int64_t> s;
        for (const Tensor& t : ops::chunk(Tensor::zeros({2, n}), chunks, 1)) s.push_back(t.size(1));
        return s;
    };
    CHECK(sizes(6, 3) == std::vector<int64_t>{2, 2, 2});
    CHECK(sizes(5, 3) == std::vector<int64_t>{2, 2, 1});
    CHECK(sizes(5, 4) == std::vector<int64_t>{2, 2, 1});  // fewer pieces than asked, as torch.chunk
    CHECK(sizes(7, 2) == std::vector<int64_t>{4, 3});
    CHECK(sizes(2, 5) == std::vector<int64_t>{1, 1});
    CHECK(sizes(4, 1) == std::vector<int64_t>{4});
    CHECK(sizes(0, 3) == std::vector<int64_t>{0, 0, 0});
    Tensor x = Tensor::arange(10, DType::I64).reshape({5, 2});
    auto c = ops::chunk(x, 2, 0);
    CHECK(c[1].to_vector<int64_t>() == std::vector<int64_t>{6, 7, 8, 9});
    expect_error([&] { ops::chunk(x, 0, 0); }, {"chunks", "0"});
}

TEST_CASE("chunk gradients (float64 gradcheck)") {
    expect_gradcheck(
        [](const auto& in) {
            auto c = ops::chunk(in[0], 3, -1);  // 7 -> 3, 3, 1
            return ops::concat({c[1] * c[0], c[2] * 2.0}, -1);
        },
        {rand_input({2, 7}, 22)});
}

TEST_CASE("slice clamps like Python and is a view") {
    Tensor x = Tensor::arange(0.0, 8.0, 1.0, DType::F64);  // [0..7]
    auto sl = [&](int64_t s, int64_t e) { return values(ops::slice(x, 0, s, e)); };
    CHECK(sl(2, 5) == std::vector<double>{2, 3, 4});
    CHECK(sl(-3, 8) == std::vector<double>{5, 6, 7});
    CHECK(sl(-3, -1) == std::vector<double>{5, 6});
    CHECK(sl(0, 100) == std::vector<double>{0, 1, 2, 3, 4, 5, 6, 7});
    CHECK(sl(-100, 2) == std::vector<double>{0, 1});
    CHECK(sl(5, 3).empty());
    CHECK(sl(9, 12).empty());
    CHECK(sl(-1, INT64_MAX) == std::vector<double>{7});
    CHECK(sl(INT64_MIN, -7) == std::vector<double>{0});

    Tensor m = Tensor::randn({3, 5}, 23, DType::F64);
    Tensor s = ops::slice(m, -1, 1, -1);
    CHECK(s.shape() == Shape{3, 3});
    CHECK(s.storage() == m.storage());
    for (int64_t i = 0; i < 3; ++i)
        for (int64_t j = 0; j < 3; ++j) CHECK(s.at({i, j}) == m.at({i, j + 1}));
    CHECK_THROWS_AS(ops::slice(m, 2, 0, 1), Error);
}

TEST_CASE("slice gradients (float64 gradcheck on a transposed view)") {
    expect_gradcheck(
        [](const auto& in) {
            Tensor t = in[0].transpose(0, 1);  // [5, 4]
            return ops::concat({ops::slice(t, 0, -2, 100), ops::slice(t, 0, 0, 1) * 2.0}, 0);
        },
        {rand_input({4, 5}, 24)});
}

// ---------------------------------------------------------------------------------------------------------
// index_select

TEST_CASE("index_select forward matches plain loops on every dim") {
    Tensor x = Tensor::randn({3, 4, 5}, 30, DType::F64);
    const std::vector<int64_t> idx0 = {2, 0, 2}, idx1 = {3, 3, 0, 1, 2}, idx2 = {4, 1};
    expect_close(ops::index_select(x, 0, Tensor::from_vector(idx0, {3})), reference_index_select(x, 0, idx0), 0, 1e-15,
                 "dim 0");
    expect_close(ops::index_select(x, 1, Tensor::from_vector(idx1, {5}).to(DType::I32)),
                 reference_index_select(x, 1, idx1), 0, 1e-15, "dim 1, I32 index");
    expect_close(ops::index_select(x, -1, Tensor::from_vector(idx2, {2})), reference_index_select(x, 2, idx2), 0, 1e-15,
                 "dim -1");
    // Non-contiguous x, float32.
    Tensor xt = Tensor::randn({5, 4, 3}, 31).permute({2, 1, 0});
    expect_close(ops::index_select(xt, 2, Tensor::from_vector(idx2, {2})),
                 reference_index_select(xt.to(DType::F64), 2, idx2), 0, 1e-15, "permuted float32");
    // Empty index, integer x.
    CHECK(ops::index_select(x, 1, Tensor::zeros({0}, DType::I64)).shape() == Shape{3, 0, 5});
    Tensor ids = Tensor::from_vector<int64_t>({10, 11, 12}, {3});
    CHECK(ops::index_select(ids, 0, Tensor::from_vector<int64_t>({2, 2, 0}, {3})).to_vector<int64_t>() ==
          std::vector<int64_t>{12, 12, 10});
}

TEST_CASE("index_select rejects bad indices with the offending value") {
    Tensor x = Tensor::zeros({3, 4});
    expect_error([&] { ops::index_select(x, 1, Tensor::from_vector<int64_t>({0, 1, 7}, {3})); },
                 {"index[2] = 7", "[0, 4)"});
    expect_error([&] { ops::index_select(x, 0, Tensor::from_vector<int64_t>({-1}, {1})); }, {"index[0] = -1"});
    expect_error([&] { ops::index_select(x, 0, Tensor::zeros({2, 1}, DType::I64)); }, {"1-D"});
    expect_error([&] { ops::index_select(x, 0, Tensor::zeros({2})); }, {"I64 or I32"});
}

TEST_CASE("index_select backward accumulates repeated indices") {
    Tensor x = Tensor::from_vector<double>({1, 2, 3, 4}, {4}).set_requires_grad(true);
    Tensor y = ops::index_select(x, 0, Tensor::from_vector<int64_t>({1, 1, 3, 1}, {4}));
    y.backward(Tensor::from_vector<double>({1, 10, 100, 1000}, {4}));
    CHECK(values(x.grad()) == std::vector<double>{0, 1011, 0, 100});
}

TEST_CASE("index_select gradients (float64 gradcheck with repeated indices and views)") {
    Tensor idx = Tensor::from_vector<int64_t>({3, 0, 3, 1, 3}, {5});
    expect_gradcheck([idx](const auto& in) { return ops::index_select(in[0], 0, idx); }, {rand_input({4, 3}, 32)});
    expect_gradcheck([idx](const auto& in) { return ops::index_select(in[0].transpose(0, 1), 1, idx); },
                     {rand_input({4, 2}, 33)});
    Tensor idx2 = Tensor::from_vector<int64_t>({1, 1, 0}, {3}).to(DType::I32);
    expect_gradcheck(
        [idx2](const auto& in) { return ops::index_select(in[0].permute({1, 2, 0}), 1, idx2); },
        {rand_input({2, 3, 2}, 34)});
}

// ---------------------------------------------------------------------------------------------------------
// where / masked_fill

TEST_CASE("where forward broadcasts cond of any dtype") {
    Tensor a = Tensor::randn({3, 4}, 40, DType::F64), b = Tensor::randn({4}, 41, DType::F64);
    // cond [3, 1] in BOOL, U8, I64 and F64 (NaN counts as true, like any nonzero).
    const std::vector<double> cvals = {1, 0, 1};
    std::vector<Tensor> conds = {
        Tensor::from_vector<bool>({true, false, true}, {3, 1}), Tensor::from_vector<uint8_t>({7, 0, 1}, {3, 1}),
        Tensor::from_vector<int64_t>({-2, 0, 5}, {3, 1}),
        Tensor::from_vector<double>({std::nan(""), 0.0, 1e-300}, {3, 1})};
    for (const Tensor& cond : conds) {
        Tensor out = ops::where(cond, a, b);
        REQUIRE(out.shape() == Shape{3, 4});
        for (int64_t i = 0; i < 3; ++i)
            for (int64_t j = 0; j < 4; ++j) CHECK(out.at({i, j}) == (cvals[size_t(i)] != 0 ? a.at({i, j}) : b.at({j})));
    }
    // All three broadcast: cond [1, 4], a [3, 1], b [] -> [3, 4]; a non-contiguous float32 case too.
    Tensor cond = Tensor::from_vector<bool>({false, true, true, false}, {1, 4});
    Tensor col = Tensor::randn({3, 1}, 42, DType::F64), s = Tensor::scalar(-5, DType::F64);
    Tensor out = ops::where(cond, col, s);
    CHECK(out.shape() == Shape{3, 4});
    for (int64_t i = 0; i < 3; ++i)
        for (int64_t j = 0; j < 4; ++j) CHECK(out.at({i, j}) == (cond.at({0, j}) != 0 ? col.at({i, 0}) : -5.0));
    Tensor at = Tensor::randn({4, 3}, 43).transpose(0, 1), bt = Tensor::randn({3, 4}, 44);
    Tensor out32 = ops::where(cond, at, bt);
    CHECK(out32.dtype() == DType::F32);
    for (int64_t i = 0; i < 3; ++i)
        for (int64_t j = 0; j < 4; ++j)
            CHECK(out32.at({i, j}) == (cond.at({0, j}) != 0 ? at.at({i, j}) : bt.at({i, j})));
}

TEST_CASE("where errors on mixed or integer values and bad shapes") {
    Tensor cond = Tensor::ones({3}, DType::BOOL);
    expect_error([&] { ops::where(cond, Tensor::zeros({3}), Tensor::zeros({3}, DType::F64)); }, {"F32", "F64"});
    Tensor ints = Tensor::zeros({3}, DType::I64);
    expect_error([&] { ops::where(cond, ints, ints); }, {"F32 or F64"});
    expect_error([&] { ops::where(Tensor::ones({4}, DType::BOOL), Tensor::zeros({3}), Tensor::zeros({3})); },
                 {"[4]", "[3]"});
}

TEST_CASE("where gradients go to a where cond and to b elsewhere (float64 gradcheck)") {
    Tensor cond = Tensor::from_vector<uint8_t>({1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1}, {3, 4});
    Tensor a = rand_input({3, 1}, 45), b = rand_input({1, 4}, 46);
    expect_gradcheck([cond](const auto& x) { return ops::where(cond, x[0], x[1]); }, {a, b});
    // Exact values: a [3, 1] collects the count of true per row, b [1, 4] the count of false per column.
    Tensor y = ops::where(cond, a, b);
    a.zero_grad();
    b.zero_grad();
    y.backward(Tensor::ones({3, 4}, DType::F64));
    CHECK(values(a.grad()) == std::vector<double>{2, 2, 3});
    CHECK(values(b.grad()) == std::vector<double>{1, 2, 1, 1});
    // Non-contiguous values, cond broadcast, one input frozen.
    Tensor row_cond = Tensor::from_vector<bool>({true, false, true}, {3});
    Tensor frozen = rand_input({4, 3}, 47, false);
    expect_gradcheck(
        [row_cond](const auto& x) { return ops::where(row_cond, x[0].transpose(0, 1), x[1]); },
        {rand_input({3, 4}, 48), frozen});
    CHECK_FALSE(frozen.grad().defined());
    // A float cond that requires grad is still only a selector: it gets no gradient and records nothing alone.
    Tensor fcond = Tensor::from_vector<double>({0.0, 2.0, 0.0}, {3}).set_requires_grad(true);
    Tensor v = rand_input({3}, 49);
    ops::where(fcond, v, Tensor::zeros({3}, DType::F64)).backward(Tensor::ones({3}, DType::F64));
    CHECK(values(v.grad()) == std::vector<double>{0, 1, 0});
    CHECK_FALSE(fcond.grad().defined());
    CHECK_FALSE(ops::where(fcond, Tensor::ones({3}, DType::F64), Tensor::zeros({3}, DType::F64)).requires_grad());
}

TEST_CASE("masked_fill forward matches plain loops") {
    Tensor x = Tensor::randn({4, 3}, 50, DType::F64).transpose(0, 1);  // [3, 4], non-contiguous
    Tensor mask = Tensor::from_vector<bool>({true, false, false, true}, {4});
    Tensor out = ops::masked_fill(x, mask, -1e9);
    for (int64_t i = 0; i < 3; ++i)
        for (int64_t j = 0; j < 4; ++j) CHECK(out.at({i, j}) == (mask.at({j}) != 0 ? -1e9 : x.at({i, j})));
    Tensor inf = ops::masked_fill(Tensor::zeros({2, 2}), Tensor::from_vector<int32_t>({0, 3, 0, 0}, {2, 2}),
                                  -INFINITY);
    CHECK(std::isinf(inf.at({0, 1})));
    CHECK(inf.at({0, 0}) == 0.0);
    expect_error([&] { ops::masked_fill(Tensor::zeros({4}), Tensor::ones({3, 4}, DType::BOOL), 0); },
                 {"[3, 4]", "[4]"});
    CHECK_THROWS_AS(ops::masked_fill(Tensor::zeros({4}, DType::I64), Tensor::ones({4}, DType::BOOL), 0), Error);
}

TEST_CASE("masked_fill gradients are zero where filled (float64 gradcheck)") {
    Tensor mask = Tensor::from_vector<uint8_t>({0, 1, 1}, {3, 1});
    Tensor x = rand_input({3, 2}, 51);
    expect_gradcheck([mask](const auto& in) { return ops::masked_fill(in[0], mask, 2.5); }, {x});
    Tensor y = ops::masked_fill(x, mask, 2.5);
    x.zero_grad();
    y.backward(Tensor::ones({3, 2}, DType::F64));
    CHECK(values(x.grad()) == std::vector<double>{1, 1, 0, 0, 0, 0});
    expect_gradcheck(
        [mask](const auto& in) { return ops::masked_fill(in[0].transpose(0, 1), mask.reshape({3}), 0.0); },
        {rand_input({3, 2}, 52)});
}

TEST_CASE("shape ops on tensors large enough to run threaded match plain loops") {
    const int64_t P = 64, n = 40, Q = 20;  // 51,200 elements, above kParallelGrain
    Tensor x = Tensor::randn({P, n, Q}, 60, DType::F64).set_requires_grad(true);
    std::vector<int64_t> idx;
    for (int64_t k = 0; k < 50; ++k) idx.push_back((k * 7) % n);  // repeats
    const int64_t K = int64_t(idx.size());
    Tensor y = ops::index_select(x, 1, Tensor::from_vector(idx, {K}));
    Tensor g = Tensor::randn({P, K, Q}, 61, DType::F64);
    y.backward(g);
    const std::vector<double> xv = values(x), yv = values(y), gv = values(g), dx = values(x.grad());
    std::vector<double> dx_ref(xv.size(), 0.0);
    bool forward_ok = true;
    for (int64_t p = 0; p < P; ++p)
        for (int64_t k = 0; k < K; ++k)
            for (int64_t q = 0; q < Q; ++q) {
                const size_t src = size_t((p * n + idx[size_t(k)]) * Q + q), dst = size_t((p * K + k) * Q + q);
                forward_ok = forward_ok && yv[dst] == xv[src];
                dx_ref[src] += gv[dst];
            }
    CHECK(forward_ok);
    CHECK(dx == dx_ref);  // same summation order as the loop above: bit-identical

    Tensor big = ops::concat({x.detach(), x.detach() * 2.0}, 1);  // [P, 2n, Q]
    Tensor back = ops::slice(big, 1, n, 2 * n);
    expect_close(back, x.detach() * 2.0, 0, 1e-15, "concat then slice");
    Tensor cond = ops::masked_fill(Tensor::zeros({n, 1}, DType::F64), Tensor::arange(n).reshape({n, 1}), 1.0);
    Tensor w = ops::where(cond, x.detach(), Tensor::scalar(-1, DType::F64));  // index 0 of dim 1 is false
    CHECK(w.at({5, 0, 3}) == -1.0);
    CHECK(w.at({5, 1, 3}) == x.at({5, 1, 3}));
    CHECK(w.at({P - 1, n - 1, Q - 1}) == x.at({P - 1, n - 1, Q - 1}));
}
