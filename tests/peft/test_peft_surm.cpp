// SURM: the battery for every structure (circulant, toeplitz, kronecker, ldr) in LoRA mode on every model, and the
// adapter mode; the fast product equals the merged dense ΔW; parameter counts; errors.
#include "tests/peft/peft_test_util.h"

#include "ops/ops.h"

using namespace ssmtune;
using namespace ssmtune::peft_test;
using nlohmann::json;

TEST_CASE("peft surm battery: every structure as a LoRA replacement, on every model") {
    BatteryOptions o;
    o.mergeable = true;
    o.random_init = {{"init", "random"}};
    for (const char* structure : {"circulant", "toeplitz", "kronecker", "ldr"}) {
        for (const char* kind : {"mamba", "longhorn", "s4d"}) {
            json cfg = {{"peft_type", "SURM"}, {"structure", structure}, {"ldr_rank", 2}, {"surm_alpha", 0.5}};
            run_battery(kind, cfg, o);
        }
    }
    // explicit block size and targets
    run_battery("mamba", {{"peft_type", "SURM"}, {"structure", "circulant"}, {"block_size", 2},
                          {"target_modules", {"x_proj", "dt_proj"}}}, o);
}

TEST_CASE("peft surm battery: adapter mode is a sequential adapter that does not merge") {
    BatteryOptions o;
    o.mergeable = false;
    o.random_init = {{"init", "random"}};
    for (const char* structure : {"circulant", "toeplitz", "kronecker", "ldr"})
        for (const char* kind : {"mamba", "s4d"})
            run_battery(kind, {{"peft_type", "SURM"}, {"mode", "adapter"}, {"structure", structure}}, o);
}

TEST_CASE("peft surm: the product equals alpha times the materialised dense delta, counts, errors") {
    Subject s = make_subject("mamba");
    const Tensor x = Tensor::randn({3, 8}, 5, DType::F64);
    auto& in_proj = *s.module().find_module("backbone.layers.0.mixer.in_proj");
    auto& lin = static_cast<models::Linear&>(in_proj);
    const Tensor base = lin.forward(x).detach();
    for (const char* structure : {"circulant", "toeplitz", "kronecker", "ldr"}) {
        peft::Adapter a = peft::apply(s.module(), peft::Config::from_json({{"peft_type", "SURM"}, {"structure", structure},
            {"init", "random"}, {"surm_alpha", 0.7}, {"target_modules", {"in_proj"}}}));
        const Tensor adapted = lin.forward(x).detach();
        const Tensor w0 = lin.weight().detach().clone();
        a.merge();
        INFO(structure);
        testing::expect_close(lin.forward(x), adapted, 1e-12, 1e-12, "merged in_proj");
        CHECK_FALSE(bit_equal(adapted, base));
        // restore the base weight for the next structure
        lin.weight() = w0.clone().set_requires_grad(true);
    }
    // counts: circulant on in_proj 8 -> 32 uses gcd 8 blocks: c [4, 1, 8] = 32 per layer
    Subject c = make_subject("mamba");
    peft::Adapter a = peft::apply(c.module(), peft::Config::from_json({{"peft_type", "SURM"}, {"target_modules", {"in_proj"}}}));
    CHECK(a.num_trainable() == 2 * 32);
    CHECK(a.named_parameters()[0].first == "backbone.layers.0.mixer.in_proj.surm.c");
    a.detach();
    CHECK_THROWS_WITH_AS(peft::apply(c.module(), peft::Config::from_json({{"peft_type", "SURM"}, {"structure", "circulant"},
                                                                         {"block_size", 3}})),
                         doctest::Contains("must divide both in"), Error);
    CHECK_THROWS_WITH_AS(peft::apply(c.module(), peft::Config::from_json({{"peft_type", "SURM"}, {"structure", "hankel"}})),
                         doctest::Contains("must be circulant, toeplitz, kronecker or ldr"), Error);
    CHECK_THROWS_WITH_AS(peft::apply(c.module(), peft::Config::from_json({{"peft_type", "SURM"}, {"target_modules", {"conv1d"}}})),
                         doctest::Contains("adapts Linear and 1x1 Conv1d"), Error);
}
