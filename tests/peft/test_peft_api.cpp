// The PEFT API around the methods: config parsing and its errors, target matching that lists what exists, the
// HF report format with exact counts, a LoRA adapter written by hand in HF's layout, adapters that do not fit
// their base, and the `grads --adapter` and `merge` commands.
#include "tests/peft/peft_test_util.h"

#include <fstream>
#include <map>
#include <sstream>

#include "engine/safetensors.h"
#include "engine/tensor_copy.h"
#include "ops/ops.h"
#include "tests/tools/cli_test_util.h"

using namespace ssmtune;
using namespace ssmtune::peft_test;
using ssmtune::testing::cli;
using ssmtune::testing::cli_captured;
using nlohmann::json;

namespace {
}  // namespace

TEST_CASE("peft config: defaults, unknown types and keys, unsupported HF fields") {
    peft::Config c = peft::Config::parse(R"({"peft_type": "LORA"})");
    CHECK(c.json["r"] == 8);
    CHECK(c.json["lora_alpha"] == 8);
    CHECK(c.json["use_rslora"] == false);
    CHECK(peft::Config::parse(R"({"peft_type": "STATE_OFFSET"})").json["variant"] == "h");
    CHECK_THROWS_WITH_AS(peft::Config::parse(R"({"peft_type": "ADALORA"})"),
                         doctest::Contains("unknown peft_type \"ADALORA\"; known: ADDITIONAL_SCAN, BITFIT, FULL"), Error);
    CHECK_THROWS_WITH_AS(peft::Config::parse(R"({"peft_type": "LORA", "rank": 4})"),
                         doctest::Contains("unknown key \"rank\" for peft_type LORA; valid keys: alora_invocation_tokens"), Error);
    CHECK_THROWS_WITH_AS(peft::Config::parse(R"({"peft_type": "FULL", "r": 4})"),  // (it read "valid keys:  (and")
                         doctest::Contains("valid keys: none of its own (and auto_mapping"), Error);
    // fan_in_fan_out: HF sets it back to false for [out, in] targets (with a warning); so do we
    CHECK(peft::Config::parse(R"({"peft_type": "LORA", "fan_in_fan_out": true})").json["fan_in_fan_out"] == false);
    CHECK_THROWS_WITH_AS(peft::Config::parse(R"({"peft_type": "LORA", "fan_in_fan_out": 1})"),
                         doctest::Contains("\"fan_in_fan_out\" must be true or false (default false), got 1"), Error);
    CHECK_THROWS_WITH_AS(peft::Config::parse(R"({"peft_type": "LORA", "use_dora": 1})"),
                         doctest::Contains("\"use_dora\" must be true or false (default false), got 1"), Error);
    CHECK_THROWS_WITH_AS(peft::Config::parse(R"({"peft_type": "STATE_OFFSET", "variant": "z"})"),
                         doctest::Contains("\"variant\" must be \"h\""), Error);
    CHECK_THROWS_WITH_AS(peft::Config::parse(R"({"peft_type": "LORA", "r": 0})"), doctest::Contains("\"r\" = 0"), Error);
    CHECK_THROWS_WITH_AS(peft::Config::parse(R"({"r": 4})"), doctest::Contains("missing \"peft_type\""), Error);
    CHECK_THROWS_WITH_AS(peft::Config::parse("{not json"), doctest::Contains("not valid JSON"), Error);
}

