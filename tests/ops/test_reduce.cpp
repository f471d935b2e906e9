// sum, mean, max, argmax: forward against plain loops, float64 gradients, determinism, errors.
#include "test_util.h"

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace ssmtune;
using namespace ssmtune::testing;

TEST_CASE("sum and mean forward match plain loops over chosen dims") {
    Tensor x = Tensor::randn({3, 4, 5}, 1, DType::F64);
    Tensor s = ops::sum(x, {0, 2});
    Tensor m = ops::mean(x, {-1}, true);
    CHECK(s.shape() == Shape{4});
    CHECK(m.shape() == Shape{3, 4, 1});
    for (int64_t j = 0; j < 4; ++j) {
        double ref = 0;
        for (int64_t i = 0; i < 3; ++i)
            for (int64_t k = 0; k < 5; ++k) ref += x.at({i, j, k});
        CHECK(s.at({j}) == doctest::Approx(ref).epsilon(1e-14));
    }
    for (int64_t i = 0; i < 3; ++i)
        for (int64_t j = 0; j < 4; ++j) {
            double ref = 0;
            for (int64_t k = 0; k < 5; ++k) ref += x.at({i, j, k});
            CHECK(m.at({i, j, 0}) == doctest::Approx(ref / 5).epsilon(1e-14));
        }
    CHECK(ops::sum(x).dim() == 0);
    CHECK(ops::sum(Tensor::zeros({0, 3}, DType::F64)).item() == 0.0);
    CHECK(std::isnan(ops::mean(Tensor::zeros({0}, DType::F64)).item()));
}

TEST_CASE("max and argmax pick the first maximum") {
    Tensor x = Tensor::from_vector<double>({1, 5, 5, 2, -1, 7, 7, 0}, {2, 4});
    Tensor v = ops::max(x, 1);
    CHECK(v.to_vector<double>() == std::vector<double>{5, 7});
    CHECK(ops::argmax(x, 1).to_vector<int64_t>() == std::vector<int64_t>{1, 1});
    CHECK(ops::max(x).item() == 7.0);
    x.set_requires_grad(true);
    ops::sum(ops::max(x, 1, true)).backward();
    CHECK(x.grad().to_vector<double>() == std::vector<double>{0, 1, 0, 0, 0, 1, 0, 0});
}

TEST_CASE("reduce gradients in float64") {
    Tensor x = rand_input({3, 4, 2}, 2);
    expect_gradcheck([](const auto& in) { return ops::sum(in[0], {1}); }, {x});
    expect_gradcheck([](const auto& in) { return ops::sum(in[0], {0, -1}, true); }, {x});
    expect_gradcheck([](const auto& in) { return ops::mean(in[0], {2, 0}); }, {x});
    expect_gradcheck([](const auto& in) { return ops::mean(in[0]); }, {x});
    expect_gradcheck([](const auto& in) { return ops::max(in[0], 1); }, {x});
    expect_gradcheck([](const auto& in) { return ops::max(in[0], -1, true); }, {x});
    expect_gradcheck([](const auto& in) { return ops::sum(in[0].transpose(0, 2), {1}); }, {x});
}

TEST_CASE("reduce errors name the problem") {
    Tensor x = Tensor::zeros({2, 3});
    CHECK_THROWS_AS(ops::sum(x, {2}), Error);
    CHECK_THROWS_AS(ops::sum(x, {1, -1}), Error);
    CHECK_THROWS_AS(ops::max(Tensor::zeros({2, 0}), 1), Error);
}

TEST_CASE("reductions give the same bits with 1 and 2 threads") {
    if (!threads_can_run()) return;
#ifdef _OPENMP
    Tensor x = Tensor::randn({64, 1000}, 3);
    const int before = omp_get_max_threads();
    omp_set_num_threads(1);
    std::vector<float> a = ops::sum(x, {1}).to_vector<float>(), c = ops::mean(x, {0}).to_vector<float>();
    omp_set_num_threads(2);
    std::vector<float> b = ops::sum(x, {1}).to_vector<float>(), d = ops::mean(x, {0}).to_vector<float>();
    omp_set_num_threads(before);
    CHECK(a == b);
    CHECK(c == d);
#endif
}
