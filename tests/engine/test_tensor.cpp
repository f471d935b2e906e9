// Tensor basics: factories, seeded RNG (Philox known answers, determinism, moments), F16/BF16 conversions
// (exact values, ties, exhaustive round trips), dtype casts between all pairs, storage alignment and byte
// counting, element access, printing, describe(), as_strided bounds, and the CUDA seam without a backend.
#include "test_util.h"

#include <cstring>
#include <limits>
#include <thread>

#include <omp.h>

#include "cuda/runtime.h"
#include "engine/tensor_copy.h"

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {

const std::vector<DType> kAllDtypes = {DType::F32, DType::F64, DType::I64, DType::I32, DType::F16,
                                       DType::BF16, DType::I16, DType::I8, DType::U8, DType::BOOL};

uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

float float_from_bits(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

float via_half(float f) { return float(half_t(f)); }
float via_bf16(float f) { return float(bf16_t(f)); }

}  // namespace

// ---- factories ----

TEST_CASE("factories fill shapes and dtypes") {
    CHECK(Tensor::zeros({2, 3}).shape() == Shape{2, 3});
    CHECK(Tensor::zeros({2, 3}).dtype() == DType::F32);
    CHECK(Tensor::zeros({2, 3}).to_vector<float>() == std::vector<float>(6, 0.0f));
    CHECK(Tensor::ones({2}, DType::I32).to_vector<int64_t>() == std::vector<int64_t>{1, 1});
    CHECK(Tensor::ones({3}, DType::BOOL).to_vector<int64_t>() == std::vector<int64_t>{1, 1, 1});
    CHECK(Tensor::full({2}, 2.5, DType::F64).to_vector<double>() == std::vector<double>{2.5, 2.5});
    CHECK(Tensor::full({2, 2}, -7, DType::I8).to_vector<int64_t>() == std::vector<int64_t>(4, -7));
    CHECK(Tensor::full({1}, 0.1, DType::BF16).to_vector<float>()[0] == via_bf16(0.1f));
    CHECK(Tensor::zeros({0, 4}).numel() == 0);
    CHECK_THROWS_AS(Tensor::zeros({2, -1}), Error);

    Tensor s = Tensor::scalar(7.0);
    CHECK(s.dim() == 0);
    CHECK(s.numel() == 1);
    CHECK(s.item() == 7.0);
    CHECK(Tensor::scalar(3.0, DType::I64).dtype() == DType::I64);

    Tensor fv = Tensor::from_vector<int64_t>({1, 2, 3, 4}, {2, 2});
    CHECK(fv.dtype() == DType::I64);
    CHECK(fv.at({1, 0}) == 3.0);
    CHECK(Tensor::from_vector<double>({5}, {}).item() == 5.0);
    CHECK_THROWS_AS(Tensor::from_vector<float>({1, 2, 3}, {2, 2}), Error);
}

TEST_CASE("arange counts and steps in both forms") {
    Tensor a = Tensor::arange(4);
    CHECK(a.dtype() == DType::I64);
    CHECK(a.to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3});
    CHECK(Tensor::arange(0).numel() == 0);
    CHECK(Tensor::arange(3, DType::F32).to_vector<float>() == std::vector<float>{0, 1, 2});
    CHECK(Tensor::arange(1.0, 2.0, 0.25, DType::F64).to_vector<double>() == std::vector<double>{1, 1.25, 1.5, 1.75});
    CHECK(Tensor::arange(0.0, 1.0, 0.3).to_vector<float>().size() == 4);  // 0, .3, .6, .9: end excluded
    CHECK(Tensor::arange(5.0, 0.0, -2.0, DType::I32).to_vector<int64_t>() == std::vector<int64_t>{5, 3, 1});
    CHECK(Tensor::arange(2.0, 1.0, 1.0).numel() == 0);
    CHECK_THROWS_AS(Tensor::arange(0.0, 1.0, 0.0), Error);
}

// ---- random numbers ----

TEST_CASE("philox4x32-10 matches the Random123 known answers") {
    struct Kat { uint32_t ctr[4], key[2], want[4]; };
    const Kat kats[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (const Kat& k : kats) {
        uint32_t ctr[4] = {k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3]}, out[4];
        philox4x32_10(ctr, k.key[0], k.key[1], out);
        for (int i = 0; i < 4; ++i) {
            INFO("word " << i);
            CHECK(out[i] == k.want[i]);
        }
    }
}

