// LoRA on parameters (HF's target_parameters): the battery on Mamba's A_log, Longhorn's x_proj.weight and S4D's
// log_A_real and 3-D C (a no-op at init, only the factors train, save → load, merge, float64 gradcheck); the model
// equal to the base with P + s·B A written in (HF's per-expert layout for 3-D), the step mode, a Linear's weight as a
// parameter equal to LoRA on the module, rank patterns by the parameter's full name, and the refusals.
#include "peft/lora.h"

#include "tests/peft/peft_test_util.h"

using namespace ssmtune;
using namespace ssmtune::peft_test;
using nlohmann::json;

namespace {

std::vector<double> values_of(const peft::Adapter& a, const std::string& name) {
    for (auto& [n, t] : a.named_parameters())
        if (n == name) return t.to_vector<double>();
    FAIL("no tensor " << name);
    return {};
}

// P + s · ΔP written into `p` by hand from the factors (HF's layouts, loops).
void add_delta(Tensor& p, const std::vector<double>& A, const std::vector<double>& B, double s) {
    autograd::NoGradGuard no_grad;
    std::vector<double> v = p.to_vector<double>();
    if (p.dim() == 2) {
        const int64_t out = p.size(0), in = p.size(1), r = int64_t(A.size()) / in;
        for (int64_t o = 0; o < out; ++o)
            for (int64_t i = 0; i < in; ++i)
                for (int64_t k = 0; k < r; ++k) v[size_t(o * in + i)] += s * B[size_t(o * r + k)] * A[size_t(k * in + i)];
    } else {  // [X, in, out]: A [r·X, in] rows e·r + k, B [out, r·X] columns k·X + e
        const int64_t X = p.size(0), in = p.size(1), out = p.size(2), r = int64_t(A.size()) / (X * in);
        for (int64_t e = 0; e < X; ++e)
            for (int64_t i = 0; i < in; ++i)
                for (int64_t o = 0; o < out; ++o)
                    for (int64_t k = 0; k < r; ++k)
                        v[size_t((e * in + i) * out + o)] += s * B[size_t(o * r * X + k * X + e)] * A[size_t((e * r + k) * in + i)];
    }
    copy_into(p, Tensor::from_vector<double>(v, p.shape()).to(p.dtype()));
}

}  // namespace

TEST_CASE("peft LoRA on parameters battery: A_log, x_proj.weight, S4D log_A_real and the 3-D C") {
    BatteryOptions opt;
    opt.mergeable = true;
    opt.random_init = {{"init_lora_weights", false}};
    run_battery("mamba", {{"peft_type", "LORA"}, {"r", 2}, {"target_modules", json::array()}, {"target_parameters", {"A_log"}}}, opt);
    run_battery("longhorn", {{"peft_type", "LORA"}, {"r", 2}, {"target_modules", {"out_proj"}}, {"target_parameters", {"x_proj.weight"}}}, opt);
    run_battery("s4d", {{"peft_type", "LORA"}, {"r", 2}, {"target_modules", json::array()},
                        {"target_parameters", {"log_A_real"}}}, opt);
    run_battery("s4d", {{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 3}, {"target_modules", json::array()},
                        {"target_parameters", {"s4_layers.1.kernel.C"}}}, opt);
}

