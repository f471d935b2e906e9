// Adapter::disable / enable (HF's disable_adapter) and AdapterSet (several named adapters on one model, one active):
// for every method, disabling gives the base model's outputs bit for bit and enabling gives the adapted outputs bit
// for bit again (tensors held apart in between, saved from there, trained after); switching between named adapters
// does the same; the errors name what exists.
#include "tests/peft/peft_test_util.h"

using namespace ssmtune;
using namespace ssmtune::peft_test;
using nlohmann::json;

TEST_CASE("peft disable / enable: base outputs while disabled, the adapted ones after, for every method") {
    const std::vector<std::pair<const char*, json>> cases = {
        {"mamba", {{"peft_type", "LORA"}, {"r", 2}, {"target_modules", {"embeddings", "in_proj", "x_proj", "dt_proj"}}}},
        {"mamba", {{"peft_type", "LORA"}, {"r", 2}, {"use_dora", true}, {"bias", "all"}, {"modules_to_save", {"lm_head"}},
                   {"target_modules", {"in_proj", "out_proj"}}}},
        {"longhorn", {{"peft_type", "STATE_OFFSET"}, {"r", 2}}},
        {"mamba", {{"peft_type", "STATE_OFFSET"}, {"variant", "y"}}},
        {"longhorn", {{"peft_type", "INITIAL_STATE"}, {"conv_init_state", true}}},
        {"mamba", {{"peft_type", "PREFIX"}, {"num_virtual_tokens", 2}}},
        {"longhorn", {{"peft_type", "PROMPT"}, {"num_virtual_tokens", 2}}},
        {"mamba", {{"peft_type", "PARALLEL_ADAPTER"}, {"r", 2}}},
        {"mamba", {{"peft_type", "SURM"}, {"structure", "toeplitz"}}},
        {"longhorn", {{"peft_type", "PARTIAL"}, {"param_names", {"conv1d", "D"}}}},
        {"mamba", {{"peft_type", "BITFIT"}}},
        {"mamba", {{"peft_type", "ADDITIONAL_SCAN"}, {"d_state", 2}}},
        {"mamba", {{"peft_type", "TRAINABLE_TOKENS"}, {"token_indices", {3, 1}}}},
        {"longhorn", {{"peft_type", "LORA"}, {"r", 2}, {"target_modules", {"out_proj"}}, {"trainable_token_indices", {2, 8}}}},
        {"mamba", {{"peft_type", "LORA"}, {"r", 2}, {"target_modules", json::array()}, {"target_parameters", {"A_log"}}}},
        {"s4d", {{"peft_type", "LORA"}, {"r", 2}, {"target_modules", {"decoder"}}, {"target_parameters", {"kernel.C"}}}},
        {"mamba", {{"peft_type", "SDLORA"}, {"r", 2}, {"dimensions", {{"0", {{"channels", {1, 5}}, {"states", {{0}, {1, 2}}}}},
                                                                      {"1", {{"channels", {3}}, {"states", {{3}}}}}}}}},
        {"s4d", {{"peft_type", "LORA"}, {"r", 2}}},
        {"s4d", {{"peft_type", "STATE_OFFSET"}}},
        {"s4d", {{"peft_type", "INITIAL_STATE"}}},
    };
    for (size_t i = 0; i < cases.size(); ++i) {
        const auto& [kind, config] = cases[i];
        const std::string label = std::string(kind) + " " + config.dump();
        INFO(label);
        Subject s = make_subject(kind, 3, /*tied=*/false);  // an untied head, for modules_to_save lm_head
        const Tensor base = s.output().detach();
        peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(config));
        randomize(a, 50 + i);
        const Tensor adapted = s.output().detach();
        const auto names_before = a.named_parameters();
        const int64_t total = a.num_total();
        a.disable();
        CHECK(a.disabled());
        CHECK_FALSE(a.attached());
        CHECK(bit_equal(s.output(), base));
        for (auto& [n, t] : s.module().named_parameters()) CHECK(t.requires_grad());  // the base as before apply
        CHECK(a.named_parameters().size() == names_before.size());
        CHECK(a.num_total() == total);
        const auto dir = testing::scratch_dir("peft_disabled_" + std::to_string(i));
        a.save(dir.string());  // from the held tensors
        CHECK_THROWS_AS(a.merge(), Error);
        a.enable();
        CHECK(a.attached());
        CHECK(bit_equal(s.output(), adapted));
        const auto names_after = a.named_parameters();
        REQUIRE(names_after.size() == names_before.size());
        for (size_t k = 0; k < names_after.size(); ++k) CHECK(names_after[k].first == names_before[k].first);
        Tensor loss = s.loss();  // trains after enable: every tensor gets a gradient
        loss.backward();
        for (auto& named : names_after) CHECK_MESSAGE(named.second.grad().defined(), named.first);
        {  // what was saved while disabled loads into a fresh base with the same outputs
            Subject fresh = make_subject(kind, 3, /*tied=*/false);
            peft::Adapter loaded = peft::load(fresh.module(), dir.string());
            CHECK(bit_equal(fresh.output(), adapted));
        }
        a.detach();
        CHECK(bit_equal(s.output(), base));
    }
}

