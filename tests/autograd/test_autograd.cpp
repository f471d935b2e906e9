// The autograd engine itself: accumulation, shared subgraphs and diamonds, frozen inputs (the `needs` mask a
// closure receives), grad mode, detach, backward's argument checks, freeing the graph, and gradcheck catching
// a wrong backward. Custom ops are recorded with autograd::record, exactly as an op file does.
#include <memory>

#include "test_util.h"

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {

std::vector<double> values(const Tensor& t) { return t.detach().to_vector<double>(); }

Tensor vec(const std::vector<double>& v) { return Tensor::from_vector<double>(v, {int64_t(v.size())}); }

// A custom op out = a ⊙ b whose backward records the `needs` mask it was given (into *seen) and returns
// correct gradients only for the inputs that need them.
Tensor probe_mul(const Tensor& a, const Tensor& b, std::shared_ptr<std::vector<bool>> seen) {
    Tensor out = ops::mul(a.detach(), b.detach());  // detached inputs: the inner op records nothing
    autograd::record("probe_mul", {a, b}, {out},
                     [a = a.detach(), b = b.detach(), seen](const auto& g, const auto& needs) {
                         *seen = needs;
                         return std::vector<Tensor>{needs[0] ? ops::mul(g[0], b) : Tensor(),
                                                    needs[1] ? ops::mul(g[0], a) : Tensor()};
                     });
    return out;
}

// out = x², with a backward that is right everywhere except element `wrong_at`, which gets 2x + 1.
Tensor square_with_wrong_grad(const Tensor& x, int64_t wrong_at) {
    Tensor out = ops::mul(x.detach(), x.detach());
    autograd::record("wrong_square", {x}, {out}, [x = x.detach(), wrong_at](const auto& g, const auto&) {
        Tensor slope = ops::mul_scalar(x, 2.0).contiguous();
        slope.set({wrong_at}, slope.at({wrong_at}) + 1.0);
        return std::vector<Tensor>{ops::mul(g[0], slope)};
    });
    return out;
}

}  // namespace

TEST_CASE("gradients accumulate across two backward calls") {
    Tensor x = vec({1.0, -2.0, 3.0}).set_requires_grad(true);
    Tensor y = x * x;  // dy/dx = 2x
    y.backward(Tensor::ones({3}, DType::F64));
    CHECK(values(x.grad()) == std::vector<double>{2, -4, 6});
    y.backward(vec({1.0, 10.0, 0.5}));  // the graph is still there; the gradient is added, not replaced
    CHECK(values(x.grad()) == std::vector<double>{4, -44, 9});
    x.zero_grad();
    CHECK_FALSE(x.grad().defined());
    y.backward(Tensor::ones({3}, DType::F64));
    CHECK(values(x.grad()) == std::vector<double>{2, -4, 6});
}

TEST_CASE("a tensor used twice in one graph gets both contributions") {
    Tensor x = vec({0.5, -1.5, 2.0}).set_requires_grad(true);
    Tensor y = x * x + x;  // dy/dx = 2x + 1
    y.backward(Tensor::ones({3}, DType::F64));
    CHECK(values(x.grad()) == std::vector<double>{2, -2, 5});
    expect_gradcheck([](const auto& in) { return in[0] * in[0] + in[0] * 3.0 - in[0] / in[1]; },
                     {rand_input({4}, 1), Tensor::uniform({4}, 2, 1.0, 2.0, DType::F64).set_requires_grad(true)});
}

TEST_CASE("a diamond graph sums both paths through the shared interior node") {
    // x -> h = x² -> { u = 2h, v = exp(h) } -> y = u + v;  dy/dx = (2 + exp(x²)) · 2x
    Tensor x = vec({0.3, -0.7, 1.1}).set_requires_grad(true);
    Tensor h = x * x;
    Tensor y = h * 2.0 + ops::exp(h);
    y.backward(Tensor::ones({3}, DType::F64));
    const std::vector<double> xv = values(x), g = values(x.grad());
    for (size_t i = 0; i < 3; ++i)
        CHECK(g[i] == doctest::Approx((2 + std::exp(xv[i] * xv[i])) * 2 * xv[i]).epsilon(1e-14));
    CHECK_FALSE(h.grad().defined());  // interior nodes keep no .grad
    expect_gradcheck(
        [](const auto& in) {
            Tensor hh = ops::tanh(in[0]);
            Tensor a = hh * in[1], b = ops::sigmoid(hh);
            return a * b + hh;
        },
        {rand_input({5}, 3), rand_input({5}, 4)});
}