TEST_CASE("philox draws are uniform in range and pure functions of seed and index") {
    for (uint64_t i = 0; i < 1000; ++i) {
        const double u = philox_uniform(5, i);
        CHECK((u >= 0.0 && u < 1.0));
        CHECK(std::isfinite(philox_normal(5, i)));
    }
    CHECK(philox_uniform(5, 7) == philox_uniform(5, 7));
    CHECK(philox_uniform(5, 7) != philox_uniform(6, 7));
    CHECK(philox_uniform(5, 7) != philox_uniform(5, 8));
    CHECK(philox_uniform(5, uint64_t(1) << 40) != philox_uniform(5, 0));  // high counter word is used
}

TEST_CASE("seeded draws are reproducible and advance the generator") {
    CHECK(Tensor::randn({5}, 3).to_vector<float>() == Tensor::randn({5}, 3).to_vector<float>());
    CHECK(Tensor::randn({5}, 3).to_vector<float>() != Tensor::randn({5}, 4).to_vector<float>());
    CHECK(Tensor::uniform({5}, 3, 0, 1).to_vector<float>() == Tensor::uniform({5}, 3, 0, 1).to_vector<float>());
    // F32 draws are the F64 draws rounded.
    const auto d64 = Tensor::randn({8}, 3, DType::F64).to_vector<double>();
    const auto d32 = Tensor::randn({8}, 3, DType::F32).to_vector<float>();
    for (size_t i = 0; i < d64.size(); ++i) CHECK(d32[i] == float(d64[i]));

    Generator g(9);
    Tensor a = Tensor::randn({3}, g, DType::F64);
    CHECK(g.offset() == 3);
    CHECK(g.seed() == 9);
    Tensor b = Tensor::randn({2, 2}, g, DType::F64);
    CHECK(g.offset() == 7);
    Tensor::uniform({5}, g, 0, 1);
    CHECK(g.offset() == 12);
    CHECK(a.to_vector<double>() == Tensor::randn({3}, 9, DType::F64).to_vector<double>());
    // Element i of a draw is draw offset+i: restoring (seed, offset) replays it; one draw of 7 = 3 then 4.
    Generator h(0);
    h.set_state(9, 3);
    CHECK(Tensor::randn({2, 2}, h, DType::F64).to_vector<double>() == b.to_vector<double>());
    std::vector<double> seven = Tensor::randn({7}, 9, DType::F64).to_vector<double>();
    std::vector<double> joined = a.to_vector<double>();
    for (double v : b.to_vector<double>()) joined.push_back(v);
    CHECK(seven == joined);
    Generator copy = g;
    CHECK(Tensor::randn({4}, copy).to_vector<float>() == Tensor::randn({4}, g).to_vector<float>());
    // mean and std arguments
    Generator m1(21), m2(21);
    const auto shifted = Tensor::randn({6}, m1, DType::F64, 3.0, 0.5).to_vector<double>();
    const auto plain = Tensor::randn({6}, m2, DType::F64).to_vector<double>();
    for (size_t i = 0; i < plain.size(); ++i) CHECK(shifted[i] == doctest::Approx(3.0 + 0.5 * plain[i]).epsilon(1e-14));
}

TEST_CASE("seeded draws of large tensors are filled by several threads with the bits of one") {
    if (!threads_can_run()) return;
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    const Tensor n1 = Tensor::randn({300001}, 7), u1 = Tensor::uniform({300001}, 7, -2, 3, DType::F64);
    omp_set_num_threads(2);
    const Tensor n2 = Tensor::randn({300001}, 7), u2 = Tensor::uniform({300001}, 7, -2, 3, DType::F64);
    omp_set_num_threads(threads);
    CHECK(raw_bytes(n1) == raw_bytes(n2));
    CHECK(raw_bytes(u1) == raw_bytes(u2));
    for (int64_t k : {int64_t(0), int64_t(123457), int64_t(300000)}) {  // element k is draw k, whoever fills it
        CHECK(n2.data<float>()[k] == float(philox_normal(7, uint64_t(k))));
        CHECK(u2.data<double>()[k] == -2 + 5 * philox_uniform(7, uint64_t(k)));
    }
}

