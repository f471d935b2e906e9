// `--adapter A+B` (LoRA adapters active together) in the commands that run a model with an adapter: grads names each
// adapter's gradients by its position, merge folds both, generate runs, eval evaluates a pair beside a single
// adapter; an empty part is a usage error, an adapter that cannot join (or merge) is one error line and exit 1.
#include "test_util.h"
#include "tests/tools/cli_test_util.h"

#include "engine/safetensors.h"
#include "models/checkpoint.h"
#include "tests/models/tiny_models.h"
#include "tests/peft/peft_test_util.h"
#include "tools/adapter_group.h"

using namespace ssmtune;
using namespace ssmtune::testing;
using nlohmann::json;

namespace {
const json kLoraA = {{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 3}, {"target_modules", {"embeddings", "in_proj", "x_proj", "out_proj"}}};
const json kLoraB = {{"peft_type", "LORA"}, {"r", 3}, {"lora_alpha", 5}, {"use_rslora", true}, {"rank_pattern", {{"dt_proj", 1}}},
                     {"target_modules", {"in_proj", "dt_proj"}}};
}  // namespace

TEST_CASE("split_adapter_group: A+B is two directories, an existing directory with a plus sign one, an empty part an error") {
    CHECK(tools::split_adapter_group("a") == std::vector<std::string>{"a"});
    CHECK(tools::split_adapter_group("x/a+y/b+c") == std::vector<std::string>{"x/a", "y/b", "c"});
    const auto dir = scratch_dir("adapter_group_plus");
    std::filesystem::create_directories(dir / "c++");
    CHECK(tools::split_adapter_group((dir / "c++").string()) == std::vector<std::string>{(dir / "c++").string()});
    for (const char* bad : {"a+", "+b", "a++b", "a+b+a"}) CHECK_THROWS_AS(tools::split_adapter_group(bad), tools::UsageError);
    CHECK(tools::adapter_set_name("runs/c++/adapter") == "runs/c__/adapter");
}

