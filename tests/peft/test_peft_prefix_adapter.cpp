// PREFIX (per-layer prefix vectors on the Mamba/Longhorn mixers) and PARALLEL_ADAPTER (He et al.'s scaled parallel
// adapter beside a whole mixer, a whole S4D layer, or named Linear / 1x1 Conv1d modules): the shared battery, the
// recurrent mode against the parallel forward in float64, the adapter's output against a plain-loop formula, the
// file names and shapes, and the errors.
#include <cmath>

#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "engine/tensor_copy.h"
#include "ops/ops.h"
#include "tests/peft/peft_test_util.h"

using namespace ssmtune::peft_test;
using nlohmann::json;

namespace {

double max_abs_diff(const Tensor& a, const Tensor& b) {
    auto va = a.to_vector<double>(), vb = b.to_vector<double>();
    double m = 0;
    for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::abs(va[i] - vb[i]));
    return m;
}

// The adapter of a plain-loop spec: out[.., o] = s·(Σ_k W_up[o, k] f(Σ_i W_down[k, i] x[.., i] + b_down[k]) + b_up[o]),
// on rows x [M, in].
std::vector<double> adapter_reference(const std::vector<double>& x, int64_t M, int64_t in, const Tensor& wd,
                                      const Tensor& bd, const Tensor& wu, const Tensor& bu, double s,
                                      const std::string& act) {
    const auto Wd = wd.to_vector<double>(), Bd = bd.to_vector<double>(), Wu = wu.to_vector<double>(),
               Bu = bu.to_vector<double>();
    const int64_t r = wd.size(0), out = wu.size(0);
    std::vector<double> y(size_t(M * out));
    for (int64_t m = 0; m < M; ++m) {
        std::vector<double> h(static_cast<size_t>(r));
        for (int64_t k = 0; k < r; ++k) {
            double a = Bd[size_t(k)];
            for (int64_t i = 0; i < in; ++i) a += Wd[size_t(k * in + i)] * x[size_t(m * in + i)];
            if (act == "relu") a = std::max(a, 0.0);
            else if (act == "gelu") a = 0.5 * a * (1.0 + std::erf(a / std::sqrt(2.0)));
            else if (act == "silu") a = a / (1.0 + std::exp(-a));
            h[size_t(k)] = a;
        }
        for (int64_t o = 0; o < out; ++o) {
            double a = Bu[size_t(o)];
            for (int64_t k = 0; k < r; ++k) a += Wu[size_t(o * r + k)] * h[size_t(k)];
            y[size_t(m * out + o)] = s * a;
        }
    }
    return y;
}

}  // namespace

TEST_CASE("peft prefix battery on mamba and longhorn") {
    BatteryOptions o;
    o.zero_init = false;
    for (const char* kind : {"mamba", "longhorn"}) {
        run_battery(kind, {{"peft_type", "PREFIX"}, {"num_virtual_tokens", 3}}, o);
        run_battery(kind, {{"peft_type", "PREFIX"}, {"num_virtual_tokens", 2}, {"layers_to_transform", {1}},
                           {"init_std", 0.1}}, o);
    }
}

TEST_CASE("peft parallel adapter battery: whole mixer, whole S4D layer, out_proj") {
    BatteryOptions o;
    o.random_init = {{"init", "bert"}};
    for (const char* kind : {"mamba", "longhorn", "s4d"})
        run_battery(kind, {{"peft_type", "PARALLEL_ADAPTER"}, {"r", 3}}, o);
    run_battery("mamba", {{"peft_type", "PARALLEL_ADAPTER"}, {"r", 2}, {"target_modules", {"out_proj"}}}, o);
    run_battery("longhorn", {{"peft_type", "PARALLEL_ADAPTER"}, {"r", 2}, {"activation", "gelu"}, {"scaling", 1.5},
                             {"target_modules", {"in_proj"}}, {"layers_to_transform", {0}}}, o);
    run_battery("s4d", {{"peft_type", "PARALLEL_ADAPTER"}, {"r", 2}, {"activation", "silu"},
                        {"target_modules", {"output_linear.0"}}}, o);
}

