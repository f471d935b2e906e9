// dropout: identity outside training, the mask as defined by Philox draws, keep-fraction statistics,
// reproducibility from the generator state, the backward, and the p checks.
#include <cmath>

#include "test_util.h"

using namespace ssmtune;
using namespace ssmtune::testing;

TEST_CASE("dropout is the identity when not training or p is 0") {
    Tensor x = Tensor::randn({4, 5}, 1);
    Generator gen(7);
    CHECK(ops::dropout(x, 0.5, false, gen).same(x));
    CHECK(ops::dropout(x, 0.0, true, gen).same(x));
    CHECK(gen.offset() == 0);  // no draws consumed
}

TEST_CASE("dropout mask follows the Philox draws and rescales by 1 over 1-p") {
    const double p = 0.3;
    Tensor x = Tensor::randn({6, 7}, 2, DType::F64);
    Generator gen(11);
    gen.advance(5);  // a non-zero starting offset
    Tensor y = ops::dropout(x, p, true, gen);
    CHECK(gen.offset() == 5 + 42);
    const std::vector<double> xv = x.to_vector<double>(), yv = y.to_vector<double>();
    for (size_t i = 0; i < xv.size(); ++i) {
        const bool keep = philox_uniform(11, 5 + i) >= p;
        CHECK(yv[i] == doctest::Approx(keep ? xv[i] / (1 - p) : 0.0).epsilon(1e-15));
    }
}

TEST_CASE("dropout keeps about 1-p of 100k elements") {
    for (double p : {0.1, 0.5, 0.9}) {
        CAPTURE(p);
        Generator gen(3);
        Tensor y = ops::dropout(Tensor::ones({100000}), p, true, gen);
        const std::vector<float> v = y.to_vector<float>();
        int64_t kept = 0;
        for (float f : v) {
            if (f != 0.0f) {
                ++kept;
                CHECK(f == doctest::Approx(1.0 / (1.0 - p)).epsilon(1e-6));
            }
        }
        const double frac = double(kept) / 1e5, sigma = std::sqrt(p * (1 - p) / 1e5);
        CHECK(std::fabs(frac - (1 - p)) < 5 * sigma);
    }
}

TEST_CASE("dropout is reproducible from the generator state") {
    Tensor x = Tensor::randn({50000}, 4);
    Generator g1(99), g2(99);
    const std::vector<float> a = ops::dropout(x, 0.2, true, g1).to_vector<float>();
    const std::vector<float> b = ops::dropout(x, 0.2, true, g2).to_vector<float>();
    CHECK(a == b);                         // same state -> same mask (50k elements: threaded path)
    CHECK(g1.offset() == g2.offset());
    const std::vector<float> c = ops::dropout(x, 0.2, true, g1).to_vector<float>();
    CHECK(a != c);                         // advanced offset -> a different mask
    Generator g3(100);
    CHECK(ops::dropout(x, 0.2, true, g3).to_vector<float>() != a);  // different seed
}

TEST_CASE("dropout backward applies the same mask") {
    Tensor x = rand_input({3, 8}, 5);
    Generator gen(21);
    Generator replay = gen;
    Tensor y = ops::dropout(x, 0.4, true, gen);
    Tensor g = Tensor::randn({3, 8}, 6, DType::F64);
    y.backward(g);
    const std::vector<double> dx = x.grad().to_vector<double>(), gv = g.to_vector<double>();
    const uint64_t first = replay.advance(24);
    for (size_t i = 0; i < dx.size(); ++i) {
        const bool keep = philox_uniform(21, first + i) >= 0.4;
        CHECK(dx[i] == doctest::Approx(keep ? gv[i] / 0.6 : 0.0).epsilon(1e-15));
    }
    // gradcheck with a fixed generator state per evaluation (the mask is a constant of the function)
    expect_gradcheck([](const auto& in) { Generator local(5); return ops::dropout(in[0].transpose(0, 1), 0.25, true, local); },
                     {rand_input({4, 6}, 7)});
}

TEST_CASE("dropout rejects p outside the range 0 to 1") {
    Tensor x = Tensor::ones({3});
    Generator gen(1);
    try {
        ops::dropout(x, 1.0, true, gen);
        FAIL("expected an error");
    } catch (const Error& e) {
        CHECK(std::string(e.what()).find("divides by zero") != std::string::npos);
    }
    CHECK_THROWS_AS(ops::dropout(x, -0.1, true, gen), Error);
    CHECK_THROWS_AS(ops::dropout(x, 1.5, false, gen), Error);
    CHECK_THROWS_AS(ops::dropout(x, std::nan(""), true, gen), Error);
}