TEST_CASE("SkipRandomInit: draws come out zero and the generator advances as the draws would have") {
    Generator skipped(5), drawn(5);
    CHECK(!SkipRandomInit::active());
    {
        const SkipRandomInit skip;
        const Tensor n = Tensor::randn({3, 4}, skipped);
        const Tensor u = Tensor::uniform({40000}, skipped, 1, 2, DType::F64);
        {
            const SkipRandomInit nested;
            CHECK(Tensor::randn({2}, skipped, DType::BF16).dtype() == DType::BF16);
        }
        CHECK(SkipRandomInit::active());
        CHECK(n.shape() == Shape{3, 4});
        CHECK(n.dtype() == DType::F32);
        CHECK(n.to_vector<double>() == std::vector<double>(12, 0.0));
        CHECK(u.dtype() == DType::F64);
        CHECK(u.to_vector<double>() == std::vector<double>(40000, 0.0));
        if (threads_can_run()) {
            bool other_thread_draws = false;  // it is this thread's alone
            std::thread([&] { other_thread_draws = Tensor::randn({4}, 1).to_vector<double>() != std::vector<double>(4, 0.0); })
                .join();
            CHECK(other_thread_draws);
        }
    }
    CHECK(!SkipRandomInit::active());
    Tensor::randn({3, 4}, drawn);
    Tensor::uniform({40000}, drawn, 1, 2, DType::F64);
    Tensor::randn({2}, drawn, DType::BF16);
    CHECK(skipped.offset() == drawn.offset());
    CHECK(Tensor::randn({6}, skipped).to_vector<float>() == Tensor::randn({6}, drawn).to_vector<float>());
}

TEST_CASE("100k normals and uniforms have the right moments") {
    const std::vector<double> v = Tensor::randn({100000}, 11, DType::F64).to_vector<double>();
    double mean = 0, sq = 0;
    for (double x : v) { mean += x; sq += x * x; }
    mean /= double(v.size());
    const double std = std::sqrt(sq / double(v.size()) - mean * mean);
    CHECK(std::fabs(mean) < 0.02);
    CHECK(std::fabs(std - 1.0) < 0.02);
    const std::vector<double> u = Tensor::uniform({100000}, 12, -2.0, 3.0, DType::F64).to_vector<double>();
    double umean = 0, lo = 1e9, hi = -1e9;
    for (double x : u) { umean += x; lo = std::min(lo, x); hi = std::max(hi, x); }
    umean /= double(u.size());
    CHECK(lo >= -2.0);
    CHECK(hi < 3.0);
    CHECK(std::fabs(umean - 0.5) < 0.02);
    CHECK(lo < -1.99);
    CHECK(hi > 2.99);
}

// ---- float16 / bfloat16 ----

