// train, finetune, eval and quickstart on tiny settings: happy paths (outputs, resolved config, metrics, plots,
// adapters), bit-identical --resume through the command, and bad inputs (malformed config, unknown keys, wrong
// model type for the data, adapter for another base) giving exit 1 and an error line.
#include "test_util.h"
#include "tests/tools/cli_test_util.h"

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "engine/safetensors.h"
#include "models/checkpoint.h"
#include "tools/commands.h"

using namespace ssmtune;
using namespace ssmtune::testing;
namespace fs = std::filesystem;

namespace {
std::vector<double> train_losses(const fs::path& run, const char* field = "loss") {
    std::vector<double> out;
    std::ifstream in(run / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
        auto j = nlohmann::json::parse(line);
        if (!j.contains("split")) out.push_back(j[field]);
    }
    return out;
}
// A tiny 2-layer Mamba (D 16, E 32, N 4, byte vocabulary) trained 2 steps on a small text with the run settings
// `set`, in a fresh scratch directory: what the finetune tests below start from.
struct TextBase {
    fs::path dir;
    std::string data, model, set;
    // `ssmtune finetune` of the model on the text with `peft`, the same settings, into dir/name (extra: more flags)
    fs::path finetune(const std::string& name, const nlohmann::json& peft, const char* steps, bool resume = false,
                      const std::vector<std::string>& extra = {}) const {
        std::vector<std::string> args = {"finetune", "--model", model, "--data", data, "--peft", peft.dump(), "--set",
                                         set, "--steps", steps, "--out", (dir / name).string(), "--quiet"};
        args.insert(args.end(), extra.begin(), extra.end());
        if (resume) args.push_back("--resume");
        REQUIRE(cli(args) == 0);
        return dir / name;
    }
};
TextBase text_base(const std::string& name, const std::string& set) {
    TextBase b{scratch_dir(name), "", "", set};
    nlohmann::json cfg = {{"model", {{"model_type", "mamba"}, {"vocab_size", 256}, {"hidden_size", 16},
                                     {"num_hidden_layers", 2}, {"state_size", 4}, {"intermediate_size", 32},
                                     {"time_step_rank", 1}}}};
    std::ofstream(b.dir / "cfg.json") << cfg.dump();
    std::string text;
    for (int i = 0; i < 300; ++i) text += "state " + std::to_string(i * 11 % 17) + " carries on; ";
    std::ofstream(b.dir / "text.txt") << text;
    b.data = (b.dir / "text.txt").string();
    REQUIRE(cli({"train", "--config", (b.dir / "cfg.json").string(), "--data", b.data, "--set", set, "--steps", "2",
                 "--out", (b.dir / "base").string(), "--quiet"}) == 0);
    b.model = (b.dir / "base" / "model").string();
    return b;
}
}  // namespace

