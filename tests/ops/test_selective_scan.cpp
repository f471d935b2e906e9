// selective_scan: forward against the sequential reference with every option, float32 vs float64, float64
// gradients of every input, agreement with a composite version built from primitive ops through autograd,
// last state, h0 layouts, determinism across thread counts and across the CPU levels (baseline, AVX2), and
// argument errors.
#include "test_util.h"

#include <cmath>

#include "engine/cpu_isa.h"
#include "ops/scan_common.h"
#include "ops/ssm.h"

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {

constexpr int64_t kB = 2, kE = 3, kN = 4, kL = 7;

struct ScanInputs {
    Tensor u, delta, A, B, C, D, z, bias, h0, hoff, yoff;
};

ScanInputs make_inputs(DType dtype = DType::F64, bool requires_grad = true, bool h0_batched = false,
                       int64_t kN = ::kN) {
    ScanInputs s;
    const auto r = [&](const Shape& shape, uint64_t seed, double scale = 1.0, double shift = 0.0) {
        Tensor t = Tensor::randn(shape, seed, DType::F64);
        t = (t * scale + shift).to(dtype);
        if (requires_grad) t.set_requires_grad(true);
        return t;
    };
    s.u = r({kB, kE, kL}, 1);
    s.delta = r({kB, kE, kL}, 2, 0.5, -0.5);
    s.A = ops::neg(ops::exp(Tensor::randn({kE, kN}, 3, DType::F64) * 0.3)).to(dtype).detach();
    if (requires_grad) s.A.set_requires_grad(true);
    s.B = r({kB, kN, kL}, 4);
    s.C = r({kB, kN, kL}, 5);
    s.D = r({kE}, 6);
    s.z = r({kB, kE, kL}, 7);
    s.bias = r({kE}, 8, 0.3);
    s.h0 = h0_batched ? r({kB, kE, kN}, 9, 0.5) : r({kE, kN}, 9, 0.5);
    s.hoff = r({kE, kN}, 10, 0.5);
    s.yoff = r({kE}, 11, 0.5);
    return s;
}

ops::SelectiveScanOptions all_options(const ScanInputs& s, int64_t checkpoint_every = 3) {
    ops::SelectiveScanOptions o;
    o.D = s.D;
    o.z = s.z;
    o.delta_bias = s.bias;
    o.delta_softplus = true;
    o.h0 = s.h0;
    o.state_offset = s.hoff;
    o.output_offset = s.yoff;
    o.checkpoint_every = checkpoint_every;
    return o;
}

// float64 finite-difference check of every input's gradient, with every option on (softplus, chunked checkpoints).
void gradcheck_with_all_options(const ScanInputs& s) {
    expect_gradcheck(
        [](const auto& in) {
            ops::SelectiveScanOptions o;
            o.D = in[5]; o.z = in[6]; o.delta_bias = in[7]; o.delta_softplus = true;
            o.h0 = in[8]; o.state_offset = in[9]; o.output_offset = in[10]; o.checkpoint_every = 3;
            return ops::selective_scan(in[0], in[1], in[2], in[3], in[4], o).out;
        },
        {s.u, s.delta, s.A, s.B, s.C, s.D, s.z, s.bias, s.h0, s.hoff, s.yoff});
}

// How a student would write it: primitive ops, one time step at a time, through autograd.
Tensor composite_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                      const ops::SelectiveScanOptions& o) {
    const int64_t Bsz = u.size(0), E = u.size(1), L = u.size(2), N = A.size(1);
    Tensor d = delta;
    if (o.delta_bias.defined()) d = ops::add(d, o.delta_bias.unsqueeze(1));
    if (o.delta_softplus) d = ops::softplus(d);
    Tensor h = o.h0.defined() ? (o.h0.dim() == 2 ? o.h0.unsqueeze(0).expand({Bsz, E, N}) : o.h0)
                              : Tensor::zeros({Bsz, E, N}, u.dtype());
    std::vector<Tensor> ys;
    for (int64_t t = 0; t < L; ++t) {
        Tensor dt = d.select(2, t), ut = u.select(2, t);                    // [B, E]
        Tensor decay = ops::exp(ops::mul(dt.unsqueeze(2), A));             // [B, E, N]
        h = ops::add(ops::mul(decay, h), ops::mul(ops::mul(dt, ut).unsqueeze(2), B.select(2, t).unsqueeze(1)));
        Tensor hh = o.state_offset.defined() ? ops::add(h, o.state_offset) : h;
        Tensor y = ops::sum(ops::mul(hh, C.select(2, t).unsqueeze(1)), {2});  // [B, E]
        if (o.D.defined()) y = ops::add(y, ops::mul(o.D, ut));
        if (o.output_offset.defined()) y = ops::add(y, o.output_offset);
        if (o.z.defined()) y = ops::mul(y, ops::silu(o.z.select(2, t)));
        ys.push_back(y.unsqueeze(2));
    }
    return ops::concat(ys, 2);
}

}  // namespace