TEST_CASE("peft targets: misses and wrong module types are errors that list what exists") {
    Subject s = make_subject("mamba");
    const auto before = s.module().named_parameters();
    CHECK_THROWS_WITH_AS(peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "LORA", "target_modules": ["q_proj"]})")),
                         doctest::Contains("\"q_proj\" matches no module of this mamba model; fix: choose among: "
                                           "dt_proj, embeddings, in_proj, out_proj, x_proj"),
                         Error);
    CHECK_THROWS_WITH_AS(peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "LORA", "target_modules": ["conv1d"]})")),
                         doctest::Contains("a Conv1d, but this method adapts Linear, Embedding and 1x1 Conv1d"), Error);
    CHECK_THROWS_WITH_AS(peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "LORA", "layers_to_transform": [5]})")),
                         doctest::Contains("not a layer index of this 2-layer model"), Error);
    // layers_pattern (HF) must name the list the indices count in
    CHECK_THROWS_WITH_AS(peft::apply(s.module(), peft::Config::parse(
                             R"({"peft_type": "LORA", "layers_to_transform": [1], "layers_pattern": "blocks"})")),
                         doctest::Contains("layers_pattern \"blocks\" names no layer list of this mamba model (its layers "
                                           "are \"layers\")"), Error);
    peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "LORA", "layers_to_transform": [1],
                                                    "layers_pattern": ["h", "layers"]})")).detach();
    // refused when parsed, where nothing would read them (HF's LoraConfig.__post_init__ rules; methods without layers)
    for (const char* bad : {R"({"peft_type": "LORA", "layers_pattern": "layers"})",
                            R"({"peft_type": "STATE_OFFSET", "layers_pattern": "layers", "layers_to_transform": []})"})
        CHECK_THROWS_WITH_AS(peft::Config::parse(bad), doctest::Contains("is set without \"layers_to_transform\""), Error);
    for (const char* bad : {R"({"peft_type": "LORA", "target_modules": "all-linear", "layers_to_transform": [0]})",
                            R"({"peft_type": "LORA", "target_modules": ".*in_proj", "layers_to_transform": 1,
                                "layers_pattern": "layers"})"})
        CHECK_THROWS_WITH_AS(peft::Config::parse(bad), doctest::Contains("with a string target_modules"), Error);
    for (const char* bad : {R"({"peft_type": "PROMPT", "layers_to_transform": "abc"})",
                            R"({"peft_type": "FULL", "layers_to_transform": [1]})",
                            R"({"peft_type": "TRAINABLE_TOKENS", "token_indices": [1], "layers_pattern": "layers"})"})
        CHECK_THROWS_WITH_AS(peft::Config::parse(bad), doctest::Contains("selects no layers"), Error);
    // an empty list selects nothing: one error for every method (STATE_OFFSET used to reach the optimizer empty)
    for (const char* type : {"LORA", "STATE_OFFSET", "PREFIX"})
        CHECK_THROWS_WITH_AS(peft::apply(s.module(), peft::Config::parse(std::string(R"({"peft_type": ")") + type +
                                                                         R"(", "layers_to_transform": []})")),
                             doctest::Contains("layers_to_transform [] selects no layer"), Error);
    // a number or boolean field given another JSON type: one error naming it (it was the JSON library's bare
    // "type must be number" when the method read it)
    CHECK_THROWS_WITH_AS(peft::Config::parse(R"({"peft_type": "SURM", "surm_alpha": "x"})"),
                         doctest::Contains("\"surm_alpha\" must be a number (default 1.0), got \"x\""), Error);
    CHECK_THROWS_WITH_AS(peft::Config::parse(R"({"peft_type": "TRAINABLE_TOKENS", "token_indices": [1], "init_weights": 1})"),
                         doctest::Contains("\"init_weights\" must be true or false"), Error);
    CHECK_THROWS_WITH_AS(peft::Config::parse(R"({"peft_type": "LORA", "r": null})"), doctest::Contains("\"r\" must be a number"),
                         Error);
    CHECK_THROWS_WITH_AS(peft::Config::parse(R"({"peft_type": "SURM", "mode": 1})"),
                         doctest::Contains("\"mode\" must be a string (default \"lora\"), got 1"), Error);
    CHECK_THROWS_WITH_AS(peft::Config::parse(R"({"peft_type": "SURM", "structure": "kronecker", "kron_factor": -3})"),
                         doctest::Contains("\"kron_factor\" = -3 is out of range"), Error);
    peft::Config::parse(R"({"peft_type": "LORA", "init_lora_weights": "gaussian", "lora_alpha": 16.5})");
    // HF's bookkeeping fields: task_type one of HF's TaskType (PeftConfig refuses others), the rest strings
    CHECK_THROWS_WITH_AS(peft::Config::parse(R"({"peft_type": "PROMPT", "task_type": "CAUSAL"})"),
                         doctest::Contains("is not one of HF's task types"), Error);
    CHECK_THROWS_WITH_AS(peft::Config::parse(R"({"peft_type": "LORA", "task_type": true})"),
                         doctest::Contains("\"task_type\" must be a string or null, got true"), Error);
    CHECK_THROWS_WITH_AS(peft::Config::parse(R"({"peft_type": "LORA", "auto_mapping": 1})"),
                         doctest::Contains("\"auto_mapping\" must be an object or null"), Error);
    peft::Config::parse(R"({"peft_type": "SURM", "task_type": "SEQ_CLS", "revision": "main"})");
    // our own types keep filtering a regex's matches by layer
    peft::Config::parse(R"({"peft_type": "SURM", "target_modules": ".*in_proj", "layers_to_transform": [1]})");
    // a failed apply leaves the model as it was (nothing frozen, nothing attached)
    CHECK(s.module().named_parameters().size() == before.size());
    for (auto& [n, t] : s.module().named_parameters()) CHECK(t.requires_grad());
    // regex and all-linear forms
    peft::Adapter a = peft::apply(s.module(), peft::Config::parse(
        R"({"peft_type": "LORA", "r": 1, "target_modules": "backbone\\.layers\\.1\\.mixer\\.(in|out)_proj"})"));
    CHECK(a.named_parameters().size() == 4);
    CHECK(a.named_parameters()[0].first == "backbone.layers.1.mixer.in_proj.lora_A.weight");
    a.detach();
    peft::Adapter b = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "LORA", "r": 1, "target_modules": "all-linear"})"));
    CHECK(b.named_parameters().size() == 2 * 2 * 4);  // 2 layers x 4 projections x (A, B)
}