TEST_CASE("train, finetune and eval commands on a synthetic task") {
    const auto dir = scratch_dir("train_cmds");
    const std::string run = (dir / "base").string();
    // a model config through --set requires a model object first: give it inline via a config file
    nlohmann::json cfg = {{"model", {{"model_type", "mamba"}, {"vocab_size", 6}, {"hidden_size", 16}, {"num_hidden_layers", 1},
                                     {"state_size", 4}, {"intermediate_size", 32}, {"time_step_rank", 1}}}};
    std::ofstream(dir / "cfg.json") << cfg.dump();
    const std::string set = "data.task.span=8,data.task.num_memorize=2,data.task.num_tokens=4,train.batch_size=4,"
                            "train.log_every=1,train.eval_batches=1";
    REQUIRE(cli({"train", "--config", (dir / "cfg.json").string(), "--set", set, "--steps", "6", "--eval-every", "3",
                 "--out", run, "--quiet"}) == 0);
    CHECK(fs::exists(fs::path(run) / "model" / "model.safetensors"));
    CHECK(fs::exists(fs::path(run) / "run_config.json"));
    CHECK(fs::exists(fs::path(run) / "loss.svg"));
    CHECK(train_losses(run).size() == 6);
    auto resolved = models::read_json_file((fs::path(run) / "run_config.json").string());
    CHECK(resolved["train"]["steps"] == 6);
    CHECK(resolved["data"]["task"]["span"] == 8);

    // resume through the command: 3 steps, then continue to 6 → the same losses
    const std::string split = (dir / "split").string();
    REQUIRE(cli({"train", "--config", (dir / "cfg.json").string(), "--set", set + ",train.schedule=constant,train.warmup_steps=0",
                 "--steps", "3", "--out", split, "--quiet"}) == 0);
    REQUIRE(cli({"train", "--config", (dir / "cfg.json").string(), "--set", set + ",train.schedule=constant,train.warmup_steps=0",
                 "--steps", "6", "--out", split, "--resume", "--quiet"}) == 0);
    const std::string whole = (dir / "whole").string();
    REQUIRE(cli({"train", "--config", (dir / "cfg.json").string(), "--set", set + ",train.schedule=constant,train.warmup_steps=0",
                 "--steps", "6", "--out", whole, "--quiet"}) == 0);
    CHECK(train_losses(split) == train_losses(whole));

    // finetune with the default (state offset) and LoRA; eval with and without the adapter
    const std::string model = (fs::path(run) / "model").string();
    REQUIRE(cli({"finetune", "--model", model, "--set", set + ",data.task.token_shift=1", "--steps", "4", "--out",
                 (dir / "ft").string(), "--quiet"}) == 0);
    CHECK(fs::exists(dir / "ft" / "adapter" / "adapter_config.json"));
    REQUIRE(cli({"finetune", "--model", model, "--peft", R"({"peft_type": "LORA", "r": 2})", "--set", set, "--steps", "3",
                 "--out", (dir / "ft_lora").string(), "--quiet"}) == 0);
    CHECK(cli({"eval", "--model", model, "--set", set}) == 0);
    CHECK(cli({"eval", "--model", model, "--adapter", (dir / "ft" / "adapter").string(), "--set", set}) == 0);

    // bad inputs
    std::ofstream(dir / "bad.json") << "{\"train\": {\"stpes\": 3}}";
    CHECK(cli({"train", "--config", (dir / "bad.json").string(), "--out", (dir / "x").string()}) == 1);
    std::ofstream(dir / "broken.json") << "{\"train\": ";
    CHECK(cli({"train", "--config", (dir / "broken.json").string(), "--out", (dir / "x").string()}) == 1);
    CHECK(cli({"train", "--set", "train.steps=abc", "--out", (dir / "x").string()}) == 1);
    CHECK(cli({"train", "--model-type", "s4d", "--task", "selective_copying", "--out", (dir / "x").string()}) == 2);
    CHECK(cli({"finetune", "--set", set}) == 2);  // no --model
    CHECK(cli({"eval", "--model", model, "--data", (dir / "no_such.txt").string()}) == 1);
    // an adapter for another base
    nlohmann::json other = cfg;
    other["model"]["hidden_size"] = 24;
    other["model"]["intermediate_size"] = 48;
    std::ofstream(dir / "other.json") << other.dump();
    REQUIRE(cli({"train", "--config", (dir / "other.json").string(), "--set", set, "--steps", "1", "--out",
                 (dir / "other").string(), "--quiet"}) == 0);
    CHECK(cli({"eval", "--model", (dir / "other" / "model").string(), "--adapter", (dir / "ft" / "adapter").string(),
               "--set", set}) == 1);
}