TEST_CASE("commands take --adapter A+B: grads names each adapter gradients, merge folds both, eval and generate run the pair") {
    const auto dir = testing::scratch_dir("peft_multi_cli");
    models::LMConfig c = testing::tiny_lm_config("mamba");
    models::AnyModel model{"mamba", std::make_shared<models::LanguageModel>(c, 4), nullptr};
    models::save_model((dir / "model").string(), model);
    peft::AdapterSet set(model.module());
    peft_test::randomize(set.add("a", peft::Config::from_json(kLoraA)), 1);
    peft_test::randomize(set.add("b", peft::Config::from_json(kLoraB)), 2);
    set.get("a").save((dir / "a").string());
    set.get("b").save((dir / "b").string());
    set.set_active(std::vector<std::string>{"a", "b"});
    const Tensor ids = Tensor::from_vector<int64_t>({1, 4, 2, 9, 0, 3, 7, 5}, {2, 4});
    const double loss = model.lm->loss(ids).item();
    save_safetensors((dir / "batch.safetensors").string(), {{"input_ids", ids}});
    const std::string pair = (dir / "a").string() + "+" + (dir / "b").string();
    REQUIRE(cli({"grads", "--model", (dir / "model").string(), "--batch", (dir / "batch.safetensors").string(), "--out",
                 (dir / "g.safetensors").string(), "--adapter", pair}) == 0);
    const TensorMap g = load_safetensors((dir / "g.safetensors").string());
    CHECK(g.at("loss").item() == doctest::Approx(loss).epsilon(1e-6));
    CHECK(g.count("1/base_model.model.backbone.layers.0.mixer.x_proj.lora_A.weight") == 1);
    CHECK(g.count("2/base_model.model.backbone.layers.0.mixer.dt_proj.lora_B.weight") == 1);
    CHECK(g.size() == 2 + set.get("a").named_parameters().size() + set.get("b").named_parameters().size());
    // merge folds both (HF's merge_and_unload of the active adapters): the merged model's loss is the pair's
    REQUIRE(cli({"merge", "--model", (dir / "model").string(), "--adapter", pair, "--out", (dir / "merged").string()}) == 0);
    CHECK(models::load_model((dir / "merged").string()).lm->loss(ids).item() == doctest::Approx(loss).epsilon(1e-5));
    CHECK(cli({"generate", "--model", (dir / "model").string(), "--adapter", pair, "--ids", "1,2", "--max-new-tokens", "2"}) == 0);
    const std::string task = "data.task.span=8,data.task.num_memorize=2,data.task.num_tokens=4,train.batch_size=4,"
                             "train.eval_batches=1";
    const auto r = cli_captured({"eval", "--model", (dir / "model").string(), "--adapter", (dir / "a").string() + "," + pair,
                                 "--set", task}, 1);
    CHECK(r.first == 0);
    CHECK(r.second.find("\"adapter\":\"" + pair + "\"") != std::string::npos);
    CHECK(r.second.find("\"adapter\":\"" + (dir / "a").string() + "\"") != std::string::npos);
    CHECK(cli({"eval", "--model", (dir / "model").string(), "--adapter", (dir / "a").string() + "+", "--set", task}) == 2);
    // a STATE_OFFSET adapter cannot join: one error line, exit 1; nor merge a DoRA adapter beside another on a module
    peft::AdapterSet other(model.module());
    other.add("offset", peft::Config::parse(R"({"peft_type": "STATE_OFFSET"})")).save((dir / "offset").string());
    other.add("dora", peft::Config::parse(R"({"peft_type": "LORA", "use_dora": true, "target_modules": ["in_proj"]})"))
        .save((dir / "dora").string());
    const auto refused = cli_captured({"merge", "--model", (dir / "model").string(), "--adapter",
                                       (dir / "a").string() + "+" + (dir / "dora").string(), "--out", (dir / "m2").string()}, 2);
    CHECK(refused.first == 1);
    CHECK(refused.second.find("one of them DoRA") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(dir / "m2"));
    const auto bad = cli_captured({"eval", "--model", (dir / "model").string(), "--adapter",
                                   (dir / "a").string() + "+" + (dir / "offset").string(), "--set", task}, 2);
    CHECK(bad.first == 1);
    CHECK(bad.second.find((dir / "offset").string() + "\" cannot be active together") != std::string::npos);
}

TEST_CASE("grads --per-sample: one adapter directory per sample, a directory with a plus sign in its name too") {
    const auto dir = testing::scratch_dir("peft_per_sample_cli");
    models::LMConfig c = testing::tiny_lm_config("mamba");
    models::AnyModel model{"mamba", std::make_shared<models::LanguageModel>(c, 4), nullptr};
    models::save_model((dir / "model").string(), model);
    peft::AdapterSet set(model.module());
    peft_test::randomize(set.add("a", peft::Config::from_json(kLoraA)), 3);
    peft_test::randomize(set.add("b", peft::Config::from_json(kLoraB)), 4);
    const std::string a = (dir / "a+1").string(), b = (dir / "b").string();  // "a+1" is one directory
    set.get("a").save(a);
    set.get("b").save(b);
    set.set_batch_adapters({"b", peft::AdapterSet::kBaseAdapter, "a"});
    const Tensor ids = Tensor::from_vector<int64_t>({1, 4, 2, 9, 0, 3, 7, 5, 6, 2, 8, 1}, {3, 4});
    const double loss = model.lm->loss(ids).item();
    save_safetensors((dir / "batch.safetensors").string(), {{"input_ids", ids}});
    REQUIRE(cli({"grads", "--model", (dir / "model").string(), "--batch", (dir / "batch.safetensors").string(), "--out",
                 (dir / "g.safetensors").string(), "--per-sample", b + ",__base__," + a}) == 0);
    const TensorMap g = load_safetensors((dir / "g.safetensors").string());
    CHECK(g.at("loss").item() == doctest::Approx(loss).epsilon(1e-6));
    CHECK(g.count("1/base_model.model.backbone.layers.0.mixer.dt_proj.lora_B.weight") == 1);  // b first: first used
    CHECK(g.count("2/base_model.model.backbone.layers.0.mixer.x_proj.lora_A.weight") == 1);
    CHECK(cli({"grads", "--model", (dir / "model").string(), "--batch", (dir / "batch.safetensors").string(), "--out",
               (dir / "g2.safetensors").string(), "--per-sample", b + ",," + a}) == 2);
}