TEST_CASE("peft report: HF format with exact counts") {
    Subject s = make_subject("mamba");
    const int64_t base = s.module().num_parameters();
    peft::Adapter a = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "STATE_OFFSET"})"));
    CHECK(a.num_trainable() == 2 * 16 * 4);  // layers x E x N
    CHECK(a.num_total() == base + 128);
    CHECK(base == 1584);
    CHECK(a.trainable_report() == "trainable params: 128 || all params: 1,712 || trainable%: 7.4766");
    a.detach();
    peft::Adapter l = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "LORA", "r": 2})"));
    // r(in+out) per projection: in_proj 8->32, x_proj 16->10, dt_proj 2->16, out_proj 16->8
    CHECK(l.num_trainable() == 2 * 2 * ((8 + 32) + (16 + 10) + (2 + 16) + (16 + 8)));
    l.detach();
    peft::Adapter f = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "FULL"})"));
    CHECK(f.trainable_report() == "trainable params: 1,584 || all params: 1,584 || trainable%: 100.0000");
}

TEST_CASE("peft lora: an adapter written by hand in HF's layout loads and gives W + (alpha/r) B A") {
    const auto dir = testing::scratch_dir("peft_hf_lora");
    Subject s = make_subject("mamba");
    const int64_t r = 2;
    TensorMap file;
    std::vector<Tensor> As, Bs;
    for (int i = 0; i < 2; ++i) {
        const std::string p = "base_model.model.backbone.layers." + std::to_string(i) + ".mixer.in_proj.";
        As.push_back(Tensor::randn({r, 8}, 10 + i, DType::F32));
        Bs.push_back(Tensor::randn({32, r}, 20 + i, DType::F32));
        file[p + "lora_A.weight"] = As.back();
        file[p + "lora_B.weight"] = Bs.back();
    }
    save_safetensors((dir / "adapter_model.safetensors").string(), file);
    // the fields an HF PEFT save_pretrained writes for a Mamba LoRA
    std::ofstream(dir / "adapter_config.json") << R"({
      "alpha_pattern": {}, "auto_mapping": null, "base_model_name_or_path": "state-spaces/mamba-130m-hf",
      "bias": "none", "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true,
      "layer_replication": null, "layers_pattern": null, "layers_to_transform": null, "loftq_config": {},
      "lora_alpha": 8, "lora_dropout": 0.05, "megatron_config": null, "megatron_core": "megatron.core",
      "modules_to_save": null, "peft_type": "LORA", "r": 2, "rank_pattern": {}, "revision": null,
      "target_modules": ["in_proj"], "task_type": "CAUSAL_LM", "use_dora": false, "use_rslora": false})";
    Subject expected = make_subject("mamba");
    for (int i = 0; i < 2; ++i) {
        Tensor& w = *expected.module().find_parameter("backbone.layers." + std::to_string(i) + ".mixer.in_proj.weight");
        w = ops::add(w.detach(), ops::mul_scalar(ops::matmul(Bs[size_t(i)].to(DType::F64), As[size_t(i)].to(DType::F64)), 8.0 / r));
    }
    peft::Adapter a = peft::load(s.module(), dir.string());
    testing::expect_close(s.output(), expected.output(), 0, 1e-12, "HF LoRA output");
    // and back: our save writes the same names and fields
    a.save((dir / "resaved").string());
    TensorMap again = load_safetensors((dir / "resaved" / "adapter_model.safetensors").string());
    CHECK(again.size() == file.size());
    for (auto& [n, t] : file) CHECK(again.count(n) == 1);
    json cfg = models::read_json_file((dir / "resaved" / "adapter_config.json").string());
    CHECK(cfg["r"] == 2);
    CHECK(cfg["lora_alpha"] == 8);
    CHECK(cfg["target_modules"] == json::array({"in_proj"}));
    CHECK(cfg["task_type"] == "CAUSAL_LM");
}

