// The PEFT battery (peft_test_util.h) for FULL, BITFIT, LORA, STATE_OFFSET, INITIAL_STATE and PROMPT on every
// model each supports.
#include "tests/peft/peft_test_util.h"

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

TEST_CASE("peft battery: STATE_OFFSET h and y") {
    BatteryOptions o;
    o.random_init = {{"init", "random"}};
    for (const char* kind : {"mamba", "longhorn", "s4d"}) {
        run_battery(kind, {{"peft_type", "STATE_OFFSET"}, {"variant", "h"}}, o);
        run_battery(kind, {{"peft_type", "STATE_OFFSET"}, {"variant", "y"}}, o);
    }
}

TEST_CASE("peft battery: INITIAL_STATE") {
    BatteryOptions o;
    o.random_init = {{"init", "random"}};
    for (const char* kind : {"mamba", "longhorn", "s4d"}) run_battery(kind, {{"peft_type", "INITIAL_STATE"}}, o);
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