TEST_CASE("selective_scan forward equals the sequential reference for every option set") {
    ScanInputs s = make_inputs(DType::F64, false);
    for (int mask = 0; mask < 64; ++mask) {
        ops::SelectiveScanOptions o;
        if (mask & 1) o.D = s.D;
        if (mask & 2) o.z = s.z;
        if (mask & 4) { o.delta_bias = s.bias; o.delta_softplus = true; }
        if (mask & 8) o.h0 = s.h0;
        if (mask & 16) o.state_offset = s.hoff;
        if (mask & 32) o.output_offset = s.yoff;
        o.return_last_state = true;
        o.checkpoint_every = 1 + mask % 5;
        auto fused = ops::selective_scan(s.u, s.delta, s.A, s.B, s.C, o);
        auto ref = ops::selective_scan_reference(s.u, s.delta, s.A, s.B, s.C, o);
        INFO("option mask " << mask);
        expect_close(fused.out, ref.out, 1e-13, 1e-14, "out");
        expect_close(fused.last_state, ref.last_state, 1e-13, 1e-14, "last_state");
    }
}

TEST_CASE("selective_scan float32 tracks float64") {
    ScanInputs s64 = make_inputs(DType::F64, false), s32 = make_inputs(DType::F32, false);
    auto a = ops::selective_scan(s64.u, s64.delta, s64.A, s64.B, s64.C, all_options(s64));
    auto b = ops::selective_scan(s32.u, s32.delta, s32.A, s32.B, s32.C, all_options(s32));
    expect_close(b.out, a.out, 1e-5, 1e-5, "float32 out");
}

TEST_CASE("selective_scan gradients of every input in float64") {
    for (bool batched_h0 : {false, true}) {
        ScanInputs s = make_inputs(DType::F64, true, batched_h0);
        gradcheck_with_all_options(s);
    }
    // no extras, no softplus, L = 1
    Tensor u = rand_input({2, 3, 1}, 20), d = Tensor::uniform({2, 3, 1}, 21, 0.1, 1.0, DType::F64).set_requires_grad(true);
    Tensor A = rand_input({3, 4}, 22), B = rand_input({2, 4, 1}, 23), C = rand_input({2, 4, 1}, 24);
    expect_gradcheck([](const auto& in) { return ops::selective_scan(in[0], in[1], in[2], in[3], in[4]).out; },
                     {u, d, A, B, C});
}

TEST_CASE("selective_scan last state is differentiable") {
    ScanInputs s = make_inputs();
    expect_gradcheck(
        [](const auto& in) {
            ops::SelectiveScanOptions o;
            o.h0 = in[5]; o.delta_softplus = true; o.return_last_state = true; o.checkpoint_every = 2;
            auto r = ops::selective_scan(in[0], in[1], in[2], in[3], in[4], o);
            return ops::add(ops::sum(r.last_state, {2}), ops::sum(r.out, {2}));
        },
        {s.u, s.delta, s.A, s.B, s.C, s.h0});
}