TEST_CASE("peft lora: rank_pattern, alpha_pattern and exclude_modules as HF reads them") {
    const auto dir = testing::scratch_dir("peft_lora_patterns");
    Subject s = make_subject("mamba");
    // a pattern key applies where the full name matches (.*\.)?(key): "in_proj" everywhere, "layers.1.mixer.in_proj"
    // ('.' a regex dot) in layer 1 only; layer 1's in_proj gets r = 3 (both keys give 3), out_proj lora_alpha 6
    const peft::Config config = peft::Config::parse(R"({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
        "target_modules": ["in_proj", "out_proj"], "init_lora_weights": false,
        "rank_pattern": {"layers.1.mixer.in_proj": 3, "mixer.in_p.*": 3}, "alpha_pattern": {"out_proj": 6}})");
    peft::Adapter a = peft::apply(s.module(), config);
    std::map<std::string, Tensor> p;
    for (auto& [n, t] : a.named_parameters()) p[n] = t;
    const std::string l0 = "backbone.layers.0.mixer.", l1 = "backbone.layers.1.mixer.";
    CHECK(p.at(l0 + "in_proj.lora_A.weight").shape() == Shape{3, 8});
    CHECK(p.at(l1 + "in_proj.lora_A.weight").shape() == Shape{3, 8});
    CHECK(p.at(l1 + "in_proj.lora_B.weight").shape() == Shape{32, 3});
    CHECK(p.at(l0 + "out_proj.lora_A.weight").shape() == Shape{2, 16});
    // the output is W + (alpha_m / r_m) B A per module
    Subject expected = make_subject("mamba");
    for (const std::string& l : {l0, l1}) {
        for (auto [proj, scale] : {std::pair<const char*, double>{"in_proj", 4.0 / 3}, {"out_proj", 6.0 / 2}}) {
            const std::string m = l + proj;
            Tensor& w = *expected.module().find_parameter(m + ".weight");
            w = ops::add(w.detach(), ops::mul_scalar(ops::matmul(p.at(m + ".lora_B.weight").detach(),
                                                                 p.at(m + ".lora_A.weight").detach()), scale));
        }
    }
    testing::expect_close(s.output(), expected.output(), 0, 1e-12, "rank/alpha pattern output");
    // saved and loaded again: the patterns travel in adapter_config.json and rebuild the same shapes
    a.save(dir.string());
    json saved = models::read_json_file((dir / "adapter_config.json").string());
    CHECK(saved["rank_pattern"]["mixer.in_p.*"] == 3);
    CHECK(saved["alpha_pattern"]["out_proj"] == 6);
    Subject again = make_subject("mamba");
    peft::load(again.module(), dir.string());
    testing::expect_close(again.output(), s.output(), 0, 1e-15, "reloaded pattern adapter");
    a.detach();

    // exclude_modules: a list as target_modules' list, a regex on the full name; excluded modules are skipped
    // before their type is asked about (conv1d may be named when it is excluded)
    peft::Adapter ex = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "LORA", "r": 1,
        "target_modules": "all-linear", "exclude_modules": ["x_proj", "layers.0.mixer.dt_proj"]})"));
    CHECK(ex.named_parameters().size() == 2 * 5);  // 8 projections - 2 x_proj - layer 0's dt_proj
    for (auto& [n, t] : ex.named_parameters()) {
        CHECK(n.find("x_proj") == std::string::npos);
        CHECK(n.find("layers.0.mixer.dt_proj") == std::string::npos);
    }
    ex.detach();
    peft::Adapter rx = peft::apply(s.module(), peft::Config::parse(R"j({"peft_type": "LORA", "r": 1,
        "target_modules": ["in_proj", "conv1d"], "exclude_modules": ".*(layers\\.0\\..*|conv1d)"})j"));
    REQUIRE(rx.named_parameters().size() == 2);
    CHECK(rx.named_parameters()[0].first == l1 + "in_proj.lora_A.weight");
    rx.detach();

    // errors: everything excluded, two keys with different values for one module, bad values
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "target_modules": ["in_proj"], "exclude_modules": "in_proj|.*in_proj"})")
              .find("and exclude_modules \"in_proj|.*in_proj\" selects no module") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "target_modules": ["in_proj"], "rank_pattern": {"in_proj": 3, "layers.1.mixer.in_proj": 4}})")
              .find("rank_pattern keys \"in_proj\" and \"layers.1.mixer.in_proj\" both match backbone.layers.1.mixer.in_proj") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "rank_pattern": {"(": 3}})").find("not a valid regular expression") !=
          std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "rank_pattern": {"in_proj": 0}})")
              .find("rank_pattern[\"in_proj\"] = 0 must be an integer rank") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "alpha_pattern": {"in_proj": "big"}})")
              .find("must be a number") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "rank_pattern": [3]})").find("must be an object") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "exclude_modules": 5})").find("must be a regex string or a list") !=
          std::string::npos);
    {  // a rank above both sides of a module is allowed, as in HF (dt_proj is [E, R] = [16, 2] here)
        peft::Adapter big = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "LORA", "target_modules": ["dt_proj"],
            "rank_pattern": {"dt_proj": 17}})"));
        const auto named = big.named_parameters();
        REQUIRE(named.size() == 2 * 2);
        const Tensor* w = s.module().find_parameter("backbone.layers.0.mixer.dt_proj.weight");
        REQUIRE(w);
        CHECK(17 > std::max(w->size(0), w->size(1)));
        CHECK(named[0].second.shape() == Shape{17, w->size(1)});  // lora_A [r, in]
        CHECK(named[1].second.shape() == Shape{w->size(0), 17});  // lora_B [out, r]
        big.detach();
    }
    // a SURM block size that divides in_proj but not x_proj fails at layer 0's x_proj, after its in_proj
    CHECK(apply_error(s.module(), R"({"peft_type": "SURM", "block_size": 8, "target_modules": ["in_proj", "x_proj"]})")
              .find("block_size 8") != std::string::npos);
    // failed applies left the model as it was: every base tensor trainable, no module carrying a delta (the
    // ambiguous pattern failed after earlier modules had their adapters)
    for (auto& [n, t] : s.module().named_parameters()) CHECK(t.requires_grad());
    for (auto& named : s.module().named_modules()) {  // (no structured binding: doctest's message captures it)
        const std::string n = named.first;
        if (auto* host = dynamic_cast<models::DeltaHost*>(named.second)) CHECK_MESSAGE(!host->delta(), n);
    }
    peft::Adapter after = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "LORA"})"));
    CHECK(after.named_parameters().size() == 2 * 2 * 4);
}