TEST_CASE("train: batch 4 with two accumulated micro-batches takes the steps of batch 8") {
    // Text windows are one Philox draw each, so two micro-batches of 4 read the windows one batch of 8 reads; the mean
    // of their equal-size means is the mean over all 8, so losses and weights agree to rounding.
    const auto dir = scratch_dir("train_accum_cmd");
    nlohmann::json cfg = {{"model", {{"model_type", "mamba"}, {"vocab_size", 256}, {"hidden_size", 16},
                                     {"num_hidden_layers", 1}, {"state_size", 4}, {"intermediate_size", 32},
                                     {"time_step_rank", 1}}}};
    std::ofstream(dir / "cfg.json") << cfg.dump();
    std::string text;
    for (int i = 0; i < 400; ++i) text += "the scan carries state " + std::to_string(i * 7 % 13) + "; ";
    std::ofstream(dir / "text.txt") << text;
    auto train = [&](const std::string& name, const std::string& batch) {
        const std::string out = (dir / name).string();
        REQUIRE(cli({"train", "--config", (dir / "cfg.json").string(), "--data", (dir / "text.txt").string(), "--set",
                     batch + ",train.seq_len=16,train.log_every=1,train.eval_every=0,train.weight_decay=0.1",
                     "--steps", "5", "--out", out, "--quiet"}) == 0);
        return out;
    };
    const std::string one = train("one", "train.batch_size=8"),
                      two = train("two", "train.batch_size=4,train.gradient_accumulation_steps=2");
    const std::vector<double> l1 = train_losses(one), l2 = train_losses(two);
    REQUIRE(l1.size() == 5);
    REQUIRE(l2.size() == 5);
    for (size_t i = 0; i < l1.size(); ++i) CHECK(l2[i] == doctest::Approx(l1[i]).epsilon(1e-5));
    const std::vector<double> n1 = train_losses(one, "grad_norm"), n2 = train_losses(two, "grad_norm");
    for (size_t i = 0; i < n1.size(); ++i) CHECK(n2[i] == doctest::Approx(n1[i]).epsilon(1e-4));  // a mean, not a sum
    const TensorMap w1 = load_safetensors((fs::path(one) / "model" / "model.safetensors").string()),
                    w2 = load_safetensors((fs::path(two) / "model" / "model.safetensors").string());
    for (const auto& entry : w1) {
        const std::string& name = entry.first;  // not a structured binding: CAPTURE's lambda cannot capture those
        CAPTURE(name);
        const std::vector<float> a = entry.second.to_vector<float>(), b = w2.at(name).to_vector<float>();
        for (size_t i = 0; i < a.size(); ++i) CHECK(std::abs(a[i] - b[i]) < 1e-4f);
    }
}

TEST_CASE("train: a model section without model_type, or --model-type over one, changes the default model") {
    const auto dir = scratch_dir("train_model_section");
    const auto config = [&](const fs::path& out) {
        return nlohmann::json::parse(std::ifstream(out / "model" / "config.json"));
    };
    const std::string small = "train.batch_size=2,train.eval_batches=1";
    // `--set model.hidden_size=16` was an error (missing model_type): it is the default Mamba at D 16, with E and
    // the Δ rank derived from it (expand · D, ⌈D / 16⌉) as HF's MambaConfig derives them
    REQUIRE(cli({"train", "--steps", "1", "--set", "model.hidden_size=16,model.num_hidden_layers=1," + small, "--out",
                 (dir / "d16").string(), "--quiet"}) == 0);
    auto c = config(dir / "d16");
    CHECK(c["model_type"] == "mamba");
    CHECK(c["hidden_size"] == 16);
    CHECK(c["num_hidden_layers"] == 1);
    CHECK(c["intermediate_size"] == 32);
    CHECK(c["time_step_rank"] == 1);
    CHECK(c["state_size"] == 16);  // the default's
    // --model-type longhorn kept none of the section's fields; now it keeps them all
    REQUIRE(cli({"train", "--steps", "1", "--model-type", "longhorn", "--set",
                 "model.model_type=mamba,model.hidden_size=16,model.num_hidden_layers=1,model.state_size=4," + small,
                 "--out", (dir / "longhorn").string(), "--quiet"}) == 0);
    c = config(dir / "longhorn");
    CHECK(c["model_type"] == "longhorn");
    CHECK(c["hidden_size"] == 16);
    CHECK(c["state_size"] == 4);
    CHECK(c["intermediate_size"] == 32);
    // without a flag a whole section is the model, as before; the default model (no section) is unchanged
    REQUIRE(cli({"train", "--steps", "1", "--set", small, "--out", (dir / "default").string(), "--quiet"}) == 0);
    c = config(dir / "default");
    CHECK(c["hidden_size"] == 64);
    CHECK(c["intermediate_size"] == 128);
    CHECK(c["time_step_rank"] == 4);
    CHECK(cli({"train", "--steps", "1", "--set", "model.model_type=nope," + small, "--out", (dir / "nope").string(),
               "--quiet"}) == 1);
    for (const char* not_an_object : {"model=5", "model=[]", "model=\"mamba\""})
        CHECK(cli({"train", "--steps", "1", "--set", std::string(not_an_object) + "," + small, "--out",
                   (dir / "nope").string(), "--quiet"}) == 1);
}

