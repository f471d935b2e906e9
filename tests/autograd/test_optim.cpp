// Optimizers: SGD and AdamW steps against values computed by hand (python3 `math`, PyTorch's update formulas
// in double — see the comments), parameter groups, frozen parameters, clipping, schedules, state save/load that
// continues bit-identically, and a 2-layer MLP fit.
#include "test_util.h"

#include "autograd/optim.h"
#include "engine/storage.h"

using namespace ssmtune;
using namespace ssmtune::testing;
using namespace ssmtune::autograd;

namespace {
// loss = Σ p ⊙ c, so the gradient is the constant c = [0.5, −1.0] at every step.
void constant_grad_step(Optimizer& opt, Tensor& p) {
    ops::sum(ops::mul(p, Tensor::from_vector<double>({0.5, -1.0}, {2}))).backward();
    opt.step();
    opt.zero_grad();
}
}  // namespace

TEST_CASE("AdamW matches hand-computed steps") {
    // python3: p = [1, -2], g = [0.5, -1], lr 0.1, betas (0.9, 0.999), eps 1e-8, wd 0.01, PyTorch's AdamW:
    // p *= 1 - lr*wd; m += (g - m)(1 - b1); v = b2 v + (1 - b2) g²; p -= lr/(1 - b1^t) · m / (√v/√(1 - b2^t) + eps)
    const double expected[3][2] = {{0.899000002, -1.898000001},
                                   {0.7981010039980005, -1.7961020019990006},
                                   {0.6973029049940026, -1.6943059009970016}};
    Tensor p = Tensor::from_vector<double>({1.0, -2.0}, {2}).set_requires_grad(true);
    AdamW opt({p}, AdamW::Options().lr(0.1).weight_decay(0.01));
    for (int t = 0; t < 3; ++t) {
        constant_grad_step(opt, p);
        CHECK(p.at({0}) == doctest::Approx(expected[t][0]).epsilon(1e-12));
        CHECK(p.at({1}) == doctest::Approx(expected[t][1]).epsilon(1e-12));
    }
    CHECK(opt.step_count() == 3);
}

TEST_CASE("SGD with momentum weight decay and nesterov matches hand-computed steps") {
    // python3: g' = g + 0.1 p; buf = g' (first) or 0.9 buf + g'; update = buf (or g' + 0.9 buf with nesterov);
    // p -= 0.1 update
    const double plain[3][2] = {{0.94, -1.88}, {0.8266, -1.6532}, {0.666274, -1.332548}};
    const double nesterov[3][2] = {{0.886, -1.772}, {0.7255659999999999, -1.4511319999999999}, {0.525363646, -1.050727292}};
    for (bool nest : {false, true}) {
        Tensor p = Tensor::from_vector<double>({1.0, -2.0}, {2}).set_requires_grad(true);
        SGD opt({p}, SGD::Options().lr(0.1).momentum(0.9).weight_decay(0.1).nesterov(nest));
        for (int t = 0; t < 3; ++t) {
            constant_grad_step(opt, p);
            const auto& e = nest ? nesterov[t] : plain[t];
            CHECK(p.at({0}) == doctest::Approx(e[0]).epsilon(1e-12));
            CHECK(p.at({1}) == doctest::Approx(e[1]).epsilon(1e-12));
        }
    }
    CHECK_THROWS_AS(SGD({Tensor::zeros({1}, DType::F64).set_requires_grad(true)}, SGD::Options().nesterov(true)), Error);
}

TEST_CASE("parameter groups keep their own lr and weight decay and frozen params stay put") {
    Tensor a = Tensor::ones({3}, DType::F64).set_requires_grad(true), b = Tensor::ones({3}, DType::F64).set_requires_grad(true);
    Tensor frozen = Tensor::ones({3}, DType::F64).set_requires_grad(true);
    AdamW opt({{"decayed", {a}, 0.1, 0.5}, {"no_decay", {b, frozen}, 0.01, 0.0}}, AdamW::Options());
    ops::sum(ops::add(a, b)).backward();  // frozen gets no gradient this step
    opt.step();
    // first Adam step moves by lr (m̂/√v̂ = 1); decay multiplies by (1 − lr·wd) first
    CHECK(a.at({0}) == doctest::Approx(1.0 * (1 - 0.1 * 0.5) - 0.1).epsilon(1e-7));
    CHECK(b.at({0}) == doctest::Approx(1.0 - 0.01).epsilon(1e-7));
    CHECK(frozen.to_vector<double>() == std::vector<double>{1, 1, 1});
}

TEST_CASE("grad_norm and clip_grad_norm follow PyTorch's rule") {
    Tensor a = Tensor::zeros({2}, DType::F64).set_requires_grad(true), b = Tensor::zeros({1}, DType::F64).set_requires_grad(true);
    a.set_grad(Tensor::from_vector<double>({3, 0}, {2}));
    b.set_grad(Tensor::from_vector<double>({4}, {1}));
    CHECK(grad_norm({a, b}) == doctest::Approx(5.0));
    CHECK(clip_grad_norm({a, b}, 10.0) == doctest::Approx(5.0));
    CHECK(a.grad().at({0}) == 3.0);
    CHECK(clip_grad_norm({a, b}, 1.0) == doctest::Approx(5.0));
    CHECK(a.grad().at({0}) == doctest::Approx(3.0 / (5.0 + 1e-6)));
    CHECK(grad_norm({a, b}) == doctest::Approx(1.0).epsilon(1e-6));
}

