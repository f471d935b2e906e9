// embedding: row lookup against a plain loop (I64 and I32 ids of any shape, a strided weight), repeated ids
// accumulating in the backward, float64 gradcheck, and out-of-range ids reported with id, position and V.
#include "test_util.h"

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {
// out[n, :] = weight[ids[n], :] by a plain loop, as [ids..., D].
Tensor reference_embedding(const Tensor& weight, const std::vector<int64_t>& ids, const Shape& ids_shape) {
    const int64_t D = weight.size(1);
    Shape shape = ids_shape;
    shape.push_back(D);
    Tensor out = Tensor::zeros(shape, DType::F64);
    Tensor flat = out.reshape({int64_t(ids.size()), D});
    for (size_t n = 0; n < ids.size(); ++n)
        for (int64_t j = 0; j < D; ++j) flat.set({int64_t(n), j}, weight.at({ids[n], j}));
    return out;
}
}  // namespace

TEST_CASE("embedding forward matches a plain lookup for I64 and I32 ids") {
    Tensor w = Tensor::randn({7, 3}, 1, DType::F64);
    const std::vector<int64_t> ids = {0, 6, 2, 2, 5, 1};
    Tensor ids64 = Tensor::from_vector(ids, {2, 3});
    Tensor ids32 = Tensor::from_vector(std::vector<int32_t>(ids.begin(), ids.end()), {3, 2});
    Tensor out = ops::embedding(w, ids64);
    CHECK(out.shape() == Shape{2, 3, 3});
    expect_close(out, reference_embedding(w, ids, {2, 3}), 0, 1e-300, "I64 ids");
    expect_close(ops::embedding(w, ids32), reference_embedding(w, ids, {3, 2}), 0, 1e-300, "I32 ids");
    Tensor scalar_id = Tensor::from_vector(std::vector<int64_t>{4}, {1}).reshape({});
    CHECK(ops::embedding(w, scalar_id).shape() == Shape{3});
    Tensor wt = Tensor::randn({3, 7}, 2).transpose(0, 1);  // [7, 3] strided view, float32
    expect_close(ops::embedding(wt, ids64), reference_embedding(wt.to(DType::F64), ids, {2, 3}), 0, 1e-300,
                 "transposed weight");
}

TEST_CASE("embedding backward accumulates repeated ids") {
    Tensor w = Tensor::randn({5, 4}, 3, DType::F64).set_requires_grad(true);
    Tensor ids = Tensor::from_vector(std::vector<int64_t>{3, 1, 3, 3, 0}, {5});
    Tensor g = Tensor::randn({5, 4}, 4, DType::F64);
    ops::embedding(w, ids).backward(g);
    Tensor expected = Tensor::zeros({5, 4}, DType::F64);
    const std::vector<int64_t> idv = {3, 1, 3, 3, 0};
    for (int64_t n = 0; n < 5; ++n)
        for (int64_t j = 0; j < 4; ++j)
            expected.set({idv[size_t(n)], j}, expected.at({idv[size_t(n)], j}) + g.at({n, j}));
    expect_close(w.grad(), expected, 1e-15, 1e-15, "dweight");
    CHECK(w.grad().at({2, 0}) == 0.0);  // unused row stays zero
}

TEST_CASE("embedding gradients (float64 gradcheck)") {
    Tensor ids = Tensor::from_vector(std::vector<int32_t>{2, 0, 2, 4, 4, 4}, {2, 3});
    expect_gradcheck([ids](const auto& x) { return ops::embedding(x[0], ids); }, {rand_input({6, 3}, 5)});
    expect_gradcheck([ids](const auto& x) { return ops::embedding(x[0].transpose(0, 1), ids); },
                     {rand_input({3, 6}, 6)});
}

TEST_CASE("embedding rejects out-of-range ids naming id position and V") {
    Tensor w = Tensor::ones({10, 2});
    Tensor ids = Tensor::from_vector(std::vector<int64_t>{1, 2, 3, 4, 12, 5}, {2, 3});
    try {
        ops::embedding(w, ids);
        FAIL("expected an error");
    } catch (const Error& e) {
        const std::string msg = e.what();
        CHECK(msg.find("id 12") != std::string::npos);
        CHECK(msg.find("[1, 1]") != std::string::npos);
        CHECK(msg.find("V = 10") != std::string::npos);
    }
    CHECK_THROWS_AS(ops::embedding(w, Tensor::from_vector(std::vector<int32_t>{-1}, {1})), Error);
    CHECK_THROWS_AS(ops::embedding(w, Tensor::ones({3}, DType::F32)), Error);  // float ids
    CHECK_THROWS_AS(ops::embedding(Tensor::ones({10}), ids), Error);          // 1-D weight
}

TEST_CASE("embedding backward is deterministic on a large batch of repeated ids") {
    const int64_t V = 50, D = 96, n = 4000;  // n * D over the threading grain
    std::vector<int64_t> idv(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) idv[size_t(i)] = (i * 7) % V;
    Tensor ids = Tensor::from_vector(idv, {n});
    Tensor g = Tensor::randn({n, D}, 7);
    Tensor w1 = Tensor::randn({V, D}, 8).set_requires_grad(true);
    ops::embedding(w1, ids).backward(g);
    const std::vector<float> first = w1.grad().to_vector<float>();
    w1.zero_grad();
    ops::embedding(w1, ids).backward(g);
    CHECK(w1.grad().to_vector<float>() == first);
    // Same as a sequential scatter-add in id order (float32, same summation order).
    std::vector<float> seq(size_t(V * D), 0.0f);
    const std::vector<float> gv = g.to_vector<float>();
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < D; ++j) seq[size_t(idv[size_t(i)] * D + j)] += gv[size_t(i * D + j)];
    CHECK(first == seq);
}