TEST_CASE("frozen inputs get no grad and their closures are told needs false") {
    auto seen = std::make_shared<std::vector<bool>>();
    Tensor a = vec({1.0, 2.0}).set_requires_grad(true);
    Tensor frozen = vec({3.0, 4.0});  // requires_grad false
    Tensor y = probe_mul(a, frozen, seen);
    CHECK(y.requires_grad());
    y.backward(Tensor::ones({2}, DType::F64));
    CHECK(*seen == std::vector<bool>{true, false});
    CHECK(values(a.grad()) == std::vector<double>{3, 4});
    CHECK_FALSE(frozen.grad().defined());

    // Frozen first input, trainable non-leaf second input.
    Tensor w = vec({0.5, -1.0}).set_requires_grad(true);
    Tensor z = probe_mul(frozen, w * 2.0, seen);
    z.backward(Tensor::ones({2}, DType::F64));
    CHECK(*seen == std::vector<bool>{false, true});
    CHECK(values(w.grad()) == std::vector<double>{6, 8});
    CHECK_FALSE(frozen.grad().defined());

    // A computed tensor that does not require grad counts as frozen too.
    Tensor frozen_expr = frozen * 2.0;
    CHECK_FALSE(frozen_expr.requires_grad());
    probe_mul(frozen_expr, a, seen).backward(Tensor::ones({2}, DType::F64));
    CHECK(*seen == std::vector<bool>{false, true});

    // Only frozen inputs: no node is recorded, so the closure never runs.
    seen->clear();
    Tensor none = probe_mul(frozen, frozen, seen);
    CHECK_FALSE(none.requires_grad());
    CHECK(none.grad_fn() == nullptr);
    CHECK_THROWS_AS(none.backward(Tensor::ones({2}, DType::F64)), Error);
    CHECK(seen->empty());
}

TEST_CASE("an unused output of a multi-output node gets a zero gradient") {
    Tensor x = vec({1.0, 2.0, 3.0}).set_requires_grad(true);
    auto seen_shapes = std::make_shared<std::vector<Shape>>();
    Tensor o0 = x.detach().clone(), o1 = ops::mul_scalar(x.detach(), 2.0);
    autograd::record("two_outputs", {x}, {o0, o1}, [seen_shapes](const auto& g, const auto&) {
        for (const Tensor& t : g) seen_shapes->push_back(t.shape());
        CHECK(values(g[1]) == std::vector<double>{0, 0, 0});
        return std::vector<Tensor>{ops::add(g[0], ops::mul_scalar(g[1], 2.0))};
    });
    CHECK(o1.grad_fn() == o0.grad_fn());
    CHECK(o1.impl().output_nr == 1);
    o0.backward(Tensor::ones({3}, DType::F64));
    CHECK(seen_shapes->size() == 2);
    CHECK(values(x.grad()) == std::vector<double>{1, 1, 1});
}

TEST_CASE("NoGradGuard records nothing and nests and restores") {
    Tensor x = vec({1.0, 2.0}).set_requires_grad(true);
    REQUIRE(autograd::grad_enabled());
    {
        autograd::NoGradGuard guard;
        CHECK_FALSE(autograd::grad_enabled());
        Tensor y = ops::exp(x * 2.0);
        CHECK_FALSE(y.requires_grad());
        CHECK(y.grad_fn() == nullptr);
        CHECK(y.is_leaf());
        {
            autograd::NoGradGuard inner;
            CHECK_FALSE(autograd::grad_enabled());
        }
        CHECK_FALSE(autograd::grad_enabled());  // the inner guard restores "off", not "on"
        CHECK_THROWS_AS(y.backward(Tensor::ones({2}, DType::F64)), Error);
    }
    CHECK(autograd::grad_enabled());
    Tensor z = x * 2.0;
    CHECK(z.requires_grad());
    CHECK(z.grad_fn() != nullptr);

    // A guard restores whatever was there before, including "off".
    autograd::set_grad_enabled(false);
    {
        autograd::NoGradGuard guard;
        CHECK_FALSE(autograd::grad_enabled());
    }
    CHECK_FALSE(autograd::grad_enabled());
    autograd::set_grad_enabled(true);

    // The guard also restores when an exception leaves its scope.
    try {
        autograd::NoGradGuard guard;
        ops::exp(Tensor::arange(3));  // integer input: throws
    } catch (const Error&) {
    }
    CHECK(autograd::grad_enabled());
}

TEST_CASE("detach cuts the graph and shares storage") {
    Tensor x = vec({1.0, -2.0, 3.0}).set_requires_grad(true);
    Tensor d = (x * 2.0).detach();
    CHECK_FALSE(d.requires_grad());
    CHECK(d.is_leaf());
    Tensor xd = x.detach();
    CHECK(xd.storage() == x.storage());
    CHECK_FALSE(xd.requires_grad());
    Tensor y = d * x;  // d is a constant: dy/dx = d = 2x, not 4x
    y.backward(Tensor::ones({3}, DType::F64));
    CHECK(values(x.grad()) == std::vector<double>{2, -4, 6});
}