TEST_CASE("schedules give HF's factors at key steps") {
    const LRSchedule cos = LRSchedule::cosine(10, 110);
    CHECK(cos.factor(0) == 0.0);
    CHECK(cos.factor(5) == doctest::Approx(0.5));
    CHECK(cos.factor(10) == doctest::Approx(1.0));
    CHECK(cos.factor(60) == doctest::Approx(0.5));
    CHECK(cos.factor(110) == doctest::Approx(0.0));
    const LRSchedule lin = LRSchedule::linear(0, 100, 0.1);
    CHECK(lin.factor(50) == doctest::Approx(0.1 + 0.9 * 0.5));
    CHECK(LRSchedule::warmup(4).factor(2) == doctest::Approx(0.5));
    CHECK(LRSchedule::constant().factor(1000) == 1.0);
    CHECK(LRSchedule::parse("cosine", 10, 110).factor(60) == doctest::Approx(0.5));
    CHECK_THROWS_AS(LRSchedule::parse("triangle"), Error);
}

TEST_CASE("optimizer state saved and loaded continues bit-identically") {
    const auto make = [] {
        std::vector<Tensor> ps = {Tensor::randn({4, 3}, 1).set_requires_grad(true), Tensor::randn({3}, 2).set_requires_grad(true)};
        return ps;
    };
    const auto step = [](Optimizer& opt, std::vector<Tensor>& ps, int t) {
        Tensor x = Tensor::randn({5, 3}, 100 + uint64_t(t));
        ops::sum(ops::pow(ops::linear(x, ps[0], Tensor()) , 2.0)).backward();
        ops::sum(ops::mul(ps[1], ps[1])).backward();
        opt.step();
        opt.zero_grad();
    };
    std::vector<Tensor> straight = make();
    AdamW a(straight, AdamW::Options().lr(0.05));
    for (int t = 0; t < 10; ++t) step(a, straight, t);

    std::vector<Tensor> resumed = make();
    const auto dir = scratch_dir("optim_state");
    {
        AdamW b(resumed, AdamW::Options().lr(0.05));
        for (int t = 0; t < 5; ++t) step(b, resumed, t);
        b.save((dir / "opt.safetensors").string());
    }
    AdamW c(resumed, AdamW::Options().lr(0.05));
    c.load((dir / "opt.safetensors").string());
    CHECK(c.step_count() == 5);
    for (int t = 5; t < 10; ++t) step(c, resumed, t);
    for (size_t i = 0; i < straight.size(); ++i) CHECK(straight[i].to_vector<float>() == resumed[i].to_vector<float>());

    std::vector<Tensor> other = {Tensor::randn({2, 2}, 3).set_requires_grad(true)};
    AdamW d(other);
    CHECK_THROWS_AS(d.load((dir / "opt.safetensors").string()), Error);
}

TEST_CASE("optimizer state loads from its file one tensor at a time: the moments held once, nothing read before the checks") {
    std::vector<Tensor> ps = {Tensor::randn({300, 200}, 1).set_requires_grad(true),
                              Tensor::randn({200}, 2).set_requires_grad(true)};
    AdamW a(ps, AdamW::Options().lr(0.01));
    ops::sum(ops::mul(ps[0], ps[0])).backward();
    ops::sum(ops::mul(ps[1], ps[1])).backward();
    a.step();
    const auto dir = scratch_dir("optim_state_stream");
    const std::string path = (dir / "opt.safetensors").string();
    a.save(path);
    Metadata meta;
    const TensorMap saved = a.state_dict(meta);
    size_t state_bytes = 0;
    for (const auto& entry : saved) state_bytes += size_t(entry.second.numel()) * dtype_size(entry.second.dtype());
    // the state read from the file is kept as it is read: the peak is the state itself, not the file's tensors too
    AdamW b(ps, AdamW::Options().lr(0.01));
    const size_t before = cpu_bytes_in_use();
    reset_cpu_peak_bytes();
    b.load(path);
    CHECK(cpu_peak_bytes() - before <= state_bytes + state_bytes / 10);
    Metadata loaded_meta;
    expect_same_tensors(b.state_dict(loaded_meta), saved);
    CHECK(loaded_meta == meta);
    // a state tensor of the wrong shape is named before anything is read, and nothing changes
    TensorMap bad = saved;
    bad.begin()->second = Tensor::zeros({3});
    save_safetensors(path, bad, meta);
    AdamW c(ps, AdamW::Options().lr(0.01));
    const std::string error = error_of([&] { c.load(path); });
    CHECK(error.find("is F32[3] but") != std::string::npos);
    CHECK(c.step_count() == 0);
}

TEST_CASE("a 2-layer MLP fits a synthetic regression with AdamW") {
    Generator gen(0);
    Tensor w1 = Tensor::uniform({32, 2}, gen, -0.7, 0.7).set_requires_grad(true), b1 = Tensor::zeros({32}).set_requires_grad(true);
    Tensor w2 = Tensor::uniform({1, 32}, gen, -0.17, 0.17).set_requires_grad(true), b2 = Tensor::zeros({1}).set_requires_grad(true);
    AdamW opt({w1, b1, w2, b2}, AdamW::Options().lr(0.02).weight_decay(0.0));
    Tensor x = Tensor::uniform({256, 2}, gen, -1, 1);
    Tensor y = ops::mul(x.narrow(1, 0, 1), x.narrow(1, 1, 1));  // y = x0 · x1
    double first = 0, last = 0;
    for (int step = 0; step < 400; ++step) {
        Tensor loss = ops::mean(ops::pow(ops::linear(ops::tanh(ops::linear(x, w1, b1)), w2, b2) - y, 2.0));
        loss.backward();
        opt.step();
        opt.zero_grad();
        if (step == 0) first = loss.item();
        last = loss.item();
    }
    MESSAGE("MLP loss " << first << " -> " << last);
    CHECK(last < 0.002);
}