TEST_CASE("quickstart runs end to end on tiny settings") {
    const auto dir = scratch_dir("quickstart");
    // few steps: the table and files must be there; the accuracy check may fail at this size, so accept 0 or 1
    const int rc = cli({"quickstart", "--out", dir.string(), "--base-steps", "4", "--finetune-steps", "2", "--quiet"});
    CHECK((rc == 0 || rc == 1));
    CHECK(fs::exists(dir / "loss.svg"));
    CHECK(fs::exists(dir / "state_offset" / "adapter" / "adapter_model.safetensors"));
    CHECK(fs::exists(dir / "lora" / "adapter" / "adapter_config.json"));
}

TEST_CASE("finetune SDLoRA: the warm-up does not move the run's batches, --resume keeps its dimensions, warmup_lr") {
    // mamba-peft's warm-up is a separate run from the same seed: the run proper draws the batches it would have drawn
    // without a warm-up. So a run that selects its dimensions by a warm-up and a run given those dimensions train
    // alike, bit for bit (text windows are seeded draws, so a shifted data stream would change every loss).
    const std::string set = "train.seq_len=16,train.batch_size=4,train.log_every=1,train.eval_every=0,"
                            "train.weight_decay=0.1,train.grad_clip=0.5,train.schedule=\"cosine\",train.warmup_steps=2";
    const TextBase base = text_base("finetune_sdlora", set);
    const fs::path& dir = base.dir;
    auto finetune = [&](const std::string& name, const nlohmann::json& peft, const char* steps = "4",
                        bool resume = false) { return base.finetune(name, peft, steps, resume, {"--lr", "0.01"}); };
    const nlohmann::json peft = {{"peft_type", "SDLORA"}, {"r", 2}, {"channel_ratio", 0.25}, {"state_ratio", 0.5},
                                 {"warmup_steps", 3}};
    const fs::path warmed = finetune("warmed", peft);
    const nlohmann::json dims = models::read_json_file((warmed / "run_config.json").string())["peft"]["dimensions"];
    REQUIRE(dims.size() == 2);
    nlohmann::json given = peft;
    given["dimensions"] = dims;
    const fs::path fixed = finetune("fixed", given);
    REQUIRE(train_losses(warmed).size() == 4);
    CHECK(train_losses(warmed) == train_losses(fixed));
    // --resume keeps the first start's dimensions instead of warming up again (no new sdlora_warmup.safetensors):
    // a second warm-up could select others (here --steps changes its schedule), and the checkpoint's deltas, which
    // have the same sizes, would then load onto other dimensions
    const fs::path split = finetune("split", peft, "2");
    const nlohmann::json first = models::read_json_file((split / "run_config.json").string())["peft"]["dimensions"];
    fs::remove(split / "sdlora_warmup.safetensors");
    finetune("split", peft, "4", true);
    CHECK_FALSE(fs::exists(split / "sdlora_warmup.safetensors"));
    CHECK(train_losses(split).size() == 4);
    CHECK(models::read_json_file((split / "run_config.json").string())["peft"]["dimensions"] == first);
    // warmup_lr 0: the warm-up moves nothing, every score ties and the lowest indices win (8 of E = 32 channels,
    // 2 of N = 4 states); the run's lr selects others
    nlohmann::json still = peft;
    still["warmup_lr"] = 0.0;
    const nlohmann::json tied = models::read_json_file((finetune("still", still) / "run_config.json").string())["peft"]["dimensions"];
    for (const char* layer : {"0", "1"}) {
        CAPTURE(layer);
        CHECK(tied[layer]["channels"] == nlohmann::json({0, 1, 2, 3, 4, 5, 6, 7}));
        CHECK(tied[layer]["states"][0] == nlohmann::json({0, 1}));
    }
    CHECK(tied != dims);
    // the warm-up's tensors are kept beside the run: its dense A_log deltas, zero at warmup_lr 0
    const TensorMap still_moved = load_safetensors((dir / "still" / "sdlora_warmup.safetensors").string());
    const TensorMap moved = load_safetensors((warmed / "sdlora_warmup.safetensors").string());
    for (const char* name : {"backbone.layers.0.mixer.A_log_delta", "backbone.layers.1.mixer.A_log_delta"}) {
        CAPTURE(name);
        REQUIRE(moved.count(name));
        REQUIRE(still_moved.count(name));
        CHECK(moved.at(name).numel() == 32 * 4);
        double largest = 0, still_largest = 0;
        for (double v : moved.at(name).to_vector<double>()) largest = std::max(largest, std::abs(v));
        for (double v : still_moved.at(name).to_vector<double>()) still_largest = std::max(still_largest, std::abs(v));
        CHECK(largest > 0);
        CHECK(still_largest == 0);
    }
}

