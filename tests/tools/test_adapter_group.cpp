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
// A tiny Mamba saved as DIR/model, peft_test::kLoraA and kLoraB randomised from seed and seed + 1 as "a" and "b" in
// `set` and saved as DIR/<a_dir> and DIR/b, and the input ids saved as DIR/batch.safetensors.
struct SavedPair {
    std::filesystem::path dir;
    models::AnyModel model;
    std::unique_ptr<peft::AdapterSet> set;
    std::string model_dir, a, b, batch;
};
SavedPair save_pair(const std::string& name, uint64_t seed, const Tensor& ids, const std::string& a_dir = "a") {
    SavedPair p;
    p.dir = testing::scratch_dir(name);
    p.model = models::AnyModel{"mamba", std::make_shared<models::LanguageModel>(testing::tiny_lm_config("mamba"), 4), nullptr};
    p.model_dir = (p.dir / "model").string();
    models::save_model(p.model_dir, p.model);
    p.set = std::make_unique<peft::AdapterSet>(p.model.module());
    peft_test::randomize(p.set->add("a", peft::Config::from_json(peft_test::kLoraA)), seed);
    peft_test::randomize(p.set->add("b", peft::Config::from_json(peft_test::kLoraB)), seed + 1);
    p.a = (p.dir / a_dir).string();
    p.b = (p.dir / "b").string();
    p.set->get("a").save(p.a);
    p.set->get("b").save(p.b);
    p.batch = (p.dir / "batch.safetensors").string();
    save_safetensors(p.batch, {{"input_ids", ids}});
    return p;
}
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
    const Tensor ids = Tensor::from_vector<int64_t>({1, 4, 2, 9, 0, 3, 7, 5}, {2, 4});
    SavedPair p = save_pair("peft_multi_cli", 1, ids);
    const auto& dir = p.dir;
    models::AnyModel& model = p.model;
    peft::AdapterSet& set = *p.set;
    set.set_active(std::vector<std::string>{"a", "b"});
    const double loss = model.lm->loss(ids).item();
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

TEST_CASE("a FULL adapter runs in generate, grads and merge as in eval, and a set of adapters refuses one saying why") {
    // until 2026-12-07 every --adapter went through an AdapterSet, which switches adapters off and on: generate,
    // grads and merge refused a FULL adapter ("no base model to switch back to") that eval and inspect read
    const Tensor ids = Tensor::from_vector<int64_t>({1, 4, 2, 9, 0, 3, 7, 5}, {2, 4});
    SavedPair p = save_pair("peft_full_cli", 5, ids);
    const auto& dir = p.dir;
    const std::string model = (dir / "model").string(), full = (dir / "full").string();
    {
        models::AnyModel trained = models::load_model(model);
        peft::Adapter f = peft::apply(trained.module(), peft::Config::parse(R"({"peft_type": "FULL"})"));
        peft_test::randomize(f, 9);
        f.save(full);
    }
    models::AnyModel with = models::load_model(model);
    peft::Adapter loaded = peft::load(with.module(), full);
    const double loss = with.lm->loss(ids).item();
    REQUIRE(cli({"grads", "--model", model, "--batch", p.batch, "--out", (dir / "g.safetensors").string(), "--adapter",
                 full}) == 0);
    CHECK(load_safetensors((dir / "g.safetensors").string()).at("loss").item() == doctest::Approx(loss).epsilon(1e-6));
    CHECK(cli({"generate", "--model", model, "--adapter", full, "--ids", "1,2", "--max-new-tokens", "2"}) == 0);
    REQUIRE(cli({"merge", "--model", model, "--adapter", full, "--out", (dir / "merged").string()}) == 0);
    CHECK(models::load_model((dir / "merged").string()).lm->loss(ids).item() == doctest::Approx(loss).epsilon(1e-6));
    const auto refused = cli_captured({"merge", "--model", model, "--adapter", full + "+" + p.a, "--out",
                                       (dir / "m2").string()}, 2);
    CHECK(refused.first == 1);
    CHECK(refused.second.find("is a FULL adapter, which trains every base weight in place") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(dir / "m2"));
}

TEST_CASE("grads --per-sample: one adapter directory per sample, a directory with a plus sign in its name too") {
    const Tensor ids = Tensor::from_vector<int64_t>({1, 4, 2, 9, 0, 3, 7, 5, 6, 2, 8, 1}, {3, 4});
    SavedPair p = save_pair("peft_per_sample_cli", 3, ids, "a+1");  // "a+1" is one directory
    const auto& dir = p.dir;
    const std::string &a = p.a, &b = p.b;
    p.set->set_batch_adapters({"b", peft::AdapterSet::kBaseAdapter, "a"});
    const double loss = p.model.lm->loss(ids).item();
    REQUIRE(cli({"grads", "--model", (dir / "model").string(), "--batch", (dir / "batch.safetensors").string(), "--out",
                 (dir / "g.safetensors").string(), "--per-sample", b + ",__base__," + a}) == 0);
    const TensorMap g = load_safetensors((dir / "g.safetensors").string());
    CHECK(g.at("loss").item() == doctest::Approx(loss).epsilon(1e-6));
    CHECK(g.count("1/base_model.model.backbone.layers.0.mixer.dt_proj.lora_B.weight") == 1);  // b first: first used
    CHECK(g.count("2/base_model.model.backbone.layers.0.mixer.x_proj.lora_A.weight") == 1);
    CHECK(cli({"grads", "--model", (dir / "model").string(), "--batch", (dir / "batch.safetensors").string(), "--out",
               (dir / "g2.safetensors").string(), "--per-sample", b + ",," + a}) == 2);
    // found by fuzzing the flags: a count that is not the batch's, and an empty --adapter, are usage errors in the
    // flags' terms (they were set_batch_adapters' and AdapterSet's messages)
    const auto short_list = cli_captured({"grads", "--model", (dir / "model").string(), "--batch",
                                          (dir / "batch.safetensors").string(), "--out", (dir / "g3.safetensors").string(),
                                          "--per-sample", b + "," + a}, 2);
    CHECK(short_list.first == 2);
    CHECK(short_list.second.find("--per-sample names 2 entries but the batch holds 3 samples") != std::string::npos);
    CHECK(cli({"grads", "--model", (dir / "model").string(), "--batch", (dir / "batch.safetensors").string(), "--out",
               (dir / "g4.safetensors").string(), "--adapter", ""}) == 2);
}

TEST_CASE("combine writes the LoRA adapters' combination: cat of a pair computes as the pair active together") {
    const Tensor ids = Tensor::from_vector<int64_t>({1, 4, 2, 9, 0, 3, 7, 5}, {2, 4});
    SavedPair p = save_pair("peft_combine_cli", 5, ids);
    const auto& dir = p.dir;
    p.set->set_active(std::vector<std::string>{"a", "b"});
    const double loss = p.model.lm->loss(ids).item();
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