TEST_CASE("peft lora: modules_to_save trains whole modules beside the LoRA, saved as HF saves them") {
    const auto dir = testing::scratch_dir("peft_modules_to_save");
    auto untied = [] { return make_subject("mamba", 3, /*tied=*/false); };
    Subject s = untied();
    const Tensor base = s.output().detach();
    const int64_t base_params = s.module().num_parameters();
    peft::Adapter a = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "LORA", "r": 2,
        "target_modules": ["in_proj"], "modules_to_save": ["lm_head", "mixer.dt_proj"], "init_lora_weights": false})"));
    std::map<std::string, Tensor> p;
    for (auto& [n, t] : a.named_parameters()) p[n] = t;
    for (const char* n : {"lm_head.weight", "backbone.layers.0.mixer.dt_proj.weight", "backbone.layers.1.mixer.dt_proj.bias"})
        CHECK_MESSAGE(p.count(n) == 1, n);
    // LoRA 2 x r(8 + 32), lm_head 11 x 8, dt_proj 2 x (16 x 2 + 16); HF's "all params" counts the trained copies too
    CHECK(a.num_trainable() == 160 + 88 + 96);
    CHECK(a.num_total() == base_params + 160 + 88 + 96);
    CHECK(s.module().find_parameter("lm_head.weight")->requires_grad());
    CHECK_FALSE(s.module().find_parameter("backbone.layers.0.mixer.out_proj.weight")->requires_grad());
    Tensor loss = s.loss();
    loss.backward();
    CHECK(p.at("lm_head.weight").grad().defined());
    {  // a training step's worth of change to every trained tensor
        autograd::NoGradGuard no_grad;
        for (auto& [n, t] : a.named_parameters()) copy_into(t, ops::sub(t.detach(), ops::mul_scalar(t.grad(), 0.5)));
    }
    const Tensor adapted = s.output().detach();
    a.save(dir.string());
    const TensorMap file = load_safetensors((dir / "adapter_model.safetensors").string());
    CHECK(file.count("base_model.model.lm_head.weight") == 1);
    CHECK(file.count("base_model.model.backbone.layers.1.mixer.dt_proj.weight") == 1);
    CHECK(models::read_json_file((dir / "adapter_config.json").string())["modules_to_save"] ==
          json::array({"lm_head", "mixer.dt_proj"}));
    {  // loaded into a fresh copy of the base: the same outputs
        Subject fresh = untied();
        peft::Adapter loaded = peft::load(fresh.module(), dir.string());
        testing::expect_close(fresh.output(), adapted, 0, 1e-15, "reloaded LoRA + modules_to_save");
        loaded.merge();  // the trained modules stay, the LoRA folds in
        testing::expect_close(fresh.output(), adapted, 0, 1e-12, "merged LoRA + modules_to_save");
    }
    a.detach();  // the saved modules go back to their original values
    CHECK(bit_equal(s.output(), base));
    for (auto& [n, t] : s.module().named_parameters()) CHECK(t.requires_grad());

    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "target_modules": ["out_proj"], "modules_to_save": ["out_proj"]})")
              .find("matches backbone.layers.0.mixer.out_proj, which is the LoRA target") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "target_modules": ["in_proj"], "modules_to_save": ["mixer"]})")
              .find("which holds the LoRA target backbone.layers.0.mixer.in_proj") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "modules_to_save": ["classifier"]})")
              .find("\"classifier\" matches no module of this mamba model (a name must end with it)") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "modules_to_save": "lm_head"})").find("must be a list of module names") !=
          std::string::npos);
    Subject tied = make_subject("mamba");
    CHECK(apply_error(tied.module(), R"({"peft_type": "LORA", "target_modules": ["in_proj"], "modules_to_save": ["embeddings"]})")
              .find("which is tied to the LM head") != std::string::npos);
    for (Subject* m : {&s, &tied}) {  // failed applies left both as they were
        for (auto& [n, t] : m->module().named_parameters()) CHECK(t.requires_grad());
        for (auto& named : m->module().named_modules()) {
            const std::string n = named.first;
            if (auto* host = dynamic_cast<models::DeltaHost*>(named.second)) CHECK_MESSAGE(!host->delta(), n);
        }
    }
}