TEST_CASE("finetune --resume with adapter dropout draws the uninterrupted run's masks") {
    // LoRA, parallel-adapter and SURM dropout draw from the adapter layers' own generators; a checkpoint saves their
    // states (models::training_generators), so 3 steps + --resume to 6 log the losses of 6 steps in one go.
    const std::string set = "train.seq_len=16,train.batch_size=4,train.log_every=1,train.eval_every=0,"
                            "train.schedule=\"constant\",train.warmup_steps=0";
    const TextBase base = text_base("finetune_dropout_resume", set);
    const std::vector<nlohmann::json> pefts = {
        {{"peft_type", "LORA"}, {"r", 2}, {"lora_dropout", 0.3}, {"target_modules", {"in_proj", "out_proj"}}},
        {{"peft_type", "PARALLEL_ADAPTER"}, {"r", 2}, {"adapter_dropout", 0.3}},
        {{"peft_type", "SURM"}, {"surm_dropout", 0.3}}};
    for (const nlohmann::json& peft : pefts) {
        const std::string type = peft["peft_type"];
        CAPTURE(type);
        const fs::path whole = base.finetune(type + "_whole", peft, "6");
        base.finetune(type + "_split", peft, "3");
        const fs::path split = base.finetune(type + "_split", peft, "6", true);
        REQUIRE(train_losses(whole).size() == 6);
        CHECK(train_losses(split) == train_losses(whole));
    }
}

