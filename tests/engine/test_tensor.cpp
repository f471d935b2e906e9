// Tensor basics: factories, seeded RNG (Philox known answer), F16/BF16 conversions, dtype casts, alignment,
// element access, printing, views' bounds, and the CUDA seam without a backend.
#include "test_util.h"

#include <limits>

#include "cuda/runtime.h"

using namespace ssmtune;
using namespace ssmtune::testing;

TEST_CASE("factories fill shapes and dtypes") {
    CHECK(Tensor::zeros({2, 3}).to_vector<float>() == std::vector<float>(6, 0.0f));
    CHECK(Tensor::ones({2}, DType::I32).to_vector<int64_t>() == std::vector<int64_t>{1, 1});
    CHECK(Tensor::full({2}, 2.5, DType::F64).to_vector<double>() == std::vector<double>{2.5, 2.5});
    CHECK(Tensor::arange(4).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3});
    CHECK(Tensor::arange(1.0, 2.0, 0.25, DType::F64).to_vector<double>() == std::vector<double>{1, 1.25, 1.5, 1.75});
    CHECK(Tensor::scalar(7.0).dim() == 0);
    CHECK(Tensor::scalar(7.0).item() == 7.0);
    CHECK(Tensor::from_vector<int64_t>({1, 2, 3, 4}, {2, 2}).at({1, 0}) == 3.0);
    CHECK_THROWS_AS(Tensor::from_vector<float>({1, 2, 3}, {2, 2}), Error);
    CHECK_THROWS_AS(Tensor::zeros({2, -1}), Error);
}

TEST_CASE("philox4x32-10 matches the Random123 known answer") {
    uint32_t counter[4] = {0, 0, 0, 0}, out[4];
    philox4x32_10(counter, 0, 0, out);
    CHECK(out[0] == 0x6627e8d5u);
    CHECK(out[1] == 0xe169c58du);
    CHECK(out[2] == 0xbc57ac4cu);
    CHECK(out[3] == 0x9b00dbd8u);
}

TEST_CASE("seeded draws are reproducible and advance the generator") {
    CHECK(Tensor::randn({5}, 3).to_vector<float>() == Tensor::randn({5}, 3).to_vector<float>());
    CHECK(Tensor::randn({5}, 3).to_vector<float>() != Tensor::randn({5}, 4).to_vector<float>());
    Generator g(9);
    Tensor a = Tensor::randn({3}, g, DType::F64);
    CHECK(g.offset() == 3);
    Tensor b = Tensor::randn({3}, g, DType::F64);
    CHECK(a.to_vector<double>() != b.to_vector<double>());
    Generator h(9);
    h.advance(3);
    CHECK(Tensor::randn({3}, h, DType::F64).to_vector<double>() == b.to_vector<double>());
    const std::vector<double> v = Tensor::randn({100000}, 11, DType::F64).to_vector<double>();
    double mean = 0, sq = 0;
    for (double x : v) { mean += x; sq += x * x; }
    mean /= double(v.size());
    CHECK(std::fabs(mean) < 0.02);
    CHECK(std::fabs(std::sqrt(sq / double(v.size()) - mean * mean) - 1.0) < 0.02);
    for (double u : Tensor::uniform({1000}, 12, -2.0, 3.0, DType::F64).to_vector<double>()) {
        CHECK(u >= -2.0);
        CHECK(u < 3.0);
    }
}

TEST_CASE("float16 and bfloat16 conversions round to nearest even") {
    const auto h = [](float f) { return float(half_t(f)); };
    CHECK(h(1.0f) == 1.0f);
    CHECK(h(-2.5f) == -2.5f);
    CHECK(h(65504.0f) == 65504.0f);
    CHECK(std::isinf(h(65520.0f)));
    CHECK(h(1e-8f) == 0.0f);
    CHECK(h(std::ldexp(1.0f, -24)) == std::ldexp(1.0f, -24));  // smallest subnormal
    CHECK(std::isnan(h(std::numeric_limits<float>::quiet_NaN())));
    CHECK(h(1.0f + std::ldexp(1.0f, -11)) == 1.0f);                                   // tie → even
    CHECK(h(1.0f + 3 * std::ldexp(1.0f, -11)) == 1.0f + std::ldexp(1.0f, -9));        // tie → even (up)
    CHECK(half_t(1.0f).bits == 0x3c00);
    const auto b = [](float f) { return float(bf16_t(f)); };
    CHECK(b(1.00390625f) == 1.0f);          // 1 + 2^-8 is a tie → even
    CHECK(b(1.01171875f) == 1.015625f);     // 1 + 3·2^-8 is a tie → even (up)
    CHECK(bf16_t(1.0f).bits == 0x3f80);
    CHECK(std::isnan(b(std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("to(dtype) converts between every pair of dtypes") {
    const std::vector<DType> all = {DType::F32, DType::F64, DType::I64, DType::I32, DType::F16,
                                    DType::BF16, DType::I16, DType::I8, DType::U8};
    Tensor base = Tensor::from_vector<double>({0, 1, 2, 7}, {4});
    for (DType a : all)
        for (DType b : all) CHECK(base.to(a).to(b).to_vector<double>() == base.to_vector<double>());
    CHECK(base.to(DType::BOOL).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 1, 1});
}

TEST_CASE("storage is 64-byte aligned and counted") {
    const size_t before = cpu_bytes_in_use();
    {
        Tensor t = Tensor::empty({3, 5}, DType::F64);
        CHECK(reinterpret_cast<uintptr_t>(t.raw_data()) % 64 == 0);
        CHECK(cpu_bytes_in_use() >= before + 120);
    }
    CHECK(cpu_bytes_in_use() == before);
}

TEST_CASE("element access supports negative indices and checks bounds") {
    Tensor t = Tensor::arange(0, 6, 1, DType::F64).reshape({2, 3});
    CHECK(t.at({-1, -1}) == 5.0);
    t.set({0, -2}, 9.0);
    CHECK(t.at({0, 1}) == 9.0);
    CHECK_THROWS_AS(t.at({2, 0}), Error);
    CHECK_THROWS_AS(t.at({0}), Error);
    CHECK_THROWS_AS(t.item(), Error);
    CHECK_THROWS_AS(t.as_strided({3, 3}, {3, 1}, 0), Error);
    CHECK_THROWS_AS(Tensor().shape(), Error);
}

TEST_CASE("printing elides long dimensions and describe names dtype shape and device") {
    Tensor t = Tensor::arange(0, 100, 1, DType::F32);
    const std::string s = t.to_string();
    CHECK(s.find("...") != std::string::npos);
    CHECK(s.find("99") != std::string::npos);
    CHECK(t.reshape({4, 25}).describe() == "F32[4, 25] cpu");
}

TEST_CASE("cuda tensors need a backend and say how to get one") {
    if (cuda::available()) return;  // a GPU machine runs the GPU suite instead
    try {
        Tensor::zeros({2}, DType::F32, Device::cuda());
        FAIL("expected an error");
    } catch (const Error& e) {
        const std::string msg = e.what();
        CHECK((msg.find("SSMTUNE_CUDA") != std::string::npos || msg.find("no usable CUDA GPU") != std::string::npos));
    }
}