TEST_CASE("peft LoRA on parameters: the model equals the base with P + s B A written in, 2-D and 3-D, step mode too") {
    {
        Subject s = make_subject("mamba");
        Subject ref = make_subject("mamba");
        peft::Adapter a = peft::apply(s.module(), peft::Config::parse(
            R"({"peft_type": "LORA", "r": 3, "lora_alpha": 5, "use_rslora": true, "target_modules": [],
                "target_parameters": ["A_log"], "rank_pattern": {"layers.1.mixer.A_log": 1}})"));
        randomize(a, 3);
        for (int layer = 0; layer < 2; ++layer) {
            const std::string m = "backbone.layers." + std::to_string(layer) + ".mixer";
            const auto A = values_of(a, m + ".lora_A.weight"), B = values_of(a, m + ".lora_B.weight");
            const int64_t r = layer == 0 ? 3 : 1;  // the rank pattern by the parameter's full name
            CHECK(int64_t(A.size()) == r * 4);
            add_delta(*ref.module().find_parameter(m + ".A_log"), A, B, 5.0 / std::sqrt(double(r)));
        }
        testing::expect_close(s.output(), ref.output(), 0.0, 1e-12, "A_log + s B A");
        check_lm_recurrent(s, 1e-12);
    }
    {
        Subject s = make_subject("s4d");
        Subject ref = make_subject("s4d");
        peft::Adapter a = peft::apply(s.module(), peft::Config::parse(
            R"({"peft_type": "LORA", "r": 2, "lora_alpha": 3, "target_modules": [], "target_parameters": ["kernel.C"]})"));
        randomize(a, 4);
        for (int layer = 0; layer < 2; ++layer) {
            const std::string m = "s4_layers." + std::to_string(layer) + ".kernel";
            add_delta(*ref.module().find_parameter(m + ".C"), values_of(a, m + ".lora_A.weight"),
                      values_of(a, m + ".lora_B.weight"), 1.5);
        }
        testing::expect_close(s.output(), ref.output(), 0.0, 1e-12, "3-D C + HF's per-expert product");
    }
    // a Linear's weight as a parameter: the same model as LoRA on the module with the same factors
    Subject s = make_subject("mamba");
    Subject ref = make_subject("mamba");
    peft::Adapter a = peft::apply(s.module(), peft::Config::parse(
        R"({"peft_type": "LORA", "r": 2, "target_modules": [], "target_parameters": ["x_proj.weight"]})"));
    peft::Adapter b = peft::apply(ref.module(), peft::Config::parse(R"({"peft_type": "LORA", "r": 2, "target_modules": ["x_proj"]})"));
    randomize(a, 5);
    {
        autograd::NoGradGuard no_grad;
        auto from = a.named_parameters(), to = b.named_parameters();
        REQUIRE(from.size() == to.size());
        for (size_t i = 0; i < from.size(); ++i) {
            CHECK(from[i].first == to[i].first);  // HF's names: <module>.lora_A.weight
            copy_into(to[i].second, from[i].second);
        }
    }
    testing::expect_close(s.output(), ref.output(), 0.0, 1e-12, "x_proj.weight vs x_proj");
}

TEST_CASE("peft LoRA on parameters: what HF refuses, and what cannot be one change per parameter, is refused") {
    Subject s = make_subject("mamba");
    const std::vector<std::pair<const char*, const char*>> refused = {
        {R"({"peft_type": "LORA", "target_modules": [], "target_parameters": ["D"]})", "2-D"},
        {R"({"peft_type": "LORA", "target_modules": [], "target_parameters": ["nowhere"]})", "names no parameter"},
        {R"({"peft_type": "LORA", "target_modules": [], "target_parameters": ["A_log"], "lora_dropout": 0.1})", "lora_dropout"},
        {R"({"peft_type": "LORA", "target_modules": [], "target_parameters": ["A_log"], "use_dora": true})", "DoRA"},
        {R"({"peft_type": "LORA", "target_modules": [], "target_parameters": ["A_log"], "init_lora_weights": "pissa"})", "reads a module"},
        {R"({"peft_type": "LORA", "target_modules": [], "target_parameters": ["A_log"], "layers_to_transform": [0]})", "layers_to_transform"},
        {R"({"peft_type": "LORA", "target_modules": ["x_proj"], "target_parameters": ["x_proj.weight"]})", "adapts already"},
        {R"({"peft_type": "LORA", "target_modules": [], "target_parameters": 5})", "target_parameters"},
    };
    for (const auto& item : refused) {  // (no structured binding: clang 14 cannot capture one in CHECK_MESSAGE)
        const char* config = item.first;
        const char* message = item.second;
        const std::string error = apply_error(s.module(), config);
        CHECK_MESSAGE(error.find(message) != std::string::npos, config << " -> " << error);
    }
    CHECK_THROWS_WITH_AS(peft::Config::parse(R"({"peft_type": "LORA", "target_modules": []})"),
                         doctest::Contains("target_modules"), Error);  // [] only beside target_parameters
    Subject s4d = make_subject("s4d");
    CHECK(apply_error(s4d.module(), R"({"peft_type": "LORA", "target_modules": [], "target_parameters": ["log_A_real", "A_imag"]})")
              .find("belong to one module") != std::string::npos);
    for (auto& [name, m] : s.module().named_modules())
        for (auto& [pname, p] : m->named_parameters())
            if (pname.find('.') == std::string::npos) CHECK_FALSE(m->parameter_delta(pname));  // nothing left attached
    peft::AdapterSet set(s.module());
    set.add("p", peft::Config::parse(R"({"peft_type": "LORA", "target_modules": [], "target_parameters": ["A_log"]})"));
    set.add("q", peft::Config::parse(R"({"peft_type": "LORA", "target_modules": ["in_proj"]})"));
    CHECK_THROWS_WITH_AS(set.set_active({"q", "p"}), doctest::Contains("target_parameters"), Error);
    CHECK_THROWS_WITH_AS(set.add_weighted_adapter({"q", "p"}, {1.0, 1.0}, "x"), doctest::Contains("target_parameters"), Error);
}