TEST_CASE("train.gradient_checkpointing: train and finetune (with dropout) run bit-identically with it, bad values refused") {
    const std::string set = "train.seq_len=16,train.batch_size=4,train.log_every=1,train.eval_every=3";
    const TextBase base = text_base("gradient_checkpointing", set);
    const nlohmann::json lora = {{"peft_type", "LORA"}, {"r", 2}, {"lora_dropout", 0.3},
                                 {"target_modules", {"in_proj", "x_proj", "out_proj"}}};
    const fs::path plain = base.finetune("plain", lora, "4");
    TextBase with = base;
    with.set += ",train.gradient_checkpointing=true";
    const fs::path ckpt = with.finetune("ckpt", lora, "4");
    REQUIRE(train_losses(plain).size() == 4);
    CHECK(train_losses(ckpt) == train_losses(plain));
    CHECK(train_losses(ckpt, "grad_norm") == train_losses(plain, "grad_norm"));
    CHECK(file_bytes(ckpt / "adapter" / "adapter_model.safetensors") ==
          file_bytes(plain / "adapter" / "adapter_model.safetensors"));
    for (const char* on : {"false", "true"}) {  // (the flag --gradient-checkpointing sets it)
        std::vector<std::string> args = {"train", "--config", (base.dir / "cfg.json").string(), "--data", base.data,
                                         "--set", set, "--steps", "3", "--out",
                                         (base.dir / (std::string("train_") + on)).string(), "--quiet"};
        if (std::string(on) == "true") args.push_back("--gradient-checkpointing");
        REQUIRE(cli(args) == 0);
    }
    CHECK(nlohmann::json::parse(file_bytes(base.dir / "train_true" / "run_config.json"))["train"]
              ["gradient_checkpointing"] == true);
    CHECK(train_losses(base.dir / "train_true") == train_losses(base.dir / "train_false"));
    CHECK(file_bytes(base.dir / "train_true" / "model" / "model.safetensors") ==
          file_bytes(base.dir / "train_false" / "model" / "model.safetensors"));
    const auto bad = cli_captured({"train", "--config", (base.dir / "cfg.json").string(), "--data", base.data, "--set",
                                   set + ",train.gradient_checkpointing=1", "--steps", "1", "--out",
                                   (base.dir / "bad").string(), "--quiet"}, 2);
    CHECK(bad.first == 1);
    CHECK(bad.second.find("\"train.gradient_checkpointing\" must be boolean (like false), got 1") != std::string::npos);
}