TEST_CASE("selective_scan gradients equal the composite autograd version") {
    ScanInputs s = make_inputs();
    const ops::SelectiveScanOptions o = all_options(s, 2);
    std::vector<Tensor> inputs = {s.u, s.delta, s.A, s.B, s.C, s.D, s.z, s.bias, s.h0, s.hoff, s.yoff};
    Tensor w = Tensor::randn({kB, kE, kL}, 99, DType::F64);
    ops::sum(ops::mul(ops::selective_scan(s.u, s.delta, s.A, s.B, s.C, o).out, w)).backward();
    std::vector<Tensor> fused;
    for (auto& t : inputs) { fused.push_back(t.grad()); t.zero_grad(); }
    Tensor comp = composite_scan(s.u, s.delta, s.A, s.B, s.C, o);
    expect_close(comp, ops::selective_scan(s.u, s.delta, s.A, s.B, s.C, o).out, 1e-12, 1e-13, "composite out");
    ops::sum(ops::mul(comp, w)).backward();
    for (size_t i = 0; i < inputs.size(); ++i) expect_close(fused[i], inputs[i].grad(), 1e-10, 1e-12, "grad " + std::to_string(i));
}

TEST_CASE("selective_scan frozen inputs get no gradient") {
    ScanInputs s = make_inputs();
    Tensor A = s.A.detach();
    ops::sum(ops::selective_scan(s.u, s.delta, A, s.B, s.C).out).backward();
    CHECK_FALSE(A.grad().defined());
    CHECK(s.u.grad().defined());
}

TEST_CASE("selective_scan gives the same bits with 1 and 2 threads") {
    if (!threads_can_run()) return;
#ifdef _OPENMP
    const auto run = [](int threads) {
        omp_set_num_threads(threads);
        Tensor u = Tensor::randn({2, 130, 64}, 1).set_requires_grad(true);
        Tensor d = Tensor::randn({2, 130, 64}, 2).set_requires_grad(true);
        Tensor A = ops::neg(ops::exp(Tensor::randn({130, 16}, 3))).detach().set_requires_grad(true);
        Tensor B = Tensor::randn({2, 16, 64}, 4).set_requires_grad(true), C = Tensor::randn({2, 16, 64}, 5).set_requires_grad(true);
        ops::SelectiveScanOptions o;
        o.delta_softplus = true;
        Tensor out = ops::selective_scan(u, d, A, B, C, o).out;
        ops::sum(out).backward();
        std::vector<float> all = out.to_vector<float>();
        for (Tensor* t : {&u, &d, &A, &B, &C}) {
            auto g = t->grad().to_vector<float>();
            all.insert(all.end(), g.begin(), g.end());
        }
        return all;
    };
    const int before = omp_get_max_threads();
    const auto one = run(1), two = run(2);
    omp_set_num_threads(before);
    CHECK(one == two);
#endif
}