TEST_CASE("peft prefix: tensor names, shapes, seeded init and no effect after detach") {
    Subject s = make_subject("mamba");
    const Tensor base = s.output().detach();
    peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(
                                                  {{"peft_type", "PREFIX"}, {"num_virtual_tokens", 5}, {"init_std", 0.3}}));
    auto named = a.named_parameters();
    REQUIRE(named.size() == 2);
    CHECK(named[0].first == "backbone.layers.0.mixer.prefix");
    CHECK(named[1].first == "backbone.layers.1.mixer.prefix");
    CHECK(named[0].second.shape() == Shape{5, 16});  // [P, E]
    CHECK(a.num_trainable() == 2 * 5 * 16);
    // N(0, 0.3²): the sample standard deviation of 160 draws is within 25% of 0.3
    double sq = 0;
    for (auto& [n, t] : named)
        for (double v : t.to_vector<double>()) sq += v * v;
    CHECK(std::sqrt(sq / 160.0) == doctest::Approx(0.3).epsilon(0.25));
    CHECK(max_abs_diff(s.output(), base) > 1e-4);  // the prefix changes the outputs
    CHECK(a.merge_refusal() == "prefix vectors are extra inputs per layer, not weights");
    // same seed -> same prefix
    Subject s2 = make_subject("mamba");
    peft::Adapter a2 = peft::apply(s2.module(), peft::Config::from_json(
                                                    {{"peft_type", "PREFIX"}, {"num_virtual_tokens", 5}, {"init_std", 0.3}}));
    CHECK(bit_equal(a2.named_parameters()[1].second, named[1].second));
    a.detach();
    CHECK(bit_equal(s.output(), base));
}

TEST_CASE("peft prefix: recurrent steps equal the parallel forward (F64)") {
    for (const char* kind : {"mamba", "longhorn"}) {
        INFO(kind);
        Subject s = make_subject(kind);
        peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(
                                                      {{"peft_type", "PREFIX"}, {"num_virtual_tokens", 4}, {"init_std", 0.7}}));
        check_lm_recurrent(s, 1e-10);
        // with an initial state and a prefix together (h0 first, then the prefix positions)
        Subject s2 = make_subject(kind);
        s2.any.lm->mixer(0).hook_initial_state = Tensor::randn({16, 4}, 11, DType::F64);
        s2.any.lm->mixer(1).hook_prefix = Tensor::randn({2, 16}, 12, DType::F64);
        check_lm_recurrent(s2, 1e-10);
        // generation goes through the same warm-up: greedy continuation equals argmax of the parallel logits
        Subject s3 = make_subject(kind);
        peft::Adapter a3 = peft::apply(s3.module(), peft::Config::from_json(
                                                        {{"peft_type", "PREFIX"}, {"num_virtual_tokens", 3}, {"init_std", 0.7}}));
        models::GenerationOptions g;
        g.max_new_tokens = 1;
        g.temperature = 0;
        const std::vector<int64_t> prompt{1, 4, 2, 9};
        const auto out = s3.any.lm->generate(prompt, g);
        const Tensor logits = s3.any.lm->forward(Tensor::from_vector<int64_t>(prompt, {1, 4})).select(1, 3);
        CHECK(out.back() == ops::argmax(logits, 1).to_vector<int64_t>()[0]);
    }
}

TEST_CASE("peft parallel adapter: recurrent mode equals the parallel forward (F64)") {
    for (const char* kind : {"mamba", "longhorn"}) {
        for (const json& targets : {json(nullptr), json::array({"out_proj"}), json::array({"in_proj", "mixer"})}) {
            INFO(kind << " " << targets.dump());
            Subject s = make_subject(kind);
            peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(
                {{"peft_type", "PARALLEL_ADAPTER"}, {"r", 3}, {"target_modules", targets}, {"activation", "gelu"}}));
            randomize(a, 40);
            check_lm_recurrent(s, 1e-10);
        }
    }
    for (bool prenorm : {false, true}) {
        for (const json& targets : {json(nullptr), json::array({"output_linear.0"})}) {
            INFO("s4d prenorm " << prenorm << " " << targets.dump());
            models::S4DConfig c = tiny_s4d_config();
            c.prenorm = prenorm;
            models::S4DClassifier m(c, 5);
            m.to(DType::F64);
            m.eval();
            peft::Adapter a = peft::apply(m, peft::Config::from_json(
                                                 {{"peft_type", "PARALLEL_ADAPTER"}, {"r", 2}, {"target_modules", targets}}));
            randomize(a, 50);
            const Tensor x = Tensor::randn({2, 9, 3}, 6, DType::F64);
            testing::expect_close(m.forward_recurrent(x), m.forward(x), 0.0, 1e-10, "s4d logits");
        }
    }
}

