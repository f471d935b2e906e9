// The PEFT battery (peft_test_util.h) for FULL, BITFIT, PARTIAL, LORA, STATE_OFFSET, INITIAL_STATE and PROMPT on
// every model each supports.
#include "tests/peft/peft_test_util.h"

#include <algorithm>
#include <map>

#include "engine/tensor_copy.h"
#include "ops/ops.h"

using namespace ssmtune::peft_test;
using nlohmann::json;

TEST_CASE("peft battery: FULL") {
    for (const char* kind : {"mamba", "longhorn", "s4d"}) {
        BatteryOptions o;
        o.mergeable = true;
        o.in_place = true;
        run_battery(kind, {{"peft_type", "FULL"}}, o);
    }
}

TEST_CASE("peft battery: BITFIT") {
    for (const char* kind : {"mamba", "longhorn", "s4d"}) {
        BatteryOptions o;
        o.mergeable = true;
        o.in_place = true;
        run_battery(kind, {{"peft_type", "BITFIT"}}, o);
    }
}

TEST_CASE("peft battery: PARTIAL") {
    BatteryOptions o;
    o.mergeable = true;
    o.in_place = true;
    run_battery("mamba", {{"peft_type", "PARTIAL"}, {"param_names", {"A_log", "D", "conv1d"}}}, o);
    run_battery("longhorn", {{"peft_type", "PARTIAL"}, {"param_names", {"dt_proj.bias", "x_proj"}},
                             {"layers_to_transform", {1}}}, o);
    run_battery("s4d", {{"peft_type", "PARTIAL"}, {"param_names", {"kernel.log_dt", "D"}}}, o);
}

TEST_CASE("peft PARTIAL: what each entry names, counts, detach restores, errors list the parameters") {
    Subject s = make_subject("mamba");
    TensorMap before;
    for (auto& [n, t] : s.module().state_dict()) before[n] = t.detach().clone();
    peft::Adapter a = peft::apply(s.module(), peft::Config::parse(
        R"({"peft_type": "PARTIAL", "param_names": ["conv1d", "A_log", "backbone.layers.1.mixer.D", "mixer.A_log"]})"));
    std::vector<std::string> names;
    for (auto& [n, t] : a.named_parameters()) names.push_back(n);
    // in the model's order, each once; "conv1d" names the module's weight and bias, D only layer 1's
    const std::vector<std::string> expected = {
        "backbone.layers.0.mixer.A_log", "backbone.layers.0.mixer.conv1d.weight", "backbone.layers.0.mixer.conv1d.bias",
        "backbone.layers.1.mixer.A_log", "backbone.layers.1.mixer.D", "backbone.layers.1.mixer.conv1d.weight",
        "backbone.layers.1.mixer.conv1d.bias"};
    CHECK(names == expected);
    // tiny Mamba: E = 16, K = 3, N = 4: per layer conv 16*3 + 16, A_log 16*4; plus one D of 16
    CHECK(a.num_trainable() == 2 * (16 * 3 + 16 + 16 * 4) + 16);
    CHECK(a.num_total() == s.module().num_parameters());  // adds nothing
    for (auto& named : s.module().named_parameters()) {  // (no structured binding: doctest's message captures it)
        const std::string n = named.first;
        CHECK_MESSAGE(named.second.requires_grad() == (std::find(expected.begin(), expected.end(), n) != expected.end()), n);
    }
    // a step moves them; detach puts the originals back
    Tensor loss = s.loss();
    loss.backward();
    for (auto& [n, t] : a.named_parameters()) {
        autograd::NoGradGuard no_grad;
        copy_into(t, ops::sub(t.detach(), ops::mul_scalar(t.grad(), 0.1)));
    }
    CHECK_FALSE(bit_equal(s.module().state_dict().at("backbone.layers.0.mixer.A_log"),
                          before.at("backbone.layers.0.mixer.A_log")));
    a.detach();
    for (auto& named : s.module().state_dict()) {
        const std::string n = named.first;
        CHECK_MESSAGE(bit_equal(named.second, before.at(n)), n);
    }

    CHECK(apply_error(s.module(), R"({"peft_type": "PARTIAL"})").find("\"param_names\" must be a non-empty list") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "PARTIAL", "param_names": ["B"]})")
              .find("entry \"B\" matches no parameter of this model; fix: choose among: backbone.embeddings.weight") !=
          std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "PARTIAL", "param_names": ["in_proj"], "layers_to_transform": [0],
                        "bias_names": ["x"]})").find("unknown key \"bias_names\" for peft_type PARTIAL") !=
          std::string::npos);
    // a top-level module names its tensors too (S4D's encoder)
    Subject s4d = make_subject("s4d");
    peft::Adapter enc = peft::apply(s4d.module(), peft::Config::parse(R"({"peft_type": "PARTIAL", "param_names": ["encoder"]})"));
    REQUIRE(enc.named_parameters().size() == 2);
    CHECK(enc.named_parameters()[0].first == "encoder.weight");
    CHECK(enc.named_parameters()[1].first == "encoder.bias");
    // "D" is a whole part of a name, not a substring: dt_proj is not named by it
    peft::Adapter d = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "PARTIAL", "param_names": ["D"]})"));
    CHECK(d.named_parameters().size() == 2);
}