TEST_CASE("peft lora: bias all / lora_only train biases in place under HF's names, lora_bias adds s b_B") {
    const auto dir = testing::scratch_dir("peft_lora_bias");
    Subject s = make_subject("mamba");  // conv1d and dt_proj have biases, in_proj / out_proj do not
    const Tensor base = s.output().detach();
    const int64_t base_params = s.module().num_parameters();
    peft::Adapter a = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "LORA", "r": 2, "bias": "all",
        "init_lora_weights": false})"));
    std::map<std::string, Tensor> p;
    for (auto& [n, t] : a.named_parameters()) p[n] = t;
    const std::string l1 = "backbone.layers.1.mixer.";
    // a target's own bias under its wrapped base layer, any other bias under its own name (HF's state dict)
    CHECK(p.count(l1 + "dt_proj.base_layer.bias") == 1);
    CHECK(p.count(l1 + "conv1d.bias") == 1);
    CHECK(p.count(l1 + "dt_proj.bias") == 0);
    CHECK(p.size() == 2 * (4 * 2 + 2));  // per layer: 4 LoRA pairs, conv1d.bias, dt_proj's bias
    CHECK(p.at(l1 + "conv1d.bias").impl_ptr() == s.module().find_parameter(l1 + "conv1d.bias")->impl_ptr());
    int64_t lora_elements = 0, bias_elements = 0;
    for (auto& [n, t] : p) (n.find("lora_") != std::string::npos ? lora_elements : bias_elements) += t.numel();
    CHECK(bias_elements == 2 * (16 + 16));
    CHECK(a.num_trainable() == lora_elements + bias_elements);
    CHECK(a.num_total() == base_params + lora_elements);  // the biases are the model's own, counted once
    {  // a step's worth of change everywhere, then save and load into a fresh base
        Tensor loss = s.loss();
        loss.backward();
        autograd::NoGradGuard no_grad;
        for (auto& [n, t] : p) copy_into(t, ops::sub(t.detach(), ops::mul_scalar(t.grad(), 0.5)));
    }
    const Tensor adapted = s.output().detach();
    CHECK_FALSE(bit_equal(adapted, base));
    a.save(dir.string());
    const TensorMap file = load_safetensors((dir / "adapter_model.safetensors").string());
    CHECK(file.count("base_model.model." + l1 + "dt_proj.base_layer.bias") == 1);
    {
        Subject fresh = make_subject("mamba");
        peft::Adapter loaded = peft::load(fresh.module(), dir.string());
        CHECK(bit_equal(fresh.output(), adapted));
        loaded.merge();  // LoRA folds in, the trained biases stay
        testing::expect_close(fresh.output(), adapted, 0, 1e-12, "merged LoRA + biases");
    }
    a.detach();  // biases back to their values before training
    CHECK(bit_equal(s.output(), base));
    for (auto& [n, t] : s.module().named_parameters()) CHECK(t.requires_grad());

    // lora_only: only the targets' biases (in_proj has none, dt_proj has one)
    peft::Adapter only = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "LORA", "r": 1, "bias": "lora_only",
        "target_modules": ["in_proj", "dt_proj"]})"));
    int64_t biases = 0;
    for (auto& [n, t] : only.named_parameters()) biases += n.find("base_layer.bias") != std::string::npos;
    CHECK(biases == 2);
    CHECK(only.named_parameters().size() == 2 * (2 * 2 + 1));
    only.detach();

    // lora_bias: out = W x + b + s (B A x + b_B); merged into b, so a module without a bias cannot merge
    peft::Adapter lb = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "LORA", "r": 2, "lora_alpha": 3,
        "lora_bias": true, "target_modules": ["dt_proj"]})"));
    Tensor bB;
    for (auto& [n, t] : lb.named_parameters())
        if (n == l1 + "dt_proj.lora_B.bias") bB = t;
    REQUIRE(bB.defined());
    CHECK(bB.shape() == Shape{16});
    CHECK(bit_equal(s.output(), base));  // zero B and b_B at init
    {
        autograd::NoGradGuard no_grad;
        copy_into(bB, Tensor::full({16}, 0.25, DType::F64));
    }
    auto* dt = s.module().find_module(l1 + "dt_proj");
    const Tensor x = Tensor::randn({3, 2}, uint64_t(5), DType::F64);
    const Tensor want = ops::add(ops::linear(x, *dt->find_parameter("weight"), *dt->find_parameter("bias")),
                                 Tensor::full({16}, 0.25 * 1.5, DType::F64));  // s = 3 / 2
    testing::expect_close(static_cast<models::Linear*>(dt)->forward(x), want, 0, 1e-15, "lora_bias output");
    CHECK(lb.merge_refusal().empty());
    lb.detach();
    peft::Adapter nb = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "LORA", "lora_bias": true,
        "target_modules": ["in_proj"]})"));
    CHECK(nb.merge_refusal().find("has no bias to fold lora_B's bias into") != std::string::npos);
    CHECK_THROWS_AS(nb.merge(), Error);
    nb.detach();

    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "lora_bias": true, "target_modules": ["embeddings"]})")
              .find("lora_bias is not supported on the embedding") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "lora_bias": true, "use_dora": true})").find("not supported with DoRA") !=
          std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "lora_bias": true, "init_lora_weights": "gaussian"})")
              .find("lora_bias needs init_lora_weights true or false") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "bias": "some"})").find("\"lora_only\"") != std::string::npos);
}

