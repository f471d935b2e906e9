// The associative scan operator and the chunked parallel algorithm (the CUDA kernel's decomposition) against
// the sequential recurrence, forward and reverse, for many lengths and chunk sizes.
#include "test_util.h"

#include "ops/scan_combine.h"

using namespace ssmtune;
using namespace ssmtune::ops;

namespace {
template <class T>
std::vector<T> random_vector(int64_t n, uint64_t seed, double lo, double hi) {
    return Tensor::uniform({n}, seed, lo, hi, DType::F64).to_vector<T>();
}
}  // namespace

TEST_CASE("scan_combine is associative with identity (1 0)") {
    const auto a = random_vector<double>(3, 1, 0.1, 1.0), b = random_vector<double>(3, 2, -1.0, 1.0);
    ScanPair<double> p{a[0], b[0]}, q{a[1], b[1]}, r{a[2], b[2]};
    const auto left = scan_combine(scan_combine(p, q), r), right = scan_combine(p, scan_combine(q, r));
    CHECK(left.a == doctest::Approx(right.a).epsilon(1e-15));
    CHECK(left.b == doctest::Approx(right.b).epsilon(1e-15));
    const auto id = scan_combine(scan_identity<double>(), p);
    CHECK(id.a == p.a);
    CHECK(id.b == p.b);
}

TEST_CASE_TEMPLATE("chunked scans agree with the sequential recurrence", T, float, double) {
    const double tol = std::is_same<T, float>::value ? 2e-5 : 1e-13;
    for (int64_t L : {1, 2, 7, 16, 33, 100}) {
        for (int64_t chunk : {1, 2, 3, 8, 16, 64}) {
            const auto a = random_vector<T>(L, uint64_t(L), 0.5, 1.0), b = random_vector<T>(L, uint64_t(L + 1), -1, 1);
            const T h0 = T(0.3), g_end = T(-0.7);
            const std::vector<T> h = chunked_scan_forward(a, b, h0, chunk);
            T ref = h0;
            for (int64_t t = 0; t < L; ++t) {
                ref = a[size_t(t)] * ref + b[size_t(t)];
                CHECK(double(h[size_t(t)]) == doctest::Approx(double(ref)).epsilon(tol));
            }
            const std::vector<T> gh = chunked_scan_reverse(a, b, g_end, chunk);
            T gref = g_end;
            for (int64_t t = L - 1; t >= 0; --t) {
                gref = b[size_t(t)] + (t + 1 < L ? a[size_t(t + 1)] : T(1)) * gref;
                CHECK(double(gh[size_t(t)]) == doctest::Approx(double(gref)).epsilon(tol));
            }
        }
    }
}

TEST_CASE("the CUDA kernels' block decomposition (threads x items, warp scans, carries) equals the sequential scan") {
    // The kernel's shape (128 threads x 4 steps = 512-step chunks) and smaller ones that exercise every part with
    // short inputs: one warp, two warps, one item per thread.
    const std::vector<std::pair<int, int>> shapes = {{128, 4}, {32, 1}, {64, 2}, {32, 3}};
    for (const auto& [threads, items] : shapes)
        for (int64_t L : {1, 2, 31, 37, 64, 127, 512, 513, 1300}) {
            const auto a = random_vector<double>(L, uint64_t(L + 5), 0.5, 1.0), b = random_vector<double>(L, uint64_t(L + 6), -1, 1);
            const double h0 = 0.3, g_end = -0.7;
            const std::vector<double> h = block_scan_emulated(a, b, h0, false, threads, items);
            const std::vector<double> gh = block_scan_emulated(a, b, g_end, true, threads, items);
            double ref = h0, gref = g_end;
            for (int64_t t = 0; t < L; ++t) {
                ref = a[size_t(t)] * ref + b[size_t(t)];
                CHECK(h[size_t(t)] == doctest::Approx(ref).epsilon(1e-12));
            }
            for (int64_t t = L - 1; t >= 0; --t) {
                gref = b[size_t(t)] + (t + 1 < L ? a[size_t(t + 1)] : 1.0) * gref;
                CHECK(gh[size_t(t)] == doctest::Approx(gref).epsilon(1e-12));
            }
        }
}