TEST_CASE("peft battery: LORA") {
    BatteryOptions o;
    o.mergeable = true;
    o.random_init = {{"init_lora_weights", false}};
    for (const char* kind : {"mamba", "longhorn", "s4d"})
        run_battery(kind, {{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 4}}, o);
    // embeddings (tied head: merge unties it) and rsLoRA with a layer subset
    run_battery("mamba", {{"peft_type", "LORA"}, {"r", 2}, {"target_modules", {"embeddings", "out_proj"}}}, o);
    run_battery("longhorn", {{"peft_type", "LORA"}, {"r", 3}, {"use_rslora", true}, {"lora_alpha", 6},
                             {"target_modules", {"x_proj"}}, {"layers_to_transform", {1}}}, o);
}

TEST_CASE("peft battery: LORA training biases (bias all, lora_only) and with lora_bias") {
    BatteryOptions o;
    o.mergeable = true;
    o.in_place = true;
    o.random_init = {{"init_lora_weights", false}};
    // conv1d.bias and dt_proj.bias train in place beside the LoRA
    run_battery("mamba", {{"peft_type", "LORA"}, {"r", 2}, {"bias", "all"}}, o);
    run_battery("longhorn", {{"peft_type", "LORA"}, {"r", 2}, {"bias", "lora_only"}, {"target_modules", {"dt_proj", "out_proj"}}}, o);
    // S4D: encoder, output_linear.0 (1x1 conv) and decoder all have biases, so lora_bias merges everywhere
    run_battery("s4d", {{"peft_type", "LORA"}, {"r", 2}, {"bias", "lora_only"}, {"lora_bias", true}}, o);
    o.in_place = false;
    run_battery("mamba", {{"peft_type", "LORA"}, {"r", 2}, {"lora_bias", true}, {"target_modules", {"dt_proj"}}}, o);
}

TEST_CASE("peft battery: LORA with DoRA") {
    BatteryOptions o;
    o.mergeable = true;
    o.gradcheck = false;  // DoRA holds its weight norm constant in backward: checked by the test below instead
    o.random_init = {{"init_lora_weights", false}};
    run_battery("mamba", {{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 4}, {"use_dora", true}}, o);
    run_battery("longhorn", {{"peft_type", "LORA"}, {"r", 2}, {"use_dora", true}, {"target_modules", {"x_proj", "out_proj"}}}, o);
    run_battery("mamba", {{"peft_type", "LORA"}, {"r", 2}, {"use_dora", true}, {"target_modules", {"embeddings", "in_proj"}}}, o);
    run_battery("s4d", {{"peft_type", "LORA"}, {"r", 2}, {"use_dora", true}}, o);  // encoder, output_linear.0 (1x1 conv), decoder
}