TEST_CASE("peft disable: FULL cannot be disabled, and a disabled adapter says so") {
    Subject s = make_subject("mamba");
    peft::Adapter full = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "FULL"})"));
    CHECK_THROWS_WITH_AS(full.disable(), doctest::Contains("FULL trains every base weight in place"), Error);
    full.detach();
    peft::Adapter a = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "STATE_OFFSET"})"));
    CHECK_THROWS_WITH_AS(a.enable(), doctest::Contains("is not disabled"), Error);
    a.disable();
    CHECK_THROWS_WITH_AS(a.disable(), doctest::Contains("disabled already"), Error);
    CHECK_THROWS_WITH_AS(a.to(Device::cpu()), doctest::Contains("enable() it first"), Error);
    a.detach();  // forgets the held tensors
    CHECK_FALSE(a.disabled());
    CHECK_THROWS_AS(a.named_parameters(), Error);
}

TEST_CASE("peft AdapterSet: named adapters on one model, one active, switching gives each one's outputs bit for bit") {
    Subject s = make_subject("mamba");
    const Tensor base = s.output().detach();
    peft::AdapterSet set(s.module());
    randomize(set.add("lora", peft::Config::parse(R"({"peft_type": "LORA", "r": 2})")), 1);
    randomize(set.add("offset", peft::Config::parse(R"({"peft_type": "STATE_OFFSET"})")), 2);
    CHECK(set.active().empty());  // add() leaves the active adapter (none) as it was
    CHECK(bit_equal(s.output(), base));
    set.set_active("lora");
    const Tensor out_lora = s.output().detach();
    set.set_active("offset");
    const Tensor out_offset = s.output().detach();
    CHECK_FALSE(bit_equal(out_lora, base));
    CHECK_FALSE(bit_equal(out_offset, out_lora));
    const auto dir = testing::scratch_dir("peft_adapter_set");
    set.get("lora").save(dir.string());  // saved while held
    set.load("lora again", dir.string());
    CHECK(set.active() == "offset");  // load() too leaves the active one
    CHECK(bit_equal(s.output(), out_offset));
    for (const char* name : {"lora", "lora again"}) {
        set.set_active(name);
        CHECK(bit_equal(s.output(), out_lora));
    }
    set.set_active("offset");
    CHECK(bit_equal(s.output(), out_offset));
    set.set_active("");
    CHECK(bit_equal(s.output(), base));
    CHECK(set.names() == std::vector<std::string>{"lora", "offset", "lora again"});

    CHECK_THROWS_WITH_AS(set.set_active("prefix"), doctest::Contains("no adapter named \"prefix\"; known: lora, offset, lora again"),
                         Error);
    CHECK_THROWS_WITH_AS(set.add("lora", peft::Config::parse(R"({"peft_type": "BITFIT"})")), doctest::Contains("exists already"),
                         Error);
    set.set_active("offset");
    // a config that fails to apply leaves the set as it was, the active adapter still attached
    CHECK_THROWS_AS(set.add("bad", peft::Config::parse(R"({"peft_type": "LORA", "target_modules": ["nowhere"]})")), Error);
    CHECK(set.active() == "offset");
    CHECK(bit_equal(s.output(), out_offset));
    CHECK(set.names().size() == 3);
    set.remove("offset");  // the active one: the model is the base again
    CHECK(set.active().empty());
    CHECK(bit_equal(s.output(), base));
    CHECK(set.names() == std::vector<std::string>{"lora", "lora again"});
}
