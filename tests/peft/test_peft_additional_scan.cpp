// ADDITIONAL_SCAN (MambaPEFT's Additional-scan, peft/additional_scan.cpp): the shared battery; the adapted mixer
// against a plain Mamba model with state size N + k built from the same tensors (the definition); the recurrent mode
// against the parallel forward; init, names, counts; and the models it refuses.
#include <cmath>

#include "engine/tensor_copy.h"
#include "ops/ops.h"
#include "tests/peft/peft_test_util.h"

using namespace ssmtune::peft_test;
using nlohmann::json;

TEST_CASE("peft battery: ADDITIONAL_SCAN") {
    BatteryOptions o;
    o.random_init = {{"init", "random"}};
    run_battery("mamba", {{"peft_type", "ADDITIONAL_SCAN"}, {"d_state", 3}}, o);
    run_battery("mamba", {{"peft_type", "ADDITIONAL_SCAN"}, {"d_state", 1}, {"layers_to_transform", {1}}}, o);
}

TEST_CASE("peft additional scan: equals a Mamba model with N + k states, in both modes") {
    const int64_t k = 3;
    Subject s = make_subject("mamba");
    peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(
                                                  {{"peft_type", "ADDITIONAL_SCAN"}, {"d_state", k}, {"init", "random"}}));
    {  // move A_log_ext off its init so that every added state has its own decay
        autograd::NoGradGuard no_grad;
        for (auto& [n, t] : a.named_parameters())
            if (n.find("A_log_ext") != std::string::npos)
                copy_into(t, ops::add(t.detach(), ops::mul_scalar(Tensor::randn(t.shape(), 7, DType::F64), 0.5)));
    }
    // the same network written as a plain Mamba with state size N + k: A_log [E, N + k] and x_proj rows
    // [dt (R); B (N); B_ext (k); C (N); C_ext (k)]
    models::LMConfig big_config = tiny_lm_config("mamba");
    const int64_t N = big_config.state_size, R = big_config.time_step_rank;
    big_config.state_size = N + k;
    models::LanguageModel big(big_config, 1);
    big.to(DType::F64);
    big.eval();
    std::map<std::string, Tensor> ext;
    for (auto& [n, t] : a.named_parameters()) ext[n] = t.detach();
    for (auto& [name, t] : s.module().named_parameters()) {
        Tensor& dst = *big.find_parameter(name);
        const auto layer = name.substr(0, name.find(".mixer.") + 7);  // "backbone.layers.i.mixer."
        if (name.size() > 6 && name.compare(name.size() - 6, 6, ".A_log") == 0) {
            dst = ops::concat({t.detach(), ext.at(layer + "A_log_ext")}, 1);
        } else if (name.find("x_proj.weight") != std::string::npos) {
            Tensor w = t.detach();
            dst = ops::concat({w.narrow(0, 0, R), w.narrow(0, R, N), ext.at(layer + "x_proj_B_ext"),
                               w.narrow(0, R + N, N), ext.at(layer + "x_proj_C_ext")}, 0);
        } else {
            dst = t.detach();
        }
    }
    testing::expect_close(s.output(), big.forward(s.ids), 0.0, 1e-12, "adapted Mamba vs Mamba with N + k states");
    check_lm_recurrent(s, 1e-12);
}

TEST_CASE("peft additional scan: init, names, counts and refusals") {
    Subject s = make_subject("mamba");
    const Tensor base = s.output().detach();
    peft::Adapter a = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "ADDITIONAL_SCAN", "d_state": 2})"));
    CHECK(bit_equal(s.output(), base));  // W_C' = 0: unchanged at init
    const auto p = a.named_parameters();
    REQUIRE(p.size() == 6);
    CHECK(p[0].first == "backbone.layers.0.mixer.A_log_ext");
    CHECK(p[1].first == "backbone.layers.0.mixer.x_proj_B_ext");
    CHECK(p[2].first == "backbone.layers.0.mixer.x_proj_C_ext");
    CHECK(p[0].second.shape() == Shape{16, 2});
    CHECK(p[1].second.shape() == Shape{2, 16});
    CHECK(a.num_trainable() == 2 * 3 * 2 * 16);  // layers x 3kE
    // A_log_ext continues S4D-Real: log(N+1), log(N+2) on every channel (N = 4); B' within ±1/√E
    const auto a_log = p[0].second.to_vector<double>();
    for (int64_t e = 0; e < 16; ++e) {
        CHECK(a_log[size_t(e * 2)] == doctest::Approx(std::log(5.0)));
        CHECK(a_log[size_t(e * 2 + 1)] == doctest::Approx(std::log(6.0)));
    }
    for (double v : p[1].second.to_vector<double>()) CHECK(std::abs(v) <= 0.25);
    for (double v : p[2].second.to_vector<double>()) CHECK(v == 0.0);
    CHECK(a.merge_refusal().find("grows the state from N to N + k") != std::string::npos);
    a.detach();
    CHECK(bit_equal(s.output(), base));

    Subject lh = make_subject("longhorn");
    CHECK_THROWS_WITH_AS(peft::apply(lh.module(), peft::Config::parse(R"({"peft_type": "ADDITIONAL_SCAN"})")),
                         doctest::Contains("needs a Mamba model, not longhorn (Longhorn's step size"), Error);
    Subject s4d = make_subject("s4d");
    CHECK_THROWS_WITH_AS(peft::apply(s4d.module(), peft::Config::parse(R"({"peft_type": "ADDITIONAL_SCAN"})")),
                         doctest::Contains("needs a Mamba model, not s4d"), Error);
    CHECK_THROWS_WITH_AS(peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "ADDITIONAL_SCAN", "d_state": 0})")),
                         doctest::Contains("\"d_state\" (the number of added states k) must be an integer"), Error);
    for (auto& [n, t] : s.module().named_parameters()) CHECK(t.requires_grad());
}