TEST_CASE("peft DoRA: outputs and gradients equal (m/n)(W + s B A) with the row norms n held constant") {
    Subject s = make_subject("mamba");
    peft::Adapter a = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "LORA", "r": 2, "lora_alpha": 3,
        "use_dora": true, "target_modules": ["out_proj"], "init_lora_weights": false})"));
    std::map<std::string, Tensor> p;
    for (auto& [n, t] : a.named_parameters()) p[n] = t;
    const std::string m0 = "backbone.layers.0.mixer.out_proj.";
    REQUIRE(p.count(m0 + "lora_magnitude_vector") == 1);
    CHECK(p.at(m0 + "lora_magnitude_vector").shape() == Shape{8});
    {  // m starts at ‖W + s B A‖ row by row; move it away so that m / n differs from 1
        autograd::NoGradGuard no_grad;
        for (int i = 0; i < 2; ++i) {
            const std::string m = "backbone.layers." + std::to_string(i) + ".mixer.out_proj.";
            const Tensor w = ops::add(s.module().find_parameter(m + "weight")->detach(),
                                      ops::mul_scalar(ops::matmul(p.at(m + "lora_B.weight"), p.at(m + "lora_A.weight")), 1.5));
            testing::expect_close(p.at(m + "lora_magnitude_vector"), ops::sqrt(ops::sum(ops::mul(w, w), {1})), 0, 1e-14,
                                  "initial magnitude");
            Tensor& mag = p.at(m + "lora_magnitude_vector");
            copy_into(mag, ops::mul(mag.detach(), ops::add_scalar(ops::mul_scalar(Tensor::randn({8}, 30 + i, DType::F64), 0.3), 1.0)));
        }
    }
    // the twin: out_proj.weight = (m / n) ⊙ (W + s B A) from leaf copies of A, B, m, with n as plain numbers
    Subject twin = make_subject("mamba");
    std::map<std::string, Tensor> leaves;
    for (auto& [n, t] : p) leaves[n] = t.detach().clone().set_requires_grad(true);
    for (int i = 0; i < 2; ++i) {
        const std::string m = "backbone.layers." + std::to_string(i) + ".mixer.out_proj.";
        Tensor& w = *twin.module().find_parameter(m + "weight");
        const Tensor base_w = w.detach();
        const Tensor full = ops::add(base_w, ops::mul_scalar(ops::matmul(leaves.at(m + "lora_B.weight"), leaves.at(m + "lora_A.weight")), 1.5));
        const Tensor fd = full.detach();
        const Tensor n = ops::sqrt(ops::sum(ops::mul(fd, fd), {1}));
        w = ops::mul(full, ops::div(leaves.at(m + "lora_magnitude_vector"), n).unsqueeze(1));
    }
    Tensor l1 = s.loss(), l2 = twin.loss();
    CHECK(l1.item() == doctest::Approx(l2.item()).epsilon(1e-12));
    l1.backward();
    l2.backward();
    for (auto& [n, t] : p) testing::expect_close(t.grad(), leaves.at(n).grad(), 1e-9, 1e-12, "DoRA gradient " + n);
    a.detach();
    // the two routes to a DoRA output agree: out + forward(x) (taken under dropout, W x′ recomputed) and apply(out, x)
    // (reuses the host's out − b), on Linears with and without a bias and on S4D's 1x1 conv
    for (const char* kind : {"s4d", "mamba"}) {
        Subject t = make_subject(kind);
        peft::Adapter d = peft::apply(t.module(), peft::Config::from_json(
            {{"peft_type", "LORA"}, {"r", 2}, {"use_dora", true}, {"init_lora_weights", false},
             {"target_modules", t.any.lm ? json::array({"in_proj"}) : json::array({"encoder", "output_linear.0"})}}));
        for (auto& named : t.module().named_modules()) {
            auto* host = dynamic_cast<models::DeltaHost*>(named.second);
            if (!host || !host->delta()) continue;
            const std::string where = named.first;
            const Tensor* bias = host->find_parameter("bias");
            const bool conv = host->find_parameter("weight")->dim() == 3;
            const Tensor w = host->find_parameter("weight")->detach();
            const int64_t in = w.size(1), out = w.size(0);
            const Tensor x = conv ? Tensor::randn({2, in, 5}, 3, DType::F64) : Tensor::randn({2, 5, in}, 3, DType::F64);
            Tensor y = conv ? ops::matmul(w.reshape({out, in}), x) : ops::linear(x, w);
            if (bias) y = ops::add(y, conv ? bias->unsqueeze(1) : *bias);
            testing::expect_close(host->delta()->apply(y, x), ops::add(y, host->delta()->forward(x)), 0, 1e-12,
                                  "DoRA apply vs forward at " + where);
        }
    }
    // on an embedding E [V, D] the norms run over the vocabulary: m [D] starts at the column norms of E
    peft::Adapter e = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "LORA", "use_dora": true,
        "target_modules": ["embeddings"]})"));
    REQUIRE(e.named_parameters().size() == 3);
    CHECK(e.named_parameters()[2].first == "backbone.embeddings.lora_magnitude_vector");
    const Tensor E = s.module().find_parameter("backbone.embeddings.weight")->detach();
    testing::expect_close(e.named_parameters()[2].second, ops::sqrt(ops::sum(ops::mul(E, E), {0})), 0, 1e-14,
                          "embedding magnitude");
}