TEST_CASE("peft parallel adapter: output equals the plain-loop formula, names and shapes, lora init") {
    SUBCASE("beside the whole mixer: o = mixer(u) + s·up(f(down(u)))") {
        for (const char* act : {"relu", "gelu", "silu", "identity"}) {
            INFO(act);
            Subject s = make_subject("longhorn");
            peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(
                {{"peft_type", "PARALLEL_ADAPTER"}, {"r", 3}, {"activation", act}, {"scaling", 2.5}}));
            randomize(a, 7);
            auto named = a.named_parameters();
            REQUIRE(named.size() == 8);
            CHECK(named[0].first == "backbone.layers.0.mixer.adapter.down.weight");
            CHECK(named[1].first == "backbone.layers.0.mixer.adapter.down.bias");
            CHECK(named[2].first == "backbone.layers.0.mixer.adapter.up.weight");
            CHECK(named[3].first == "backbone.layers.0.mixer.adapter.up.bias");
            CHECK(named[4].first == "backbone.layers.1.mixer.adapter.down.weight");
            CHECK(named[0].second.shape() == Shape{3, 8});  // [r, D]
            CHECK(named[2].second.shape() == Shape{8, 3});  // [D, r]
            CHECK(a.num_trainable() == 2 * (2 * 3 * 8 + 3 + 8));
            models::Mixer& mixer = s.any.lm->mixer(1);
            const Tensor u = Tensor::randn({2, 5, 8}, 21, DType::F64);
            const Tensor with = mixer.add_delta(mixer.forward(u), u), plain = mixer.forward(u);
            const auto ref = adapter_reference(u.to_vector<double>(), 10, 8, named[4].second, named[5].second,
                                               named[6].second, named[7].second, 2.5, act);
            testing::expect_close(ops::sub(with, plain), Tensor::from_vector<double>(ref, {2, 5, 8}), 0.0, 1e-12,
                                  "adapter output");
            CHECK(a.merge_refusal().find(std::string(act) == "identity" ? "linear" : act) != std::string::npos);
        }
    }
    SUBCASE("beside a whole S4D layer, channels first: Δ[b, :, l] acts on u[b, :, l]") {
        Subject s = make_subject("s4d");
        peft::Adapter a = peft::apply(s.module(), peft::Config::from_json({{"peft_type", "PARALLEL_ADAPTER"}, {"r", 2}}));
        randomize(a, 8);
        auto named = a.named_parameters();
        REQUIRE(named.size() == 8);
        CHECK(named[4].first == "s4_layers.1.adapter.down.weight");
        CHECK(named[4].second.shape() == Shape{2, 6});  // [r, H]
        CHECK(named[6].second.shape() == Shape{6, 2});  // [H, r]
        models::S4DLayer& layer = s.any.s4d->layer(1);
        const Tensor u = Tensor::randn({2, 6, 5}, 22, DType::F64);  // [B, H, L]
        Generator g(0);
        const Tensor delta = ops::sub(layer.add_delta(layer.forward(u, g), u), layer.forward(u, g));  // [B, H, L]
        const auto ref = adapter_reference(u.transpose(1, 2).contiguous().to_vector<double>(), 10, 6, named[4].second,
                                           named[5].second, named[6].second, named[7].second, 4.0, "relu");
        testing::expect_close(delta.transpose(1, 2).contiguous(), Tensor::from_vector<double>(ref, {2, 5, 6}), 0.0,
                              1e-12, "s4d adapter output");
    }
    SUBCASE("lora init: down in U(±1/√in) and not zero, up and biases zero; bert init: all weights non-zero") {
        Subject s = make_subject("mamba");
        peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(
            {{"peft_type", "PARALLEL_ADAPTER"}, {"r", 4}, {"target_modules", {"in_proj"}}}));
        auto named = a.named_parameters();
        REQUIRE(named.size() == 8);
        CHECK(named[0].first == "backbone.layers.0.mixer.in_proj.adapter.down.weight");
        CHECK(named[2].second.shape() == Shape{32, 4});  // [2E, r]
        double amax = 0;
        for (double v : named[0].second.to_vector<double>()) amax = std::max(amax, std::abs(v));
        CHECK(amax > 0.5 / std::sqrt(8.0));
        CHECK(amax <= 1.0 / std::sqrt(8.0));
        for (int i : {1, 2, 3})
            for (double v : named[size_t(i)].second.to_vector<double>()) CHECK(v == 0.0);
        Subject s2 = make_subject("mamba");
        peft::Adapter b = peft::apply(s2.module(), peft::Config::from_json({{"peft_type", "PARALLEL_ADAPTER"}, {"init", "bert"}}));
        auto nb = b.named_parameters();
        double sq = 0;
        for (double v : nb[2].second.to_vector<double>()) sq += v * v;
        CHECK(std::sqrt(sq / double(nb[2].second.numel())) == doctest::Approx(0.02).epsilon(0.3));
        for (double v : nb[3].second.to_vector<double>()) CHECK(v == 0.0);
    }
}