TEST_CASE("selective_scan gives the same bits with its AVX2 copy and the baseline build") {
    // Every option, 13 channels (one whole group of 8 and a padded one), N = 16, chunks of 7 over L = 40.
    const auto run = [](CpuIsa isa) {
        set_cpu_isa(isa);
        const int64_t B = 2, E = 13, N = 16, L = 40;
        const auto r = [](const Shape& shape, uint64_t seed, float scale = 1.0f) {
            return (Tensor::randn(shape, seed) * scale).detach().set_requires_grad(true);
        };
        std::vector<Tensor> in = {r({B, E, L}, 1), r({B, E, L}, 2, 0.5f),
                                  ops::neg(ops::exp(Tensor::randn({E, N}, 3) * 0.5f)).detach().set_requires_grad(true),
                                  r({B, N, L}, 4), r({B, N, L}, 5), r({E}, 6), r({B, E, L}, 7), r({E}, 8, 0.3f),
                                  r({B, E, N}, 9, 0.5f), r({E, N}, 10, 0.5f), r({E}, 11, 0.5f)};
        ops::SelectiveScanOptions o;
        o.D = in[5], o.z = in[6], o.delta_bias = in[7], o.delta_softplus = true, o.h0 = in[8];
        o.state_offset = in[9], o.output_offset = in[10], o.checkpoint_every = 7, o.return_last_state = true;
        const ops::SelectiveScanResult res = ops::selective_scan(in[0], in[1], in[2], in[3], in[4], o);
        ops::add(ops::sum(ops::mul(res.out, Tensor::randn({B, E, L}, 12))),
                 ops::sum(ops::mul(res.last_state, Tensor::randn({B, E, N}, 13))))
            .backward();
        std::vector<std::vector<float>> all = {res.out.to_vector<float>(), res.last_state.to_vector<float>()};
        for (const Tensor& t : in) all.push_back(t.grad().to_vector<float>());
        return all;
    };
    const CpuIsa before = cpu_isa();
    if (!cpu_isa_available(CpuIsa::avx2)) {
        MESSAGE("no AVX2 copy on this CPU or build: only the baseline runs, nothing to compare");
        CHECK_THROWS_AS(set_cpu_isa(CpuIsa::avx2), Error);
        return;
    }
    const auto base = run(CpuIsa::baseline), avx2 = run(CpuIsa::avx2);
    set_cpu_isa(before);
    REQUIRE(base.size() == avx2.size());
    for (size_t i = 0; i < base.size(); ++i) {
        INFO("tensor " << i << " (out, last state, then the gradients of u, delta, A, B, C, D, z, bias, h0, h', y')");
        CHECK(base[i] == avx2[i]);
    }
}

TEST_CASE("selective_scan names the argument with a wrong shape") {
    ScanInputs s = make_inputs(DType::F64, false);
    try {
        ops::selective_scan(s.u, s.delta, s.A, s.B.narrow(2, 0, 3), s.C);
        FAIL("expected an error");
    } catch (const Error& e) {
        CHECK(std::string(e.what()).find("B must be [2, 4, 7]") != std::string::npos);
    }
    ops::SelectiveScanOptions o;
    o.h0 = Tensor::zeros({5, 4}, DType::F64);
    CHECK_THROWS_AS(ops::selective_scan(s.u, s.delta, s.A, s.B, s.C, o), Error);
}

TEST_CASE("scan_exp (the scans' vectorisable float exp) stays within a few ulp of exp") {
    using ops::scan_detail::scan_exp;
    double worst = 0;
    for (int i = 0; i <= 400000; ++i) {
        const float x = -87.0f + 175.0f * float(i) / 400000.0f;
        const double want = std::exp(double(x));
        worst = std::max(worst, std::abs(double(scan_exp(x)) - want) / want);
    }
    INFO("worst relative error " << worst);
    CHECK(worst < 4.0 * 5.97e-8);  // 4 ulp of float at 1
    CHECK(scan_exp(0.0f) == 1.0f);
    CHECK(scan_exp(-1000.0f) > 0.0f);  // clamped to the smallest normal range, never a subnormal
    CHECK(scan_exp(-1000.0f) < 2e-38f);
    CHECK(std::isnan(scan_exp(std::nanf(""))));
    CHECK(scan_exp(2.0) == std::exp(2.0));  // double is std::exp
}