TEST_CASE("peft load: an adapter for another base is a clear error") {
    const auto dir = testing::scratch_dir("peft_wrong_base");
    Subject s = make_subject("mamba");
    peft::Adapter a = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "LORA", "r": 2})"));
    a.save(dir.string());
    models::LMConfig wide = tiny_lm_config("mamba");
    wide.hidden_size = 12;
    models::LanguageModel other(wide, 1);
    CHECK_THROWS_WITH_AS(peft::load(other, dir.string()), doctest::Contains("does not fit this mamba model"), Error);
    for (auto& [n, t] : other.named_parameters()) CHECK(t.requires_grad());  // left as it was
    models::LMConfig shallow = tiny_lm_config("mamba");
    shallow.num_hidden_layers = 1;
    models::LanguageModel one(shallow, 1);
    CHECK_THROWS_WITH_AS(peft::load(one, dir.string()), doctest::Contains("unexpected base_model.model.backbone.layers.1"), Error);
    models::S4DClassifier s4d(tiny_s4d_config(), 1);
    CHECK_THROWS_WITH_AS(peft::load(s4d, dir.string()), doctest::Contains("matches no module of this s4d model"), Error);
}

TEST_CASE("peft commands: grads --adapter and merge") {
    const auto dir = testing::scratch_dir("peft_cli");
    Subject s = make_subject("mamba");
    s.module().to(DType::F32);
    models::save_model((dir / "base").string(), s.any);
    peft::Adapter a = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "LORA", "r": 2, "init_lora_weights": false})"));
    a.save((dir / "lora").string());
    save_safetensors((dir / "batch.safetensors").string(), {{"input_ids", s.ids}});
    REQUIRE(cli({"grads", "--model", (dir / "base").string(), "--adapter", (dir / "lora").string(), "--batch",
                 (dir / "batch.safetensors").string(), "--out", (dir / "g.safetensors").string(), "--dtype", "f64"}) == 0);
    TensorMap g = load_safetensors((dir / "g.safetensors").string());
    CHECK(g.size() == a.named_parameters().size() + 2);
    CHECK(g.at("base_model.model.backbone.layers.0.mixer.in_proj.lora_A.weight").shape() == Shape{2, 8});
    CHECK(g.count("backbone.layers.0.mixer.in_proj.weight") == 0);  // frozen base: not in the output

    REQUIRE(cli({"merge", "--model", (dir / "base").string(), "--adapter", (dir / "lora").string(), "--out",
                 (dir / "merged").string()}) == 0);
    models::AnyModel merged = models::load_model((dir / "merged").string());
    testing::expect_close(merged.lm->forward(s.ids), s.output().detach(), 1e-5, 1e-6, "merged model output");
    // methods that cannot merge say so, exit 1, and write nothing
    a.detach();
    peft::Adapter so = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "STATE_OFFSET"})"));
    so.save((dir / "so").string());
    CHECK(cli({"merge", "--model", (dir / "base").string(), "--adapter", (dir / "so").string(), "--out",
               (dir / "merged_so").string()}) == 1);
    CHECK_FALSE(std::filesystem::exists(dir / "merged_so"));

    // eval with several adapters: one base, each adapter in turn (AdapterSet), one JSON line each, the same
    // figures as evaluating each alone
    const std::string base = (dir / "base").string(), lora = (dir / "lora").string(), so_dir = (dir / "so").string();
    const std::vector<std::string> task = {"--task", "selective_copying", "--set", "train.eval_batches=1,train.batch_size=2"};
    auto eval = [&](const std::string& adapters) {
        std::vector<std::string> args = {"eval", "--model", base, "--adapter", adapters};
        args.insert(args.end(), task.begin(), task.end());
        const auto result = cli_captured(args, 1);
        REQUIRE(result.first == 0);
        std::vector<json> lines;
        std::stringstream text(result.second);
        for (std::string line; std::getline(text, line);) lines.push_back(json::parse(line));
        return lines;
    };
    const auto both = eval(lora + "," + so_dir);
    REQUIRE(both.size() == 2);
    CHECK(both[0]["adapter"] == lora);
    CHECK(both[1]["adapter"] == so_dir);
    const auto alone_lora = eval(lora), alone_so = eval(so_dir);
    REQUIRE(alone_lora.size() == 1);
    CHECK(alone_lora[0].count("adapter") == 0);
    CHECK(both[0]["loss"] == alone_lora[0]["loss"]);
    CHECK(both[1]["loss"] == alone_so[0]["loss"]);
    CHECK(both[0]["loss"] != both[1]["loss"]);
}