TEST_CASE("peft prefix and parallel adapter: errors name the problem and the fix") {
    Subject s4d = make_subject("s4d");
    CHECK_THROWS_WITH_AS(peft::apply(s4d.module(), peft::Config::from_json({{"peft_type", "PREFIX"}})),
                         doctest::Contains("use INITIAL_STATE"), Error);
    for (auto& [name, t] : s4d.module().named_parameters()) CHECK(t.requires_grad());  // restored on failure

    Subject m = make_subject("mamba");
    try {
        peft::apply(m.module(), peft::Config::from_json({{"peft_type", "PARALLEL_ADAPTER"}, {"target_modules", {"qkv"}}}));
        FAIL("expected an error");
    } catch (const Error& e) {
        const std::string msg = e.what();
        CHECK(msg.find("\"qkv\" matches no module") != std::string::npos);
        for (const char* listed : {"in_proj", "out_proj", "x_proj", "dt_proj", "mixer"}) {
            INFO(listed);
            CHECK(msg.find(listed) != std::string::npos);
        }
    }
    CHECK_THROWS_WITH_AS(
        peft::apply(m.module(), peft::Config::from_json({{"peft_type", "PARALLEL_ADAPTER"}, {"target_modules", {"embeddings"}}})),
        doctest::Contains("but this method adapts Linear"), Error);
    CHECK_THROWS_WITH_AS(peft::apply(m.module(), peft::Config::from_json({{"peft_type", "PARALLEL_ADAPTER"}, {"activation", "tanh"}})),
                         doctest::Contains("use relu, gelu, silu or identity"), Error);
    CHECK_THROWS_WITH_AS(peft::apply(m.module(), peft::Config::from_json({{"peft_type", "PARALLEL_ADAPTER"}, {"init", "xavier"}})),
                         doctest::Contains("\"init\""), Error);
    CHECK_THROWS_WITH_AS(peft::apply(m.module(), peft::Config::from_json({{"peft_type", "PARALLEL_ADAPTER"},
                                                                          {"scaling", "learnable_scalar"}})),
                         doctest::Contains("learnable scalar is not implemented"), Error);
    // a failed apply leaves nothing attached: a valid one afterwards works and the base is unchanged
    const Tensor base = m.output().detach();
    peft::Adapter ok = peft::apply(m.module(), peft::Config::from_json({{"peft_type", "PARALLEL_ADAPTER"}}));
    CHECK(bit_equal(m.output(), base));
}

TEST_CASE("peft prefix and parallel adapter: float64 gradcheck worst errors") {
    // The battery gradchecks a sample; here every element of one layer's tensors, and the worst errors are printed.
    struct Case { const char* kind; json config; };
    for (const Case& c : {Case{"mamba", {{"peft_type", "PREFIX"}, {"num_virtual_tokens", 2}, {"init_std", 0.3}}},
                          Case{"longhorn", {{"peft_type", "PREFIX"}, {"num_virtual_tokens", 2}, {"init_std", 0.3}}},
                          Case{"mamba", {{"peft_type", "PARALLEL_ADAPTER"}, {"r", 2}, {"init", "bert"}, {"activation", "gelu"}}},
                          Case{"s4d", {{"peft_type", "PARALLEL_ADAPTER"}, {"r", 2}, {"init", "bert"}}}}) {
        Subject s = make_subject(c.kind);
        peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(c.config));
        if (c.config["peft_type"] == "PARALLEL_ADAPTER") randomize(a, 60);
        const auto report = autograd::gradcheck([&](const std::vector<Tensor>&) { return s.loss(); }, a.parameters());
        double worst = 0;
        for (auto& r : report.inputs) worst = std::max(worst, r.max_abs_error);
        MESSAGE(std::string(c.kind) << " " << c.config.dump() << ": worst |analytic - numeric| = " << worst);
        INFO(report.summary());
        CHECK(report.ok);
    }
}