// At init m/n is exactly 1 and B A = 0, so a DoRA module must return its host's output to the bit, as HF's sum
// out + ((m/n − 1)(out − b) + (m/n) s·B A x) does. The rearranged (m/n)(out − b + s·B A x) + b rounds (out − b) + b:
// with a bias of 1 and outputs near 1e-3 that loses their low bits (and on x87 it cost an ulp on the tiny models).
TEST_CASE("peft DoRA at init returns the host's output bit for bit, whatever its bias") {
    for (const char* kind : {"s4d", "mamba"}) {  // S4D: Linears with a bias and a 1x1 conv; Mamba: dt_proj's bias
        Subject t = make_subject(kind);
        peft::Adapter d = peft::apply(t.module(), peft::Config::from_json(
            {{"peft_type", "LORA"}, {"r", 2}, {"use_dora", true},
             {"target_modules", t.any.lm ? json::array({"dt_proj"}) : json::array({"encoder", "output_linear.0", "decoder"})}}));
        int checked = 0;
        for (auto& named : t.module().named_modules()) {
            auto* host = dynamic_cast<models::DeltaHost*>(named.second);
            if (!host || !host->delta()) continue;
            Tensor* bias = host->find_parameter("bias");
            REQUIRE(bias != nullptr);
            {
                autograd::NoGradGuard no_grad;
                copy_into(*bias, ops::add_scalar(ops::mul_scalar(bias->detach(), 0.0), 1.0));
            }
            const Tensor w = host->find_parameter("weight")->detach();
            const bool conv = w.dim() == 3;
            const int64_t in = w.size(1), out = w.size(0);
            const Tensor x = conv ? Tensor::randn({2, in, 5}, 7, DType::F64) : Tensor::randn({2, 5, in}, 7, DType::F64);
            // any host output will do: apply only reads it; values near 1e-3 beside a bias of 1
            const Tensor y = ops::mul_scalar(conv ? Tensor::randn({2, out, 5}, 8, DType::F64) : Tensor::randn({2, 5, out}, 8, DType::F64), 1e-3);
            CHECK_MESSAGE(bit_equal(host->delta()->apply(y, x), y), (std::string(kind) + " " + named.first));
            ++checked;
        }
        CHECK(checked == (t.any.lm ? 2 : 4));
    }
}

TEST_CASE("peft battery: STATE_OFFSET h and y") {
    BatteryOptions o;
    o.random_init = {{"init", "random"}};
    for (const char* kind : {"mamba", "longhorn", "s4d"}) {
        run_battery(kind, {{"peft_type", "STATE_OFFSET"}, {"variant", "h"}}, o);
        run_battery(kind, {{"peft_type", "STATE_OFFSET"}, {"variant", "y"}}, o);
    }
}