TEST_CASE("combine writes the LoRA adapters' combination: cat of a pair computes as the pair active together") {
    const auto dir = testing::scratch_dir("peft_combine_cli");
    models::LMConfig c = testing::tiny_lm_config("mamba");
    models::AnyModel model{"mamba", std::make_shared<models::LanguageModel>(c, 4), nullptr};
    models::save_model((dir / "model").string(), model);
    peft::AdapterSet set(model.module());
    peft_test::randomize(set.add("a", peft::Config::from_json(kLoraA)), 5);
    peft_test::randomize(set.add("b", peft::Config::from_json(kLoraB)), 6);
    set.get("a").save((dir / "a").string());
    set.get("b").save((dir / "b").string());
    set.set_active(std::vector<std::string>{"a", "b"});
    const Tensor ids = Tensor::from_vector<int64_t>({1, 4, 2, 9, 0, 3, 7, 5}, {2, 4});
    const double loss = model.lm->loss(ids).item();
    save_safetensors((dir / "batch.safetensors").string(), {{"input_ids", ids}});
    const std::string pair = (dir / "a").string() + "," + (dir / "b").string();
    const auto r = cli_captured({"combine", "--model", (dir / "model").string(), "--adapter", pair, "--weights", "1,1",
                                 "--combination", "cat", "--out", (dir / "ab").string()}, 1);
    REQUIRE(r.first == 0);
    CHECK(r.second.find("r 5") != std::string::npos);
    REQUIRE(cli({"grads", "--model", (dir / "model").string(), "--batch", (dir / "batch.safetensors").string(), "--out",
                 (dir / "g.safetensors").string(), "--adapter", (dir / "ab").string()}) == 0);
    CHECK(load_safetensors((dir / "g.safetensors").string()).at("loss").item() == doctest::Approx(loss).epsilon(1e-6));
    // the default (svd), TIES with a density: written; usage mistakes exit 2, a refusal 1 with its reason
    CHECK(cli({"combine", "--model", (dir / "model").string(), "--adapter", pair, "--weights", "0.5,-1", "--out",
               (dir / "svd").string()}) == 1);  // dt_proj [16, 2] has no third singular value
    CHECK(cli({"combine", "--model", (dir / "model").string(), "--adapter", pair, "--weights", "0.5,-1", "--svd-rank", "2",
               "--out", (dir / "svd").string()}) == 0);
    CHECK(cli({"combine", "--model", (dir / "model").string(), "--adapter", pair, "--weights", "1,2", "--combination",
               "ties_svd", "--density", "0.5", "--svd-rank", "2", "--out", (dir / "ties").string()}) == 0);
    CHECK(peft::Config::from_file((dir / "ties" / "adapter_config.json").string()).json["r"] == 2);
    CHECK(cli({"combine", "--model", (dir / "model").string(), "--adapter", pair, "--weights", "1", "--out",
               (dir / "x").string()}) == 2);
    CHECK(cli({"combine", "--model", (dir / "model").string(), "--adapter", pair, "--weights", "1,x", "--out",
               (dir / "x").string()}) == 2);
    CHECK(cli({"combine", "--model", (dir / "model").string(), "--adapter", pair, "--weights", "1,1", "--out",
               (dir / "a").string()}) == 2);
    const auto refused = cli_captured({"combine", "--model", (dir / "model").string(), "--adapter", pair, "--weights",
                                       "1,1", "--combination", "ties", "--out", (dir / "x").string()}, 2);
    CHECK(refused.first == 1);
    CHECK(refused.second.find("needs adapters of one rank") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(dir / "x"));
}
