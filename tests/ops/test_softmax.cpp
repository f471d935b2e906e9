// softmax, log_softmax and cross_entropy: plain-loop references, float64 gradients, ignore_index, errors.
#include "test_util.h"

using namespace ssmtune;
using namespace ssmtune::testing;

TEST_CASE("softmax and log_softmax match plain loops and are stable for large inputs") {
    Tensor x = Tensor::from_vector<double>({1000, 1001, 1002, -3, 0, 3}, {2, 3});
    Tensor y = ops::softmax(x, 1), ly = ops::log_softmax(x, -1);
    for (int64_t r = 0; r < 2; ++r) {
        double m = -1e300, total = 0;
        for (int64_t j = 0; j < 3; ++j) m = std::max(m, x.at({r, j}));
        for (int64_t j = 0; j < 3; ++j) total += std::exp(x.at({r, j}) - m);
        for (int64_t j = 0; j < 3; ++j) {
            CHECK(y.at({r, j}) == doctest::Approx(std::exp(x.at({r, j}) - m) / total).epsilon(1e-14));
            CHECK(ly.at({r, j}) == doctest::Approx(x.at({r, j}) - m - std::log(total)).epsilon(1e-14));
        }
    }
    Tensor col = ops::softmax(x, 0);
    CHECK(col.at({0, 1}) + col.at({1, 1}) == doctest::Approx(1.0));
}

TEST_CASE("cross_entropy matches the plain formula with ignore_index and I32 targets") {
    Tensor logits = Tensor::randn({4, 5}, 4, DType::F64);
    Tensor target = Tensor::from_vector<int32_t>({2, -100, 0, 4}, {4});
    double ref = 0;
    for (int64_t m : {0, 2, 3}) {
        const int64_t t = m == 0 ? 2 : (m == 2 ? 0 : 4);
        double mx = -1e300, total = 0;
        for (int64_t j = 0; j < 5; ++j) mx = std::max(mx, logits.at({m, j}));
        for (int64_t j = 0; j < 5; ++j) total += std::exp(logits.at({m, j}) - mx);
        ref -= logits.at({m, t}) - mx - std::log(total);
    }
    CHECK(ops::cross_entropy(logits, target).item() == doctest::Approx(ref / 3).epsilon(1e-13));
    Tensor all_ignored = Tensor::from_vector<int64_t>({-100, -100, -100, -100}, {4});
    Tensor lg = logits.clone().set_requires_grad(true);
    Tensor l = ops::cross_entropy(lg, all_ignored);
    CHECK(l.item() == 0.0);
    l.backward();
    CHECK(ops::sum(ops::abs(lg.grad())).item() == 0.0);
}

TEST_CASE("softmax family gradients in float64") {
    Tensor x = rand_input({3, 4}, 5);
    expect_gradcheck([](const auto& in) { return ops::softmax(in[0], 1); }, {x});
    expect_gradcheck([](const auto& in) { return ops::softmax(in[0], 0); }, {x});
    expect_gradcheck([](const auto& in) { return ops::log_softmax(in[0], -1); }, {x});
    expect_gradcheck([](const auto& in) { return ops::log_softmax(in[0].transpose(0, 1), 1); }, {x});
    Tensor target = Tensor::from_vector<int64_t>({1, 3, -100}, {3});
    expect_gradcheck([target](const auto& in) { return ops::cross_entropy(in[0], target); }, {x});
    Tensor x3 = rand_input({2, 3, 4}, 6);
    Tensor t3 = Tensor::from_vector<int64_t>({0, 1, 2, 3, 0, 1}, {2, 3});
    expect_gradcheck([t3](const auto& in) { return ops::cross_entropy(in[0], t3); }, {x3});
}

TEST_CASE("cross_entropy rejects out-of-range targets and mismatched counts") {
    Tensor logits = Tensor::zeros({2, 3});
    try {
        ops::cross_entropy(logits, Tensor::from_vector<int64_t>({0, 3}, {2}));
        FAIL("expected an error");
    } catch (const Error& e) {
        CHECK(std::string(e.what()).find("target 3 at position 1") != std::string::npos);
    }
    CHECK_THROWS_AS(ops::cross_entropy(logits, Tensor::from_vector<int64_t>({0}, {1})), Error);
    CHECK_THROWS_AS(ops::cross_entropy(logits, Tensor::zeros({2})), Error);
}

TEST_CASE("cross_entropy float32 gradient keeps its digits when the target's probability is close to 1") {
    // Row 0 predicts its target with p = 1 − 2e−9·(…): the target's gradient p − 1 ≈ −4e−9 / 2 is below float32's
    // resolution of 1, so computing it as exp(logp) − 1 in float32 gives 0; row 1's loss is 1e−6-sized.
    const std::vector<double> values = {20, 0, 0, -1, 14, 0.5, 1, -2};
    const std::vector<int64_t> targets = {0, 1};
    Tensor t = Tensor::from_vector<int64_t>(targets, {2});
    Tensor x64 = Tensor::from_vector<double>(values, {2, 4}).set_requires_grad(true);
    Tensor x32 = x64.detach().to(DType::F32).set_requires_grad(true);
    const Tensor l64 = ops::cross_entropy(x64, t), l32 = ops::cross_entropy(x32, t);
    CHECK(std::abs(l32.item() - l64.item()) <= 1e-5 * l64.item());
    l64.backward();
    l32.backward();
    for (int64_t r = 0; r < 2; ++r)
        for (int64_t j = 0; j < 4; ++j) {
            const double want = x64.grad().at({r, j}), got = x32.grad().at({r, j});
            CAPTURE(r);
            CAPTURE(j);
            CHECK(want != 0.0);
            CHECK(std::abs(got - want) <= 1e-5 * std::abs(want));  // relative: these gradients are 1e-9 to 0.5
        }
}