TEST_CASE("peft battery: STATE_OFFSET low rank (r)") {
    BatteryOptions o;
    o.random_init = {{"init", "random"}};
    for (const char* kind : {"mamba", "longhorn", "s4d"}) run_battery(kind, {{"peft_type", "STATE_OFFSET"}, {"r", 2}}, o);
    run_battery("mamba", {{"peft_type", "STATE_OFFSET"}, {"r", 1}, {"layers_to_transform", {0}}}, o);
}

TEST_CASE("peft state offset low rank: equals the full h′ = B A in both modes, counts, names, errors") {
    for (const char* kind : {"mamba", "longhorn", "s4d"}) {
        INFO(kind);
        Subject s = make_subject(kind);
        peft::Adapter a = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "STATE_OFFSET", "r": 2, "init": "random"})"));
        std::map<std::string, Tensor> lr;
        for (auto& [n, t] : a.named_parameters()) lr[n] = t.detach();
        // the same offsets as full h′ tensors, multiplied out by hand
        Subject full = make_subject(kind);
        peft::Adapter f = peft::apply(full.module(), peft::Config::parse(R"({"peft_type": "STATE_OFFSET"})"));
        REQUIRE(lr.size() == 2 * f.named_parameters().size());
        for (auto& [n, t] : f.named_parameters()) {
            const Tensor B = lr.at(n + "_lora_B"), A = lr.at(n + "_lora_A");  // [E, r], [r, N] (S4D [r, N/2, 2])
            CHECK(B.shape() == Shape{t.size(0), 2});
            autograd::NoGradGuard no_grad;
            copy_into(t, ops::matmul(B, A.reshape({2, A.numel() / 2})).reshape(t.shape()));
        }
        testing::expect_close(s.output(), full.output(), 0.0, 1e-12, "low-rank h′ vs the full h′ = B A");
        if (s.any.lm) {
            check_lm_recurrent(s, 1e-10);
        } else {
            autograd::NoGradGuard no_grad;
            testing::expect_close(s.any.s4d->forward_recurrent(s.x), s.output(), 0.0, 1e-10, "s4d recurrent");
        }
        a.detach();
        f.detach();
        CHECK(bit_equal(s.output(), full.output()));
    }
    Subject s = make_subject("mamba");
    peft::Adapter a = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "STATE_OFFSET", "r": 3})"));
    CHECK(a.num_trainable() == 2 * 3 * (16 + 4));  // layers x r(E + N)
    CHECK(a.named_parameters()[0].first == "backbone.layers.0.mixer.state_offset_lora_A");
    CHECK(a.named_parameters()[0].second.shape() == Shape{3, 4});
    for (double v : a.named_parameters()[1].second.to_vector<double>()) CHECK(v == 0.0);  // B_r zero: h′ = 0 at init
    a.detach();
    CHECK_THROWS_WITH_AS(peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "STATE_OFFSET", "variant": "y", "r": 2})")),
                         doctest::Contains("\"r\" = 2 needs variant \"h\""), Error);
    // a rank above min(E, N) = 4 is allowed (h′ = B_r A_r then has full rank), as LoRA's
    peft::Adapter big = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "STATE_OFFSET", "r": 5})"));
    CHECK(big.named_parameters()[0].second.shape() == Shape{5, 4});
    big.detach();
}

TEST_CASE("peft battery: INITIAL_STATE") {
    BatteryOptions o;
    o.random_init = {{"init", "random"}};
    for (const char* kind : {"mamba", "longhorn", "s4d"}) run_battery(kind, {{"peft_type", "INITIAL_STATE"}}, o);
    for (const char* kind : {"mamba", "longhorn"})
        run_battery(kind, {{"peft_type", "INITIAL_STATE"}, {"conv_init_state", true}}, o);
}