TEST_CASE("backward argument errors") {
    Tensor x = vec({1.0, 2.0}).set_requires_grad(true);
    Tensor y = x * 3.0;
    try {
        y.backward();
        FAIL("expected an Error");
    } catch (const Error& e) {
        const std::string msg = e.what();
        CHECK(msg.find("one-element") != std::string::npos);
        CHECK(msg.find("[2]") != std::string::npos);
    }
    CHECK_THROWS_AS(y.backward(Tensor::ones({3}, DType::F64)), Error);  // wrong-shaped gradient
    CHECK_THROWS_AS(vec({1.0}).backward(), Error);                      // nothing requires grad
    CHECK_FALSE(x.grad().defined());

    // A one-element output needs no explicit gradient.
    Tensor s = ops::index_select(y, 0, Tensor::from_vector<int64_t>({1}, {1}));
    s.backward();
    CHECK(values(x.grad()) == std::vector<double>{0, 3});
}

TEST_CASE("backward with an explicit gradient scales by it") {
    Tensor x = vec({1.0, 2.0, 3.0}).set_requires_grad(true);
    Tensor y = ops::exp(x) * 2.0;
    const Tensor g = vec({0.5, -1.0, 2.0});
    y.backward(g);
    const std::vector<double> xv = values(x), gv = values(g), dx = values(x.grad());
    for (size_t i = 0; i < 3; ++i) CHECK(dx[i] == doctest::Approx(gv[i] * 2 * std::exp(xv[i])).epsilon(1e-15));
    // Backward from a leaf puts the gradient on the leaf itself.
    Tensor leaf = vec({1.0, 1.0}).set_requires_grad(true);
    leaf.backward(vec({4.0, 5.0}));
    CHECK(values(leaf.grad()) == std::vector<double>{4, 5});
}

TEST_CASE("set_requires_grad is only for float tensors and leaves") {
    Tensor ids = Tensor::arange(4);
    CHECK_THROWS_AS(ids.set_requires_grad(true), Error);
    CHECK_THROWS_AS(Tensor::zeros({2}, DType::I32).set_requires_grad(true), Error);
    CHECK_THROWS_AS(Tensor::zeros({2}, DType::F16).set_requires_grad(true), Error);
    CHECK_NOTHROW(ids.set_requires_grad(false));
    CHECK_NOTHROW(Tensor::zeros({2}, DType::F32).set_requires_grad(true));
    Tensor x = vec({1.0}).set_requires_grad(true);
    Tensor y = x * 2.0;
    CHECK_THROWS_AS(y.set_requires_grad(false), Error);  // non-leaf: use detach()
}

TEST_CASE("the graph is freed when the output goes out of scope") {
    Tensor x = vec({1.0, 2.0, 3.0}).set_requires_grad(true);
    const long x_uses = x.impl_ptr().use_count();
    std::weak_ptr<autograd::Node> node_of_y, node_of_h;
    std::weak_ptr<TensorImpl> h_impl;
    std::weak_ptr<Storage> h_storage;
    {
        Tensor h = ops::exp(x);  // exp's closure keeps h's values (a detached view of its storage)
        Tensor y = h * h + ops::sigmoid(h);
        node_of_y = y.grad_fn();
        node_of_h = h.grad_fn();
        h_impl = h.impl_ptr();
        h_storage = h.storage();
        CHECK(x.impl_ptr().use_count() > x_uses);  // the graph holds the leaf
        y.backward(Tensor::ones({3}, DType::F64));
        CHECK_FALSE(node_of_y.expired());  // backward does not free the graph while y is alive
    }
    CHECK(node_of_y.expired());
    CHECK(node_of_h.expired());
    CHECK(h_impl.expired());
    CHECK(h_storage.expired());  // no closure kept the intermediate values alive
    CHECK(x.impl_ptr().use_count() == x_uses);
    CHECK(x.grad().defined());  // the accumulated gradient stays on the leaf
}

TEST_CASE("gradcheck detects a deliberately wrong backward and names the element") {
    Tensor x = rand_input({5}, 9);
    const auto report = autograd::gradcheck([](const auto& in) { return square_with_wrong_grad(in[0], 3); }, {x});
    CHECK_FALSE(report.ok);
    REQUIRE(report.inputs.size() == 1);
    const autograd::GradcheckInputReport& r = report.inputs[0];
    CHECK_FALSE(r.ok);
    CHECK(r.checked == 5);
    CHECK(r.worst_element == 3);
    CHECK(r.max_abs_error > 0.1);
    // s = Σ out ⊙ W with W = randn(seed 1234): the extra +1 in the slope shows up as W[3].
    const double w3 = Tensor::randn({5}, autograd::GradcheckOptions().seed, DType::F64).at({3});
    CHECK(r.worst_analytic - r.worst_numeric == doctest::Approx(w3).epsilon(1e-5));
    CHECK(report.summary().find("FAILED") != std::string::npos);
    CHECK(report.summary().find("worst element 3") != std::string::npos);

    // A correct composition passes, and only the input that requires grad is reported.
    const auto good =
        autograd::gradcheck([](const auto& in) { return in[0] * in[0] * in[1]; }, {x, rand_input({5}, 10, false)});
    CHECK(good.ok);
    CHECK(good.inputs.size() == 1);
}
