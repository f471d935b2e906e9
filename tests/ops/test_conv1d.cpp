// causal_conv1d: forward against the defining sum (K = 1, 2, 4, L < K, both weight layouts, bias or not),
// float64 gradchecks for x, weight and bias, and shape errors.
#include "test_util.h"

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {
// out[b, c, t] = bias[c] + Σ_k weight[c, k] x[b, c, t − (K−1) + k], by plain loops in double.
Tensor reference_conv(const Tensor& x, const Tensor& weight, const Tensor& bias) {
    const int64_t B = x.size(0), C = x.size(1), L = x.size(2), K = weight.size(-1);
    Tensor w = weight.reshape({C, K});
    Tensor out = Tensor::zeros({B, C, L}, DType::F64);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t c = 0; c < C; ++c)
            for (int64_t t = 0; t < L; ++t) {
                double s = bias.defined() ? bias.at({c}) : 0.0;
                for (int64_t k = 0; k < K; ++k) {
                    const int64_t src = t - (K - 1) + k;
                    if (src >= 0) s += w.at({c, k}) * x.at({b, c, src});
                }
                out.set({b, c, t}, s);
            }
    return out;
}
}  // namespace

TEST_CASE("causal_conv1d forward matches the defining sum") {
    for (int64_t K : {1, 2, 4}) {
        for (int64_t L : {1, 3, 7}) {
            CAPTURE(K);
            CAPTURE(L);
            Tensor x = Tensor::randn({2, 3, L}, 1, DType::F64), w = Tensor::randn({3, K}, 2, DType::F64);
            Tensor bias = Tensor::randn({3}, 3, DType::F64);
            expect_close(ops::causal_conv1d(x, w, bias), reference_conv(x, w, bias), 1e-14, 1e-14, "with bias");
            expect_close(ops::causal_conv1d(x, w.reshape({3, 1, K})), reference_conv(x, w, Tensor()), 1e-14, 1e-14,
                         "[C, 1, K] weight, no bias");
        }
    }
    Tensor xf = Tensor::randn({2, 8, 5}, 4).transpose(1, 2);  // [2, 5, 8] non-contiguous, float32
    Tensor wf = Tensor::randn({5, 4}, 5);
    Tensor out = ops::causal_conv1d(xf, wf);
    CHECK(out.dtype() == DType::F32);
    expect_close(out, reference_conv(xf.to(DType::F64), wf.to(DType::F64), Tensor()), 1e-5, 1e-6, "f32 strided x");
}

TEST_CASE("causal_conv1d gradients (float64 gradcheck)") {
    auto conv = [](const std::vector<Tensor>& in) { return ops::causal_conv1d(in[0], in[1], in.size() > 2 ? in[2] : Tensor()); };
    for (int64_t K : {1, 2, 4}) {
        CAPTURE(K);
        expect_gradcheck(conv, {rand_input({2, 3, 6}, 10), rand_input({3, K}, 11), rand_input({3}, 12)});
        expect_gradcheck(conv, {rand_input({2, 3, 6}, 13), rand_input({3, 1, K}, 14)});
    }
    // L < K: every output sees the zero padding
    expect_gradcheck(conv, {rand_input({2, 2, 2}, 15), rand_input({2, 4}, 16), rand_input({2}, 17)});
    expect_gradcheck(conv, {rand_input({1, 2, 1}, 18), rand_input({2, 1, 4}, 19)});
    // non-contiguous x, and only some inputs needing gradients
    expect_gradcheck([](const auto& in) { return ops::causal_conv1d(in[0].transpose(1, 2), in[1], in[2]); },
                     {rand_input({2, 5, 3}, 20), rand_input({3, 4}, 21, false), rand_input({3}, 22)});
}

TEST_CASE("causal_conv1d rejects mismatched shapes") {
    Tensor x = Tensor::ones({2, 3, 5});
    CHECK_THROWS_AS(ops::causal_conv1d(x, Tensor::ones({4, 2})), Error);       // C mismatch
    CHECK_THROWS_AS(ops::causal_conv1d(x, Tensor::ones({3, 2, 2})), Error);    // not depthwise
    CHECK_THROWS_AS(ops::causal_conv1d(x, Tensor::ones({3, 0})), Error);       // K = 0
    CHECK_THROWS_AS(ops::causal_conv1d(x, Tensor::ones({3, 2}), Tensor::ones({2})), Error);
    CHECK_THROWS_AS(ops::causal_conv1d(Tensor::ones({3, 5}), Tensor::ones({3, 2})), Error);
}