TEST_CASE("peft initial state with conv_init_state: c0 starts the conv window in both modes, counts, errors") {
    for (const char* kind : {"mamba", "longhorn"}) {
        INFO(kind);
        Subject s = make_subject(kind);
        const Tensor base = s.output().detach();
        peft::Adapter a = peft::apply(s.module(), peft::Config::parse(
                                                      R"({"peft_type": "INITIAL_STATE", "conv_init_state": true, "init": "random"})"));
        const auto p = a.named_parameters();
        REQUIRE(p.size() == 4);
        CHECK(p[1].first == "backbone.layers.0.mixer.conv_initial_state");
        CHECK(p[1].second.shape() == Shape{16, 2});  // [E, K-1]
        CHECK(a.num_trainable() == 2 * (16 * 4 + 16 * 2));  // layers x (E·N + E·(K−1))
        check_lm_recurrent(s, 1e-10);  // the step mode starts its window at [0, c0]
        // c0 alone (h0 set back to zero) still changes the output
        {
            autograd::NoGradGuard no_grad;
            for (auto& [n, t] : a.named_parameters())
                if (n.find("conv_initial_state") == std::string::npos) copy_into(t, ops::mul_scalar(t.detach(), 0.0));
        }
        const Tensor with_c0 = s.output().detach();
        CHECK_FALSE(bit_equal(with_c0, base));
        check_lm_recurrent(s, 1e-10);
        a.detach();
        CHECK(bit_equal(s.output(), base));
    }
    Subject s4d = make_subject("s4d");
    CHECK_THROWS_WITH_AS(peft::apply(s4d.module(), peft::Config::parse(R"({"peft_type": "INITIAL_STATE", "conv_init_state": true})")),
                         doctest::Contains("the S4D classifier has no such conv"), Error);
    CHECK_THROWS_WITH_AS(peft::Config::parse(R"({"peft_type": "INITIAL_STATE", "conv_init_state": 1})"),
                         doctest::Contains("\"conv_init_state\" must be true or false"), Error);
}

TEST_CASE("peft s4d state hooks: the convolution mode equals the recurrent mode") {
    for (const char* disc : {"zoh", "bilinear"}) {
        for (const char* cfg : {R"({"peft_type": "INITIAL_STATE", "init": "random"})",
                                R"({"peft_type": "STATE_OFFSET", "variant": "h", "init": "random"})",
                                R"({"peft_type": "STATE_OFFSET", "variant": "y", "init": "random"})"}) {
            models::S4DConfig c = tiny_s4d_config();
            c.discretization = disc;
            models::S4DClassifier m(c, 4);
            m.to(DType::F64);
            m.eval();
            peft::Adapter a = peft::apply(m, peft::Config::parse(cfg));
            const Tensor x = Tensor::randn({2, 7, 3}, 9, DType::F64);
            INFO(disc << " " << cfg);
            testing::expect_close(m.forward_recurrent(x), m.forward(x).detach(), 1e-10, 1e-10, "recurrent vs conv");
        }
    }
}

TEST_CASE("peft battery: PROMPT") {
    BatteryOptions o;
    o.zero_init = false;
    for (const char* kind : {"mamba", "longhorn"}) run_battery(kind, {{"peft_type", "PROMPT"}, {"num_virtual_tokens", 3}}, o);
}

TEST_CASE("peft prompt: initial_states runs the virtual tokens, so step by step equals the parallel forward") {
    for (const char* kind : {"mamba", "longhorn"}) {
        INFO(kind);
        Subject s = make_subject(kind);
        peft::Adapter a = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "PROMPT", "num_virtual_tokens": 3})"));
        check_lm_recurrent(s, 1e-10);  // batch 2: the virtual tokens broadcast over the batch
        // and generate (which starts from initial_states) continues with the parallel forward's argmax
        models::GenerationOptions g;
        g.max_new_tokens = 1;
        g.temperature = 0;
        const std::vector<int64_t> prompt{1, 4, 2};
        const auto out = s.any.lm->generate(prompt, g);
        const Tensor logits = s.any.lm->forward(Tensor::from_vector<int64_t>(prompt, {1, 3})).select(1, 2);
        CHECK(out.back() == ops::argmax(logits, 1).to_vector<int64_t>()[0]);
    }
}