TEST_CASE("finetune --adapter trains on from a saved adapter: its tensors are the start, --resume, refusals") {
    // HF's PeftModel.from_pretrained(..., is_trainable=True): the saved adapter's config and tensors, a new optimizer
    const std::string set = "train.seq_len=16,train.batch_size=4,train.log_every=1,train.eval_every=0,"
                            "train.schedule=\"constant\",train.warmup_steps=0";
    const TextBase base = text_base("finetune_from_adapter", set);
    const fs::path& dir = base.dir;
    auto tensors = [](const fs::path& adapter) {
        std::map<std::string, std::vector<float>> out;
        for (const auto& [name, t] : load_safetensors((adapter / "adapter_model.safetensors").string()))
            out[name] = t.to_vector<float>();
        return out;
    };
    const std::vector<nlohmann::json> pefts = {
        {{"peft_type", "LORA"}, {"r", 2}, {"target_modules", {"in_proj", "out_proj"}}},
        {{"peft_type", "LORA"}, {"r", 2}, {"target_modules", {"in_proj", "x_proj"}}, {"init_lora_weights", "pissa"}},
        {{"peft_type", "STATE_OFFSET"}, {"variant", "h"}},
        {{"peft_type", "SDLORA"}, {"r", 2}, {"channel_ratio", 0.25}, {"state_ratio", 0.5}, {"warmup_steps", 2}}};
    for (size_t i = 0; i < pefts.size(); ++i) {
        const std::string tag = std::to_string(i) + "_" + pefts[i]["peft_type"].get<std::string>();
        CAPTURE(tag);
        const fs::path first = base.finetune(tag + "_first", pefts[i], "3", false, {"--lr", "0.01"});
        const std::string saved = (first / "adapter").string();
        auto go_on = [&](const std::string& name, const char* steps, const char* lr, bool resume = false) {
            std::vector<std::string> args = {"finetune", "--model", base.model, "--data", base.data, "--adapter", saved,
                                             "--set", set, "--steps", steps, "--lr", lr, "--out",
                                             (dir / (tag + name)).string(), "--quiet"};
            if (resume) args.push_back("--resume");
            REQUIRE(cli(args) == 0);
            return dir / (tag + name);
        };
        // at lr 0 the saved tensors come out as they went in, under the saved config
        const fs::path still = go_on("_still", "2", "0");
        CHECK(tensors(still / "adapter") == tensors(saved));
        CHECK(models::read_json_file((still / "adapter" / "adapter_config.json").string()) ==
              models::read_json_file((fs::path(saved) / "adapter_config.json").string()));
        const nlohmann::json rc = models::read_json_file((still / "run_config.json").string());
        CHECK(rc["adapter"] == saved);
        CHECK(rc["peft"].is_null());  // so that it can be given again as --config
        // the first step's loss is the saved adapter's (the same at any lr), not a fresh adapter's on the same batch
        const fs::path on = go_on("_on", "4", "0.01");
        const fs::path fresh = base.finetune(tag + "_fresh", pefts[i], "1", false, {"--lr", "0.01"});
        REQUIRE(train_losses(on).size() == 4);
        CHECK(train_losses(on)[0] == train_losses(still)[0]);
        CHECK(train_losses(on)[0] != train_losses(fresh)[0]);
        CHECK(tensors(on / "adapter") != tensors(saved));
        // --resume: 2 steps, then on to 4, logs the losses of 4 in one go
        go_on("_split", "2", "0.01");
        const fs::path split = go_on("_split", "4", "0.01", true);
        CHECK(train_losses(split) == train_losses(on));
        // the run's own config, given again, trains from the same adapter
        const std::string again = (dir / (tag + "_again")).string();
        REQUIRE(cli({"finetune", "--config", (on / "run_config.json").string(), "--out", again, "--quiet"}) == 0);
        CHECK(train_losses(again) == train_losses(on));
    }
    // refusals: both a new adapter and a saved one, a missing directory, another base's adapter
    const std::string saved = (dir / "0_LORA_first" / "adapter").string();
    const std::string out = (dir / "refused").string();
    CHECK(cli({"finetune", "--model", base.model, "--data", base.data, "--adapter", saved, "--peft",
               R"({"peft_type": "LORA"})", "--out", out}) == 2);
    std::ofstream(dir / "both.json") << nlohmann::json{{"base_model", base.model}, {"adapter", saved},
                                                       {"peft", {{"peft_type", "LORA"}}}}.dump();
    CHECK(cli({"finetune", "--config", (dir / "both.json").string(), "--data", base.data, "--out", out}) == 2);
    // a flag wins over the config's other choice, as flags do
    CHECK(cli({"finetune", "--config", (dir / "both.json").string(), "--data", base.data, "--adapter", saved,
               "--set", set, "--steps", "1", "--out", out, "--quiet"}) == 0);
    CHECK(cli({"finetune", "--model", base.model, "--data", base.data, "--adapter", "", "--out", out}) == 2);
    CHECK(cli({"finetune", "--model", base.model, "--data", base.data, "--adapter", (dir / "nowhere").string(),
               "--out", out}) == 1);
    const auto mixup = cli_captured({"finetune", "--model", base.model, "--data", base.data, "--adapter",
                                     (dir / "0_LORA_first").string(), "--out", out}, 2);
    CHECK(mixup.first == 1);
    CHECK(mixup.second.find("its adapter is") != std::string::npos);  // the run directory instead of its adapter
}

