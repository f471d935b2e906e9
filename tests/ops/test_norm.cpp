// rmsnorm and layernorm: plain-loop references, float64 gradients of every input, determinism of dw.
#include "test_util.h"

using namespace ssmtune;
using namespace ssmtune::testing;

TEST_CASE("rmsnorm and layernorm match plain loops") {
    Tensor x = Tensor::randn({3, 5}, 1, DType::F64), w = Tensor::randn({5}, 2, DType::F64),
           b = Tensor::randn({5}, 3, DType::F64);
    Tensor r = ops::rmsnorm(x, w, 1e-5), l = ops::layernorm(x, w, b, 1e-5), l0 = ops::layernorm(x, Tensor(), Tensor(), 1e-5);
    for (int64_t i = 0; i < 3; ++i) {
        double ss = 0, mu = 0, var = 0;
        for (int64_t j = 0; j < 5; ++j) { ss += x.at({i, j}) * x.at({i, j}); mu += x.at({i, j}); }
        mu /= 5;
        for (int64_t j = 0; j < 5; ++j) var += (x.at({i, j}) - mu) * (x.at({i, j}) - mu);
        const double rs = 1 / std::sqrt(ss / 5 + 1e-5), ls = 1 / std::sqrt(var / 5 + 1e-5);
        for (int64_t j = 0; j < 5; ++j) {
            CHECK(r.at({i, j}) == doctest::Approx(x.at({i, j}) * rs * w.at({j})).epsilon(1e-13));
            CHECK(l.at({i, j}) == doctest::Approx((x.at({i, j}) - mu) * ls * w.at({j}) + b.at({j})).epsilon(1e-13));
            CHECK(l0.at({i, j}) == doctest::Approx((x.at({i, j}) - mu) * ls).epsilon(1e-13));
        }
    }
}

TEST_CASE("norm gradients in float64 for input weight and bias") {
    Tensor x = rand_input({2, 3, 4}, 4), w = rand_input({4}, 5), b = rand_input({4}, 6);
    expect_gradcheck([](const auto& in) { return ops::rmsnorm(in[0], in[1], 1e-5); }, {x, w});
    expect_gradcheck([](const auto& in) { return ops::layernorm(in[0], in[1], in[2], 1e-5); }, {x, w, b});
    expect_gradcheck([](const auto& in) { return ops::layernorm(in[0], Tensor(), Tensor(), 1e-5); }, {x});
    Tensor xt = rand_input({4, 3}, 7);
    expect_gradcheck([w](const auto& in) { return ops::rmsnorm(in[0].transpose(0, 1), w.detach(), 1e-6); }, {xt});
}

TEST_CASE("norm rejects a weight of the wrong size") {
    CHECK_THROWS_AS(ops::rmsnorm(Tensor::zeros({2, 4}), Tensor::ones({3}), 1e-5), Error);
    CHECK_THROWS_AS(ops::layernorm(Tensor::zeros({2, 4}), Tensor::ones({4}), Tensor::ones({5}), 1e-5), Error);
}
