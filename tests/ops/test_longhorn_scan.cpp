// longhorn_scan: forward against the sequential reference with every option, float32 vs float64, float64
// gradients of every input, agreement with a composite version through autograd, determinism, errors.
#include "test_util.h"

#include "ops/ssm.h"

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {

constexpr int64_t kB = 2, kE = 3, kN = 4, kL = 7;

std::vector<Tensor> horn_inputs(DType dtype = DType::F64, bool requires_grad = true, bool h0_batched = false) {
    const auto r = [&](const Shape& shape, uint64_t seed, double scale = 1.0) {
        Tensor t = (Tensor::randn(shape, seed, DType::F64) * scale).to(dtype);
        if (requires_grad) t.set_requires_grad(true);
        return t;
    };
    // x, dt, k, q, D, z, dt_bias, h0, h′, y′
    return {r({kB, kE, kL}, 1), r({kB, kE, kL}, 2), r({kB, kN, kL}, 3, 0.7), r({kB, kN, kL}, 4),
            r({kE}, 5),         r({kB, kE, kL}, 6), r({kE}, 7, 0.3),        h0_batched ? r({kB, kE, kN}, 8, 0.5) : r({kE, kN}, 8, 0.5),
            r({kE, kN}, 9, 0.5), r({kE}, 10, 0.5)};
}

ops::LonghornScanOptions options_from(const std::vector<Tensor>& in, int mask, int64_t ck) {
    ops::LonghornScanOptions o;
    if (mask & 1) o.D = in[4];
    if (mask & 2) o.z = in[5];
    if (mask & 4) o.dt_bias = in[6];
    if (mask & 8) o.h0 = in[7];
    if (mask & 16) o.state_offset = in[8];
    if (mask & 32) o.output_offset = in[9];
    o.checkpoint_every = ck;
    return o;
}

// The recurrence from primitive ops, one time step at a time.
Tensor composite_horn(const std::vector<Tensor>& in) {
    const Tensor &x = in[0], &dt = in[1], &k = in[2], &q = in[3];
    Tensor beta = ops::sigmoid(ops::add(dt, in[6].unsqueeze(1)));          // [B, E, L]
    Tensor h = in[7];
    std::vector<Tensor> ys;
    for (int64_t t = 0; t < kL; ++t) {
        Tensor kt = k.select(2, t), qt = q.select(2, t);                    // [B, N]
        Tensor S = ops::sum(ops::mul(kt, kt), {1}, true);                   // [B, 1]
        Tensor bt = beta.select(2, t);                                      // [B, E]
        Tensor eps = ops::div(bt, ops::add_scalar(ops::mul(bt, S), 1.0));   // [B, E]
        Tensor forget = ops::sub(Tensor::scalar(1.0, DType::F64), ops::mul(eps.unsqueeze(2), ops::mul(kt, kt).unsqueeze(1)));
        h = ops::add(ops::mul(forget, h), ops::mul(ops::mul(eps, x.select(2, t)).unsqueeze(2), kt.unsqueeze(1)));
        Tensor y = ops::sum(ops::mul(ops::add(h, in[8]), qt.unsqueeze(1)), {2});
        y = ops::add(ops::add(y, ops::mul(in[4], x.select(2, t))), in[9]);
        ys.push_back(ops::mul(y, ops::silu(in[5].select(2, t))).unsqueeze(2));
    }
    return ops::concat(ys, 2);
}

}  // namespace

TEST_CASE("longhorn_scan forward equals the sequential reference for every option set") {
    const auto in = horn_inputs(DType::F64, false);
    for (int mask = 0; mask < 64; ++mask) {
        ops::LonghornScanOptions o = options_from(in, mask, 1 + mask % 4);
        o.return_last_state = true;
        auto fused = ops::longhorn_scan(in[0], in[1], in[2], in[3], o);
        auto ref = ops::longhorn_scan_reference(in[0], in[1], in[2], in[3], o);
        INFO("option mask " << mask);
        expect_close(fused.out, ref.out, 1e-13, 1e-14, "out");
        expect_close(fused.last_state, ref.last_state, 1e-13, 1e-14, "last_state");
    }
}

TEST_CASE("longhorn_scan float32 tracks float64") {
    const auto a = horn_inputs(DType::F64, false), b = horn_inputs(DType::F32, false);
    expect_close(ops::longhorn_scan(b[0], b[1], b[2], b[3], options_from(b, 63, 3)).out,
                 ops::longhorn_scan(a[0], a[1], a[2], a[3], options_from(a, 63, 3)).out, 1e-5, 1e-5, "float32 out");
}

TEST_CASE("longhorn_scan gradients of every input in float64") {
    for (bool batched : {false, true}) {
        const auto in = horn_inputs(DType::F64, true, batched);
        expect_gradcheck(
            [](const auto& x) { return ops::longhorn_scan(x[0], x[1], x[2], x[3], options_from(x, 63, 3)).out; }, in);
    }
    const auto in = horn_inputs();
    expect_gradcheck(
        [](const auto& x) {
            ops::LonghornScanOptions o;
            o.return_last_state = true;
            o.checkpoint_every = 2;
            auto r = ops::longhorn_scan(x[0], x[1], x[2], x[3], o);
            return ops::add(ops::sum(r.last_state, {2}), ops::sum(r.out, {2}));
        },
        {in[0], in[1], in[2], in[3]});
}

TEST_CASE("longhorn_scan gradients equal the composite autograd version") {
    const auto in = horn_inputs();
    Tensor w = Tensor::randn({kB, kE, kL}, 77, DType::F64);
    ops::sum(ops::mul(ops::longhorn_scan(in[0], in[1], in[2], in[3], options_from(in, 63, 2)).out, w)).backward();
    std::vector<Tensor> fused;
    for (auto t : in) { fused.push_back(t.grad()); t.zero_grad(); }
    Tensor comp = composite_horn(in);
    expect_close(comp, ops::longhorn_scan(in[0], in[1], in[2], in[3], options_from(in, 63, 2)).out, 1e-12, 1e-13, "out");
    ops::sum(ops::mul(comp, w)).backward();
    for (size_t i = 0; i < in.size(); ++i) expect_close(fused[i], in[i].grad(), 1e-10, 1e-12, "grad " + std::to_string(i));
}

TEST_CASE("longhorn_scan gives the same bits with 1 and 2 threads") {
    if (!threads_can_run()) return;
#ifdef _OPENMP
    const auto run = [](int threads) {
        omp_set_num_threads(threads);
        Tensor x = Tensor::randn({2, 130, 40}, 1).set_requires_grad(true), dt = Tensor::randn({2, 130, 40}, 2).set_requires_grad(true);
        Tensor k = Tensor::randn({2, 8, 40}, 3).set_requires_grad(true), q = Tensor::randn({2, 8, 40}, 4).set_requires_grad(true);
        Tensor out = ops::longhorn_scan(x, dt, k, q).out;
        ops::sum(out).backward();
        std::vector<float> all = out.to_vector<float>();
        for (Tensor* t : {&x, &dt, &k, &q}) {
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

TEST_CASE("longhorn_scan names the argument with a wrong shape") {
    const auto in = horn_inputs(DType::F64, false);
    try {
        ops::longhorn_scan(in[0], in[1], in[2], in[3].narrow(1, 0, 2));
        FAIL("expected an error");
    } catch (const Error& e) {
        CHECK(std::string(e.what()).find("q must be [2, 4, 7]") != std::string::npos);
    }
}
