// Views share storage and their gradients map back to the input's shape.
#include "test_util.h"

using namespace ssmtune;
using namespace ssmtune::testing;

TEST_CASE("views share storage") {
    Tensor t = Tensor::arange(0, 12, 1, DType::F32).reshape({3, 4});
    Tensor tr = t.transpose(0, 1);
    CHECK(tr.storage() == t.storage());
    CHECK(tr.at({2, 1}) == t.at({1, 2}));
    Tensor n = t.narrow(1, 1, 2);
    CHECK(n.storage() == t.storage());
    CHECK(n.at({2, 0}) == 9.0);
    Tensor e = Tensor::arange(0, 3, 1, DType::F32).reshape({3, 1}).expand({3, 5});
    CHECK(e.strides()[1] == 0);
    CHECK(e.at({2, 4}) == 2.0);
    t.set({0, 0}, 42.0);
    CHECK(tr.at({0, 0}) == 42.0);
}

TEST_CASE("reshape views when possible and copies otherwise, view refuses to copy") {
    Tensor t = Tensor::randn({4, 6}, 1);
    CHECK(t.reshape({2, -1, 3}).storage() == t.storage());
    Tensor tr = t.transpose(0, 1);  // [6, 4], non-contiguous
    Tensor r = tr.reshape({24});
    CHECK(r.storage() != t.storage());
    CHECK(r.at({5}) == tr.at({1, 1}));
    CHECK_THROWS_AS(tr.view({24}), Error);
    CHECK(t.narrow(0, 1, 2).view({12}).at({0}) == t.at({1, 0}));  // row slices stay viewable
    CHECK_THROWS_AS(t.reshape({5, 5}), Error);
}

TEST_CASE("view gradients (float64 gradcheck)") {
    Tensor x = rand_input({2, 3, 4}, 3);
    Tensor w = rand_input({4, 3, 2}, 4, false);
    expect_gradcheck([w](const auto& in) { return in[0].permute({2, 1, 0}) * w; }, {x});
    expect_gradcheck([](const auto& in) { return in[0].transpose(0, 2).reshape({4, 6}); }, {x});
    expect_gradcheck([](const auto& in) { return in[0].narrow(1, 1, 2).flatten(); }, {x});
    expect_gradcheck([](const auto& in) { return in[0].select(2, 3); }, {x});
    Tensor col = rand_input({3, 1}, 5);
    expect_gradcheck([](const auto& in) { return in[0].expand({2, 3, 4}); }, {col});
    expect_gradcheck([](const auto& in) { return in[0].unsqueeze(0).squeeze(2); }, {col});
}

TEST_CASE("contiguous clone and to dtype are differentiable copies") {
    Tensor x = rand_input({3, 2}, 6);
    expect_gradcheck([](const auto& in) { return in[0].transpose(0, 1).contiguous(); }, {x});
    expect_gradcheck([](const auto& in) { return in[0].clone() * in[0]; }, {x});
    expect_gradcheck([](const auto& in) { return in[0].to(DType::F32).to(DType::F64); },
                     {x}, autograd::GradcheckOptions{1e-3, 1e-4, 1e-3});
}
