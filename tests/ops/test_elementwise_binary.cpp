// add/sub/mul/div: forward against plain loops (broadcasting, non-contiguous inputs), gradients in float64.
#include "test_util.h"

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {
// Plain-loop reference for a 2-D op with row/column broadcasting: out[i,j] = f(a[i or 0, j or 0], b[...]).
template <class F>
Tensor reference_2d(const Tensor& a, const Tensor& b, int64_t rows, int64_t cols, F f) {
    Tensor out = Tensor::zeros({rows, cols}, DType::F64);
    for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j) {
            const double x = a.at({a.size(0) == 1 ? 0 : i, a.size(1) == 1 ? 0 : j});
            const double y = b.at({b.size(0) == 1 ? 0 : i, b.size(1) == 1 ? 0 : j});
            out.set({i, j}, f(x, y));
        }
    return out;
}
}  // namespace

TEST_CASE("binary ops forward match plain loops with broadcasting") {
    Tensor a = Tensor::randn({4, 5}, 1, DType::F64);
    Tensor col = Tensor::randn({4, 1}, 2, DType::F64);
    Tensor row = Tensor::uniform({1, 5}, 3, 0.5, 2.0, DType::F64);
    expect_close(ops::add(a, col), reference_2d(a, col, 4, 5, [](double x, double y) { return x + y; }), 0, 1e-15, "add");
    expect_close(ops::sub(a, row), reference_2d(a, row, 4, 5, [](double x, double y) { return x - y; }), 0, 1e-15, "sub");
    expect_close(ops::mul(col, row), reference_2d(col, row, 4, 5, [](double x, double y) { return x * y; }), 0, 1e-15, "mul");
    expect_close(ops::div(a, row), reference_2d(a, row, 4, 5, [](double x, double y) { return x / y; }), 0, 1e-15, "div");
}

TEST_CASE("binary ops accept non-contiguous views and keep float32") {
    Tensor a = Tensor::randn({5, 4}, 4).transpose(0, 1);  // [4, 5], non-contiguous
    Tensor b = Tensor::randn({4, 5}, 5);
    CHECK_FALSE(a.is_contiguous());
    Tensor out = a * b;
    CHECK(out.dtype() == DType::F32);
    expect_close(out, reference_2d(a.to(DType::F64), b.to(DType::F64), 4, 5, [](double x, double y) { return x * y; }),
                 1e-6, 1e-7, "mul of a transposed view");
}

TEST_CASE("broadcast_shapes follows NumPy and names both shapes on error") {
    CHECK(ops::broadcast_shapes({3, 1, 5}, {4, 1}) == Shape{3, 4, 5});
    CHECK(ops::broadcast_shapes({}, {2, 3}) == Shape{2, 3});
    try {
        ops::broadcast_shapes({3, 4}, {5});
        FAIL("expected an error");
    } catch (const Error& e) {
        const std::string msg = e.what();
        CHECK(msg.find("[3, 4]") != std::string::npos);
        CHECK(msg.find("[5]") != std::string::npos);
    }
}

TEST_CASE("binary ops reject mixed dtypes with a clear error") {
    Tensor a = Tensor::ones({2}, DType::F32), b = Tensor::ones({2}, DType::F64);
    CHECK_THROWS_AS(ops::add(a, b), Error);
}

TEST_CASE("binary ops gradients in float64 with broadcasting both ways") {
    Tensor a = rand_input({3, 4}, 10), col = rand_input({3, 1}, 11), row = rand_input({4}, 12);
    Tensor pos = Tensor::uniform({3, 4}, 13, 0.5, 1.5, DType::F64).set_requires_grad(true);
    expect_gradcheck([](const auto& x) { return ops::add(x[0], x[1]); }, {a, col});
    expect_gradcheck([](const auto& x) { return ops::sub(x[0], x[1]); }, {row, a});
    expect_gradcheck([](const auto& x) { return ops::mul(x[0], x[1]); }, {col, row});
    expect_gradcheck([](const auto& x) { return ops::div(x[0], x[1]); }, {row, pos});
    expect_gradcheck([](const auto& x) { return 2.0 - x[0] * 3.0 + x[0] / 4.0; }, {a});
}

TEST_CASE("binary ops gradients on non-contiguous inputs") {
    Tensor base = rand_input({4, 3}, 20);
    Tensor b = rand_input({3, 4}, 21);
    expect_gradcheck([](const auto& x) { return ops::mul(x[0].transpose(0, 1), x[1]); }, {base, b});
}

TEST_CASE("sum_to_shape reverses broadcasting") {
    Tensor g = Tensor::ones({2, 3, 4}, DType::F64);
    Tensor r = ops::sum_to_shape(g, {3, 1});
    CHECK(r.shape() == Shape{3, 1});
    CHECK(r.at({0, 0}) == 8.0);
}