TEST_CASE("scan_softplus and the float sigmoid (vectorisable, for Δ and the gate) stay within a few ulp") {
    using ops::scan_detail::scan_log1p_unit;
    using ops::scan_detail::scan_softplus;
    using ops::scan_detail::sigmoid;
    double worst_log1p = 0, worst_softplus = 0, worst_sigmoid = 0;
    for (int i = 0; i <= 200000; ++i) {
        const float y = float(i) / 200000.0f;  // [0, 1], where softplus needs log1p
        if (y > 0) worst_log1p = std::max(worst_log1p, std::abs(double(scan_log1p_unit(y)) / std::log1p(double(y)) - 1));
        const float x = -60.0f + 100.0f * float(i) / 200000.0f;  // through the threshold at 20
        const double sp = x > 20 ? double(x) : std::log1p(std::exp(double(x)));
        worst_softplus = std::max(worst_softplus, std::abs(double(scan_softplus(x)) - sp) / sp);
        const double sg = 1.0 / (1.0 + std::exp(-double(x)));
        worst_sigmoid = std::max(worst_sigmoid, std::abs(double(sigmoid(x)) - sg) / sg);
    }
    INFO("worst relative errors: log1p " << worst_log1p << ", softplus " << worst_softplus << ", sigmoid " << worst_sigmoid);
    CHECK(worst_log1p < 4.0 * 5.97e-8);
    CHECK(worst_softplus < 4.0 * 5.97e-8);  // also for x = −60, where softplus(x) ≈ e^x ≈ 9e−27
    CHECK(worst_sigmoid < 4.0 * 5.97e-8);
    CHECK(scan_log1p_unit(1e-30f) == 1e-30f);
    CHECK(scan_softplus(25.0f) == 25.0f);
    CHECK(std::isnan(scan_softplus(std::nanf(""))));
    CHECK(scan_softplus(0.5) == std::log1p(std::exp(0.5)));  // double is libm
}

TEST_CASE("selective_scan float32 gradients track float64 at a realistic state size") {
    // N = 16 runs the vectorised inner loops in full vectors; the float32 path uses scan_exp.
    const int64_t B = 2, E = 5, N = 16, L = 37;
    ops::SelectiveScanOptions o64, o32;
    std::vector<Tensor> in64 = {Tensor::randn({B, E, L}, 1, DType::F64), Tensor::randn({B, E, L}, 2, DType::F64),
                                ops::neg(ops::exp(Tensor::randn({E, N}, 3, DType::F64) * 0.5)),
                                Tensor::randn({B, N, L}, 4, DType::F64), Tensor::randn({B, N, L}, 5, DType::F64),
                                Tensor::randn({B, E, L}, 6, DType::F64)};
    std::vector<Tensor> in32;
    for (auto& t : in64) {
        in32.push_back(t.to(DType::F32).detach().set_requires_grad(true));
        t = t.detach().set_requires_grad(true);
    }
    o64.z = in64[5];
    o32.z = in32[5];
    o64.delta_softplus = o32.delta_softplus = true;
    Tensor g = Tensor::randn({B, E, L}, 7, DType::F64);
    ops::selective_scan(in64[0], in64[1], in64[2], in64[3], in64[4], o64).out.backward(g);
    ops::selective_scan(in32[0], in32[1], in32[2], in32[3], in32[4], o32).out.backward(g.to(DType::F32));
    const char* names[] = {"du", "ddelta", "dA", "dB", "dC", "dz"};
    for (size_t i = 0; i < in64.size(); ++i) expect_close(in32[i].grad(), in64[i].grad(), 1e-4, 1e-4, names[i]);
}

TEST_CASE("selective_scan at N = 16 (whole vectors in the inner loops) equals the reference, with float64 gradients") {
    ScanInputs s = make_inputs(DType::F64, true, true, 16);
    auto fused = ops::selective_scan(s.u, s.delta, s.A, s.B, s.C, all_options(s));
    auto ref = ops::selective_scan_reference(s.u, s.delta, s.A, s.B, s.C, all_options(s));
    expect_close(fused.out, ref.out, 1e-13, 1e-14, "out at N = 16");
    gradcheck_with_all_options(s);
}