TEST_CASE("peft: frozen weights cost no weight-gradient GEMM") {
    // One backward of the same model and batch: FULL computes weight gradients of every projection; STATE_OFFSET
    // only the input-gradient GEMMs that carry the signal back to earlier layers.
    auto gemms_of_backward = [](const char* config) {
        Subject s = make_subject("mamba");
        peft::Adapter a = peft::apply(s.module(), peft::Config::parse(config));
        Tensor loss = s.loss();
        const uint64_t before = ops::gemm_count();
        loss.backward();
        return ops::gemm_count() - before;
    };
    const uint64_t full = gemms_of_backward(R"({"peft_type": "FULL"})");
    const uint64_t state = gemms_of_backward(R"({"peft_type": "STATE_OFFSET"})");
    const uint64_t lora_out = gemms_of_backward(R"({"peft_type": "LORA", "r": 2, "target_modules": ["out_proj"]})");
    // 2 layers x 4 projections (+ the tied head / embedding path): FULL does one extra GEMM per frozen weight.
    CHECK(full >= state + 2 * 4 + 1);
    // LoRA adds two small GEMM pairs per adapted module but no weight-gradient GEMM of the frozen base weights.
    CHECK(lora_out < full);
    MESSAGE("backward GEMMs: FULL " << full << ", STATE_OFFSET " << state << ", LORA(out_proj) " << lora_out);
}