TEST_CASE("a run started again in the same --out keeps its own log: the earlier run's goes to OUT/previous") {
    // It used to append to the earlier run's metrics.jsonl (two runs in one log and one loss plot), and a --resume
    // after the new run was killed before its first checkpoint found the earlier run's.
    const auto dir = scratch_dir("same_out");
    const std::string out = (dir / "run").string();
    auto train = [&](const char* steps, bool resume = false) {
        std::vector<std::string> args = {"train", "--task", "selective_copying", "--steps", steps, "--batch-size", "4",
                                         "--set", "train.log_every=1,train.eval_every=2,train.eval_batches=1", "--out",
                                         out, "--quiet"};
        if (resume) args.push_back("--resume");
        return cli_captured(args, 2);
    };
    auto last_step = [](const fs::path& run) {
        return models::read_json_file((run / "checkpoints" / "last" / "trainer_state.json").string())["step"].get<int64_t>();
    };
    const auto first = train("6");
    REQUIRE(first.first == 0);
    CHECK(first.second.find("earlier run") == std::string::npos);
    CHECK(train_losses(out).size() == 6);
    const auto second = train("4");
    REQUIRE(second.first == 0);
    CHECK(second.second.find("warning: " + out + " held an earlier run; its metrics.jsonl, checkpoints, loss.svg, "
                             "accuracy.svg moved to " + out + "/previous") != std::string::npos);
    CHECK(train_losses(out).size() == 4);  // its own records only
    CHECK(train_losses(fs::path(out) / "previous").size() == 6);
    CHECK(last_step(out) == 4);
    CHECK(last_step(fs::path(out) / "previous") == 6);
    CHECK(fs::exists(fs::path(out) / "previous" / "loss.svg"));
    CHECK(fs::exists(fs::path(out) / "loss.svg"));
    // --resume continues this run (its log is cut back and extended, nothing moved); a third fresh start replaces
    // OUT/previous with the second run's
    const auto resumed = train("5", true);
    REQUIRE(resumed.first == 0);
    CHECK(resumed.second.find("earlier run") == std::string::npos);
    CHECK(train_losses(out).size() == 5);
    REQUIRE(train("2").first == 0);
    CHECK(train_losses(fs::path(out) / "previous").size() == 5);
    CHECK(train_losses(out).size() == 2);
    // finetune likewise, SDLoRA's warm-up tensors included; an adapter read from OUT itself is read before the move
    const std::string model = out + "/model", ft = (dir / "ft").string();
    auto finetune = [&](const std::vector<std::string>& how) {
        std::vector<std::string> args = {"finetune", "--model", model, "--task", "selective_copying", "--steps", "3",
                                         "--batch-size", "4", "--set", "train.log_every=1,train.eval_every=0,"
                                         "train.eval_batches=1", "--out", ft, "--quiet"};
        args.insert(args.end(), how.begin(), how.end());
        return cli_captured(args, 2);
    };
    REQUIRE(finetune({"--peft", R"({"peft_type": "SDLORA", "r": 2, "warmup_steps": 2})"}).first == 0);
    const auto again = finetune({"--adapter", ft + "/adapter"});
    REQUIRE(again.first == 0);
    CHECK(again.second.find("sdlora_warmup.safetensors moved to " + ft + "/previous") != std::string::npos);
    CHECK(fs::exists(fs::path(ft) / "previous" / "sdlora_warmup.safetensors"));
    CHECK_FALSE(fs::exists(fs::path(ft) / "sdlora_warmup.safetensors"));
    CHECK(train_losses(ft).size() == 3);
    // the main job run twice into one --out: each of its runs' logs holds one run
    const std::string qs = (dir / "quickstart").string();
    const std::vector<std::string> parts = {"base", "state_offset", "lora"};
    std::vector<size_t> once;
    for (int i = 0; i < 2; ++i) {
        cli({"quickstart", "--out", qs, "--base-steps", "3", "--finetune-steps", "2", "--quiet"});  // (0 or 1: tiny)
        for (size_t k = 0; k < parts.size(); ++k) {
            const std::string& part = parts[k];
            CAPTURE(part);
            const size_t n = train_losses(fs::path(qs) / part).size();
            REQUIRE(n > 0);
            if (i == 0) once.push_back(n);
            else CHECK(n == once[k]);
            if (i == 1) CHECK(train_losses(fs::path(qs) / part / "previous").size() == once[k]);
        }
    }
}