TEST_CASE("float16 conversion exact values overflow and underflow") {
    CHECK(via_half(1.0f) == 1.0f);
    CHECK(half_t(1.0f).bits == 0x3c00);
    CHECK(via_half(-2.5f) == -2.5f);
    CHECK(half_t(-2.5f).bits == 0xc100);
    CHECK(via_half(65504.0f) == 65504.0f);                   // largest finite
    CHECK(half_t(65504.0f).bits == 0x7bff);
    CHECK(via_half(65519.0f) == 65504.0f);                   // below the halfway point: rounds down
    CHECK(std::isinf(via_half(65520.0f)));                   // halfway to 2^16: ties to even = inf
    CHECK(half_t(-65520.0f).bits == 0xfc00);
    CHECK(half_t(std::numeric_limits<float>::infinity()).bits == 0x7c00);
    CHECK(half_t(1e30f).bits == 0x7c00);
    CHECK(via_half(1e-8f) == 0.0f);                          // below half the smallest subnormal
    CHECK(via_half(std::ldexp(1.0f, -24)) == std::ldexp(1.0f, -24));  // smallest subnormal
    CHECK(half_t(std::ldexp(1.0f, -24)).bits == 0x0001);
    CHECK(half_t(std::ldexp(1.0f, -25)).bits == 0x0000);      // tie between 0 and 2^-24: even (0)
    CHECK(half_t(std::ldexp(3.0f, -26)).bits == 0x0001);      // above the tie
    CHECK(half_t(std::ldexp(3.0f, -25)).bits == 0x0002);      // tie between 1 and 2 ulps: even (2)
    CHECK(half_t(std::ldexp(1.0f, -14)).bits == 0x0400);      // smallest normal
    CHECK(half_t(std::ldexp(1023.0f, -24)).bits == 0x03ff);   // largest subnormal
    CHECK(half_t(-0.0f).bits == 0x8000);
    CHECK(std::signbit(via_half(-0.0f)));
    CHECK(std::isnan(via_half(std::numeric_limits<float>::quiet_NaN())));
    CHECK(std::isnan(via_half(float_from_bits(0x7f800001u))));  // a NaN whose payload would truncate to inf
    CHECK(std::isnan(via_half(-std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("float16 rounds ties to nearest even") {
    const float ulp = std::ldexp(1.0f, -10);                  // spacing of halves in [1, 2)
    CHECK(via_half(1.0f + ulp / 2) == 1.0f);                  // tie, 1.0 is even
    CHECK(via_half(1.0f + 3 * ulp / 2) == 1.0f + 2 * ulp);    // tie, rounds up to even
    CHECK(via_half(1.0f + ulp / 2 + std::ldexp(1.0f, -20)) == 1.0f + ulp);  // just above the tie
    CHECK(via_half(1.0f + ulp / 2 - std::ldexp(1.0f, -20)) == 1.0f);        // just below
    CHECK(via_half(-(1.0f + 3 * ulp / 2)) == -(1.0f + 2 * ulp));
    CHECK(via_half(2049.0f) == 2048.0f);                      // integers: 2049 is a tie at spacing 2
    CHECK(via_half(2051.0f) == 2052.0f);
}

TEST_CASE("float16 and bfloat16 round trip every bit pattern exactly") {
#if defined(__i386__) && !defined(__SSE2_MATH__)
    // x87 maths (i686's default) passes floats through its registers, and loading one quiets a signalling NaN: there
    // a signalling bfloat16 NaN comes back as the same NaN with the quiet bit set.
    constexpr uint32_t quieted = 0x00400000u;
#else
    constexpr uint32_t quieted = 0;
#endif
    int half_exact = 0, half_nan = 0, bf16_bad = 0;
    for (uint32_t bits = 0; bits < 65536; ++bits) {
        half_t h;
        h.bits = uint16_t(bits);
        const float f = float(h);
        if (std::isnan(f)) half_nan += std::isnan(via_half(f)) ? 1 : 0;
        else half_exact += half_t(f).bits == h.bits ? 1 : 0;
        bf16_t b;
        b.bits = uint16_t(bits);
        const float g = float(b);
        const bool same_bits = float_bits(g) == bits << 16 || (std::isnan(g) && float_bits(g) == ((bits << 16) | quieted));
        const bool ok = same_bits && (std::isnan(g) ? std::isnan(via_bf16(g)) : bf16_t(g).bits == b.bits);
        bf16_bad += ok ? 0 : 1;
    }
    CHECK(half_exact == 65536 - 2046);  // every non-NaN half comes back with the same bits
    CHECK(half_nan == 2046);            // and every NaN stays NaN
    CHECK(bf16_bad == 0);
}

TEST_CASE("bfloat16 conversion rounds to nearest even and keeps NaN") {
    CHECK(bf16_t(1.0f).bits == 0x3f80);
    CHECK(via_bf16(1.00390625f) == 1.0f);                      // 1 + 2^-8: tie, 1.0 is even
    CHECK(via_bf16(1.01171875f) == 1.015625f);                 // 1 + 3*2^-8: tie, rounds up to even
    CHECK(via_bf16(1.0078125f) == 1.0078125f);                 // representable
    CHECK(via_bf16(1.00390637f) == 1.0078125f);                // just above the tie
    CHECK(via_bf16(-2.5f) == -2.5f);
    CHECK(bf16_t(-0.0f).bits == 0x8000);
    CHECK(bf16_t(std::numeric_limits<float>::infinity()).bits == 0x7f80);
    CHECK(bf16_t(std::numeric_limits<float>::max()).bits == 0x7f80);  // rounds past the largest bf16
    CHECK(via_bf16(3.3895314e38f) == 3.3895314e38f);           // largest finite bf16
    CHECK(bf16_t(float_from_bits(0x00010000u)).bits == 0x0001);   // smallest bf16 subnormal is exact
    CHECK(bf16_t(float_from_bits(0x00018000u)).bits == 0x0002);   // subnormal tie: even (up)
    CHECK(std::isnan(via_bf16(std::numeric_limits<float>::quiet_NaN())));
    CHECK(std::isnan(via_bf16(float_from_bits(0x7f800001u))));  // low-payload NaN must not become inf
    CHECK(std::isnan(via_bf16(float_from_bits(0xff800001u))));
}

TEST_CASE("tensor casts to F16 and BF16 use the same rounding") {
    Tensor t = Tensor::from_vector<float>({1.00390625f, 65520.0f, 1e-8f, 0.1f}, {4});
    const auto h = t.to(DType::F16).to_vector<float>();
    CHECK(h[0] == via_half(1.00390625f));
    CHECK(std::isinf(h[1]));
    CHECK(h[2] == 0.0f);
    CHECK(h[3] == via_half(0.1f));
    const auto b = t.to(DType::BF16).to_vector<float>();
    CHECK(b[0] == 1.0f);
    CHECK(b[3] == via_bf16(0.1f));
    // F64 -> F16 goes through float: a double rounding that matters only for values within 2^-29 of a tie.
    CHECK(Tensor::from_vector<double>({-2.5}, {1}).to(DType::F16).to_vector<double>()[0] == -2.5);
}

// ---- dtype casts ----

TEST_CASE("to(dtype) converts small integers between every pair of dtypes") {
    const std::vector<double> values = {0, 1, 2, 7, 100};
    Tensor base = Tensor::from_vector<double>(values, {5});
    for (DType a : kAllDtypes) {
        for (DType b : kAllDtypes) {
            INFO(dtype_name(a) << " -> " << dtype_name(b));
            Tensor out = base.to(a).to(b);
            CHECK(out.dtype() == b);
            const std::vector<double> got = out.to_vector<double>();
            const bool lossy = a == DType::BOOL || b == DType::BOOL;
            for (size_t i = 0; i < values.size(); ++i)
                CHECK(got[i] == (lossy ? (values[i] != 0 ? 1.0 : 0.0) : values[i]));
        }
    }
    const std::vector<DType> signed_types = {DType::F32, DType::F64, DType::I64, DType::I32,
                                             DType::F16, DType::BF16, DType::I16, DType::I8};
    Tensor neg = Tensor::from_vector<int64_t>({-1, -3, -100}, {3});
    for (DType a : signed_types)
        for (DType b : signed_types) {
            INFO(dtype_name(a) << " -> " << dtype_name(b));
            CHECK(neg.to(a).to(b).to_vector<int64_t>() == std::vector<int64_t>{-1, -3, -100});
        }
}

TEST_CASE("float to integer casts truncate toward zero and bool is nonzero") {
    Tensor f = Tensor::from_vector<double>({2.7, -2.7, 0.5, -0.0}, {4});
    CHECK(f.to(DType::I32).to_vector<int64_t>() == std::vector<int64_t>{2, -2, 0, 0});
    CHECK(f.to(DType::BOOL).to_vector<int64_t>() == std::vector<int64_t>{1, 1, 1, 0});
    CHECK(Tensor::from_vector<float>({0.25f}, {1}).to(DType::BOOL).item() == 1.0);
    CHECK(f.to(DType::F64).same(f));  // same dtype: no copy
    // Non-contiguous source.
    Tensor m = Tensor::arange(0, 6, 1, DType::F64).reshape({2, 3}).transpose(0, 1);
    CHECK(m.to(DType::I16).to_vector<int64_t>() == std::vector<int64_t>{0, 3, 1, 4, 2, 5});
}

// ---- storage ----

TEST_CASE("cpu storage is 64-byte aligned") {
    for (DType d : kAllDtypes) {
        for (int64_t n : {0, 1, 3, 17, 1000}) {
            Tensor t = Tensor::empty({n}, d);
            INFO(t.describe());
            CHECK(reinterpret_cast<uintptr_t>(t.storage()->data()) % 64 == 0);
            CHECK(t.storage()->nbytes() == size_t(n) * dtype_size(d));
        }
    }
    CHECK(reinterpret_cast<uintptr_t>(Tensor::randn({7, 9}, 1).raw_data()) % 64 == 0);
    CHECK(reinterpret_cast<uintptr_t>(Tensor::ones({5}).to(DType::F16).raw_data()) % 64 == 0);
}

TEST_CASE("large CPU buffers are reused from the cache, bounded by the peak in use, and can be released") {
    cpu_empty_cache();
    CHECK(cpu_cached_bytes() == 0);
    const void* first = nullptr;
    {
        Tensor a = Tensor::full({300, 1024}, 1.0, DType::F32);  // 1.2 MB: cached when freed
        first = a.data<float>();
        Tensor small = Tensor::full({10}, 2.0, DType::F32);   // small: plain malloc/free, never cached
    }
    CHECK(cpu_cached_bytes() == 300 * 1024 * 4);
    {
        Tensor b = Tensor::empty({1024, 300}, DType::F32);  // the same rounded size: the same buffer comes back
        CHECK(b.data<float>() == first);
        CHECK(cpu_cached_bytes() == 0);
        Tensor c = Tensor::zeros({300, 1024}, DType::F32);  // a second one is fresh, and zeros() still zeroes
        CHECK(c.data<float>() != first);
        for (float v : c.to_vector<float>()) REQUIRE(v == 0.0f);
    }
    CHECK(cpu_cached_bytes() <= cpu_peak_bytes());
    cpu_empty_cache();
    CHECK(cpu_cached_bytes() == 0);
}

TEST_CASE("a full CPU buffer cache makes room by releasing sizes left untouched since the freed size was requested") {
    // A shape that is gone (an earlier sequence length) must not keep the current shapes' buffers out of the
    // cache, but a size still in use must not be pushed out by another that is (a steady training loop).
    const auto floats = [](size_t bytes) { return int64_t(bytes / sizeof(float)); };
    cpu_empty_cache();
    reset_cpu_peak_bytes();
    const size_t base = cpu_bytes_in_use();
    const size_t a = (base + 4095) / 4096 * 4096 + (size_t(1) << 20), b = 2 * a + (size_t(1) << 20);  // 2a > base
    {
        Tensor a1 = Tensor::empty({floats(a)}, DType::F32), a2 = Tensor::empty({floats(a)}, DType::F32);
    }
    REQUIRE(cpu_cached_bytes() == 2 * a);
    const void* b_buffer = nullptr;
    {
        Tensor b1 = Tensor::empty({floats(b)}, DType::F32);  // peak = base + b; 2a + b cached would exceed it
        b_buffer = b1.raw_data();
    }
    CHECK(cpu_cached_bytes() == b);  // both stale a-buffers released, the b-buffer kept
    {
        Tensor again = Tensor::empty({floats(b)}, DType::F32);
        CHECK(again.raw_data() == b_buffer);
        CHECK(cpu_cached_bytes() == 0);
    }

    // Both sizes in use: y (size a) is requested, then x (size b) is requested and freed while y lives; when y is
    // freed into a full cache, x's buffer stays (used after y was requested) and y's goes back to the system.
    cpu_empty_cache();
    {
        Tensor y = Tensor::empty({floats(a)}, DType::F32);
        {
            Tensor x = Tensor::empty({floats(b)}, DType::F32);
        }
        REQUIRE(cpu_cached_bytes() == b);
        reset_cpu_peak_bytes();  // the budget is now what is in use: base + a, less than b + a
    }
    CHECK(cpu_cached_bytes() == b);
    cpu_empty_cache();
}

TEST_CASE("cpu_bytes_in_use tracks live storage and the peak") {
    const size_t before = cpu_bytes_in_use();
    reset_cpu_peak_bytes();
    CHECK(cpu_peak_bytes() == before);
    {
        Tensor t = Tensor::empty({3, 5}, DType::F64);
        CHECK(cpu_bytes_in_use() == before + 120);
        Tensor v = t.transpose(0, 1);  // a view holds no new storage
        CHECK(cpu_bytes_in_use() == before + 120);
        {
            Tensor u = Tensor::empty({10}, DType::I8);
            CHECK(cpu_bytes_in_use() == before + 130);
        }
        CHECK(cpu_bytes_in_use() == before + 120);
        CHECK(cpu_peak_bytes() == before + 130);
    }
    CHECK(cpu_bytes_in_use() == before);
    CHECK(cpu_peak_bytes() == before + 130);
    reset_cpu_peak_bytes();
    CHECK(cpu_peak_bytes() == before);
}

// ---- element access ----

TEST_CASE("a shape beyond any memory is one error, not a wrapped-around size") {
    const int64_t big = (int64_t(1) << 31) - 1;  // three of them overflow int64 (found by fuzzing `bench`)
    // the limit is 2^60 bytes, or size_t's 2^32 on a 32-bit build, where size_t(numel) * 4 would wrap past it
    const bool wide = sizeof(size_t) >= 8;
    CHECK_THROWS_WITH_AS(Tensor::empty({big, big, big}), doctest::Contains(wide ? "holds more than 2^60 bytes"
                                                                                : "holds more than 2^32 bytes"), Error);
    if (!wide)  // 4 GiB of float32 on i686: one error, not the 0-byte buffer size_t(2^30) * 4 gave
        CHECK_THROWS_WITH_AS(Tensor::empty({int64_t(1) << 30}), doctest::Contains("a 32-bit build can address"), Error);
    CHECK_THROWS_WITH_AS(Tensor::zeros({int64_t(1) << 59}, DType::F64), doctest::Contains("fix: smaller sizes"), Error);
    CHECK_THROWS_WITH_AS(Tensor::empty({-1, 2}), doctest::Contains("negative dimension"), Error);
    CHECK(Tensor::empty({big, big, big, 0}).numel() == 0);  // no elements, no memory
    CHECK(Tensor::empty({int64_t(1) << 40, 0, big}).numel() == 0);
}

TEST_CASE("element access supports negative indices and checks bounds") {
    Tensor t = Tensor::arange(0, 6, 1, DType::F64).reshape({2, 3});
    CHECK(t.at({-1, -1}) == 5.0);
    CHECK(t.at({-2, 0}) == 0.0);
    t.set({0, -2}, 9.0);
    CHECK(t.at({0, 1}) == 9.0);
    Tensor i8 = Tensor::zeros({3}, DType::I8);
    i8.set({-1}, -5);
    CHECK(i8.at({2}) == -5.0);
    Tensor v = t.transpose(0, 1);  // at() follows strides
    CHECK(v.at({1, 0}) == 9.0);
    CHECK(Tensor::scalar(4.0).at({}) == 4.0);
    CHECK(Tensor::ones({1, 1, 1}).item() == 1.0);

    CHECK(error_of([&] { t.at({2, 0}); }).find("out of range") != std::string::npos);
    CHECK(error_of([&] { t.at({0, -4}); }).find("index -4") != std::string::npos);
    CHECK(error_of([&] { t.set({0, 3}, 1.0); }).find("out of range") != std::string::npos);
    CHECK(error_of([&] { t.at({0}); }).find("rank") != std::string::npos);
    CHECK(error_of([&] { t.item(); }).find("one-element") != std::string::npos);
    CHECK(error_of([&] { Tensor::zeros({0}).item(); }).find("one-element") != std::string::npos);
    CHECK(error_of([&] { t.size(2); }).find("out of range") != std::string::npos);
    CHECK(t.size(-1) == 3);
    CHECK(error_of([&] { Tensor().shape(); }).find("undefined") != std::string::npos);
    CHECK(error_of([&] { t.data<float>(); }).find("data<F32>") != std::string::npos);
}

TEST_CASE("as_strided checks the view stays inside the storage") {
    Tensor t = Tensor::arange(0, 12, 1, DType::F32);
    Tensor v = t.as_strided({3, 2}, {4, 1}, 1);
    CHECK(v.to_vector<float>() == std::vector<float>{1, 2, 5, 6, 9, 10});
    CHECK(v.storage() == t.storage());
    CHECK(t.as_strided({4}, {-3}, 11).to_vector<float>() == std::vector<float>{11, 8, 5, 2});
    CHECK(t.as_strided({0, 5}, {5, 1}, 100).numel() == 0);  // empty views touch nothing
    CHECK(t.as_strided({2, 2}, {0, 0}, 11).to_vector<float>() == std::vector<float>(4, 11.0f));
    CHECK(error_of([&] { t.as_strided({3, 3}, {4, 1}, 2); }).find("outside storage") != std::string::npos);
    CHECK(error_of([&] { t.as_strided({2}, {1}, -1); }).find("outside storage") != std::string::npos);
    CHECK(error_of([&] { t.as_strided({4}, {-3}, 8); }).find("outside storage") != std::string::npos);
    CHECK(error_of([&] { t.as_strided({2, 2}, {1}, 0); }).find("rank") != std::string::npos);
    CHECK(error_of([&] { t.as_strided({13}, {1}, 0); }).find("12 elements") != std::string::npos);
}

// ---- printing ----

TEST_CASE("to_string prints values and elides long dimensions") {
    CHECK(Tensor::arange(0, 100, 1, DType::F32).to_string() == "Tensor(F32[100] cpu)\n[0, 1, 2, ..., 97, 98, 99]");
    CHECK(Tensor::arange(0, 12, 1, DType::F32).reshape({3, 4}).to_string() ==
          "Tensor(F32[3, 4] cpu)\n[[0, 1, 2, 3],\n [4, 5, 6, 7],\n [8, 9, 10, 11]]");
    const std::string rows = Tensor::arange(0, 80, 1, DType::I64).reshape({10, 8}).to_string(4);
    CHECK(rows == "Tensor(I64[10, 8] cpu)\n[[0, 1, ..., 6, 7],\n [8, 9, ..., 14, 15],\n ...,\n [64, 65, ..., 70, 71],\n"
                  " [72, 73, ..., 78, 79]]");
    CHECK(Tensor::scalar(2.5).to_string() == "Tensor(F32[] cpu)\n2.5");
    Tensor g = Tensor::ones({2}, DType::F64);
    g.set_requires_grad(true);
    CHECK(g.to_string() == "Tensor(F64[2] cpu, requires_grad)\n[1, 1]");
    CHECK(Tensor().to_string() == "Tensor(undefined)");
    std::ostringstream os;
    os << Tensor::from_vector<float>({0.5f, -1.25f}, {2});
    CHECK(os.str() == "Tensor(F32[2] cpu)\n[0.5, -1.25]");
}

TEST_CASE("describe names dtype shape and device") {
    CHECK(Tensor::zeros({4, 25}).describe() == "F32[4, 25] cpu");
    CHECK(Tensor::scalar(1, DType::I64).describe() == "I64[] cpu");
    CHECK(Tensor::zeros({2, 0, 3}, DType::BF16).describe() == "BF16[2, 0, 3] cpu");
    CHECK(Tensor().describe() == "undefined tensor");
    CHECK(shape_str({}) == "[]");
    CHECK(Device::cuda(1).str() == "cuda:1");
}

// ---- devices ----

TEST_CASE("cuda tensors need a backend and say how to get one") {
    if (cuda::available()) {
        MESSAGE("a CUDA GPU is visible; the GPU suite covers device tensors");
        return;
    }
    const std::string alloc = error_of([] { Tensor::zeros({2}, DType::F32, Device::cuda()); });
    const std::string move = error_of([] { Tensor::ones({2}).to(Device::cuda()); });
    INFO("allocation error: " << alloc);
    INFO("transfer error: " << move);
    if (!cuda::built_with_cuda()) {
        CHECK(alloc.find("SSMTUNE_CUDA") != std::string::npos);
        CHECK(move.find("SSMTUNE_CUDA") != std::string::npos);
    } else {
        CHECK(alloc.find("no usable CUDA GPU") != std::string::npos);
        CHECK(move.find("no usable CUDA GPU") != std::string::npos);
    }
    CHECK(alloc.find("Device::cpu()") != std::string::npos);
}

TEST_CASE("first_non_finite finds the first NaN or Inf in every floating dtype, in place and through views") {
    const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
    for (DType dtype : {DType::F32, DType::F64, DType::F16, DType::BF16}) {
        CAPTURE(dtype_name(dtype));
        const Tensor finite = Tensor::from_vector<double>({1, -2, 3e4, 0}, {2, 2}).to(dtype);
        CHECK(first_non_finite(finite) == -1);
        double value = 0;
        CHECK(first_non_finite(Tensor::from_vector<double>({1, 2, -inf, nan}, {4}).to(dtype), &value) == 2);
        CHECK(value == -inf);
        CHECK(first_non_finite(Tensor::from_vector<double>({1, nan, 2, 3}, {4}).to(dtype), &value) == 1);
        CHECK(std::isnan(value));
        // a transposed view: row-major order of the view, not of its storage
        const Tensor t = Tensor::from_vector<double>({1, inf, nan, 4}, {2, 2}).to(dtype).transpose(0, 1);
        CHECK(first_non_finite(t, &value) == 1);
        CHECK(std::isnan(value));
    }
    CHECK(first_non_finite(Tensor::from_vector<int64_t>({1, 2}, {2})) == -1);
    CHECK(first_non_finite(Tensor::zeros({0, 3})) == -1);
    // float32 overflow from a finite float64 is caught in the tensor's own type: 1e300 is Inf as float32
    CHECK(first_non_finite(Tensor::from_vector<double>({1e300}, {1}).to(DType::F32)) == 0);
}
