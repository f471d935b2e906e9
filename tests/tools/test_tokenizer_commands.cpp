// The commands around a BPE tokenizer.json: finetune and eval encode text with the one next to an HF-style model;
// train writes the tokenizer it encoded with next to its model and merge carries the base's on, so the next command
// reads the text the same way; generate encodes a --prompt and decodes its output with it.
#include "test_util.h"
#include "tests/tools/cli_test_util.h"
#include "tests/tools/tiny_tokenizer.h"

#include <cmath>
#include <fstream>

#include "models/checkpoint.h"
#include "tools/data/text.h"
#include "tools/run_config.h"

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {
void write_notes(const std::filesystem::path& path) {
    std::string text;
    for (int i = 0; i < 200; ++i) text += "the world of hello 1999 é ";
    std::ofstream(path) << text;
}
}  // namespace

TEST_CASE("tokenizer: finetune and eval encode text with the tokenizer.json next to an HF-style model") {
    const auto dir = scratch_dir("data_bpe_cli");
    models::save_model((dir / "model").string(),
                       models::create_model({{"model_type", "mamba"}, {"vocab_size", 301}, {"hidden_size", 8},
                                             {"num_hidden_layers", 1}, {"state_size", 4}, {"intermediate_size", 16},
                                             {"time_step_rank", 1}}, 1));
    write_tokenizer(dir / "model", tiny_tokenizer_json());
    write_notes(dir / "notes.txt");
    REQUIRE(cli({"finetune", "--model", (dir / "model").string(), "--data", (dir / "notes.txt").string(), "--steps", "2",
                 "--seq-len", "16", "--set", "train.batch_size=2,train.eval_batches=1", "--out", (dir / "ft").string(),
                 "--quiet"}) == 0);
    CHECK(cli({"eval", "--model", (dir / "model").string(), "--data", (dir / "notes.txt").string(), "--seq-len", "16"}) == 0);
    // the same text as bytes needs a 256-token model; this 301-token model also accepts it with --tokenizer
    CHECK(cli({"eval", "--model", (dir / "model").string(), "--data", (dir / "notes.txt").string(), "--seq-len", "16",
               "--tokenizer", (dir / "model" / "tokenizer.json").string()}) == 0);
    // bits per byte: the loss of the targets evaluated over the bytes they decode to (until 2026-12-07 the whole
    // validation split's mean bytes per token stood in for the latter); here the first two windows' 32 targets
    const auto one = cli_captured({"eval", "--model", (dir / "model").string(), "--data", (dir / "notes.txt").string(),
                                   "--seq-len", "16", "--set", "train.batch_size=2,train.eval_batches=1,"
                                   "data.val_fraction=0.1"}, 1);
    REQUIRE(one.first == 0);
    const auto metrics = nlohmann::json::parse(one.second);
    const data::BpeTokenizer tok = data::BpeTokenizer::from_file((dir / "model" / "tokenizer.json").string());
    const data::TokenDataset notes = data::TokenDataset::from_bpe_file((dir / "notes.txt").string(), tok, 0.1);
    REQUIRE(notes.val.size() > 33);
    const std::string target_text = tok.decode(std::vector<int64_t>(notes.val.begin() + 1, notes.val.begin() + 33));
    CHECK(metrics["bits_per_byte"].get<double>() == doctest::Approx(metrics["loss"].get<double>() * 32 /
                                                                    (std::log(2.0) * double(target_text.size()))));
    const double split_mean = double(tok.decode(notes.val).size()) / double(notes.val.size());
    CHECK(std::fabs(split_mean - double(target_text.size()) / 32) > 1e-3);  // where the earlier figure was off
    // study reads the text as the model does: the tokenizer next to it, or --tokenizer (it read bytes, whatever the
    // model's tokenizer, until 2026-12-07: a damaged one shows it is read now)
    CHECK(cli({"study", "--model", (dir / "model").string(), "--data", (dir / "notes.txt").string(), "--seq-len", "8",
               "--batch-size", "1", "--out", (dir / "study").string()}) == 0);
    std::ofstream(dir / "broken.json") << "{";
    CHECK(cli({"study", "--model", (dir / "model").string(), "--data", (dir / "notes.txt").string(), "--seq-len", "8",
               "--batch-size", "1", "--out", (dir / "study2").string(), "--tokenizer", (dir / "broken.json").string()}) == 1);
}

TEST_CASE("tokenizer: train keeps its tokenizer next to the model, merge carries it on, generate reads and writes text") {
    const auto dir = scratch_dir("tokenizer_commands");
    std::filesystem::create_directories(dir / "tok");
    const std::string tokenizer = write_tokenizer(dir / "tok", tiny_tokenizer_json());
    write_notes(dir / "notes.txt");
    const std::string notes = (dir / "notes.txt").string(), model = (dir / "run" / "model").string();
    REQUIRE(cli({"train", "--data", notes, "--tokenizer", tokenizer, "--steps", "2", "--seq-len", "16", "--set",
                 "train.batch_size=2,train.eval_batches=1", "--out", (dir / "run").string(), "--quiet"}) == 0);
    CHECK(std::filesystem::exists(dir / "run" / "model" / "tokenizer.json"));
    // eval finds it there: the same figures as with --tokenizer (it read bytes before, silently: the 301-token model
    // takes byte ids too)
    const auto found = cli_captured({"eval", "--model", model, "--data", notes, "--seq-len", "16"}, 1);
    const auto named = cli_captured({"eval", "--model", model, "--data", notes, "--seq-len", "16", "--tokenizer", tokenizer}, 1);
    REQUIRE(found.first == 0);
    CHECK(found.second == named.second);
    // generate: the prompt encoded, the output decoded (greedy, so it continues the prompt's text)
    const auto text = cli_captured({"generate", "--model", model, "--prompt", "the world", "--max-new-tokens", "4"}, 1);
    REQUIRE(text.first == 0);
    CHECK(text.second.rfind("the world", 0) == 0);
    // the same with --ids prints ids: 258 is " the" (a merge), so the prompt was not read as bytes
    const auto ids = cli_captured({"generate", "--model", model, "--ids", "116,104,101,258", "--max-new-tokens", "2",
                                   "--stop-ids", "0"}, 1);
    REQUIRE(ids.first == 0);
    CHECK(ids.second.rfind("116,104,101,258,", 0) == 0);
    CHECK(cli({"generate", "--model", model, "--prompt", "x", "--top-p", "1.5"}) == 2);
    CHECK(cli({"generate", "--model", model, "--prompt", "x", "--stop-ids", "a"}) == 2);
    CHECK(cli({"generate", "--model", model, "--prompt", "x", "--stop-ids", "301"}) == 2);
    // a tokenizer larger than the model's vocabulary is refused
    nlohmann::json big = tiny_tokenizer_json();
    big["added_tokens"][0]["id"] = 400;
    std::filesystem::create_directories(dir / "big");
    CHECK(cli({"generate", "--model", model, "--prompt", "x", "--tokenizer", write_tokenizer(dir / "big", big)}) == 1);
    // merge writes the base's tokenizer files beside the merged weights
    REQUIRE(cli({"finetune", "--model", model, "--data", notes, "--steps", "1", "--seq-len", "16", "--peft",
                 R"({"peft_type": "LORA", "r": 1})", "--set", "train.batch_size=2,train.eval_batches=1", "--out",
                 (dir / "ft").string(), "--quiet"}) == 0);
    REQUIRE(cli({"merge", "--model", model, "--adapter", (dir / "ft" / "adapter").string(), "--out",
                 (dir / "merged").string()}) == 0);
    CHECK(std::filesystem::exists(dir / "merged" / "tokenizer.json"));
}

TEST_CASE("tokenizer: an adapter keeps the tokenizer it was fine-tuned with, and eval, generate, merge and combine read it") {
    const auto dir = scratch_dir("adapter_tokenizer");
    const std::string base = (dir / "base").string(), notes = (dir / "notes.txt").string();
    models::save_model(base, models::create_model({{"model_type", "mamba"}, {"vocab_size", 301}, {"hidden_size", 8},
                                                   {"num_hidden_layers", 1}, {"state_size", 4}, {"intermediate_size", 16},
                                                   {"time_step_rank", 1}}, 1));
    const std::string base_tokenizer = write_tokenizer(dir / "base", tiny_tokenizer_json());
    nlohmann::json other = tiny_tokenizer_json();  // without the "1 9" merge: "1999" reads as four bytes
    other["model"]["merges"].erase(other["model"]["merges"].size() - 1);
    other["model"]["vocab"].erase("19");
    std::filesystem::create_directories(dir / "other");
    const std::string other_tokenizer = write_tokenizer(dir / "other", other);
    write_notes(dir / "notes.txt");
    auto finetune = [&](const std::string& out, std::vector<std::string> extra) {
        std::vector<std::string> args = {"finetune", "--model", base, "--data", notes, "--steps", "1", "--seq-len", "16",
                                         "--peft", R"({"peft_type": "LORA", "r": 1})", "--set",
                                         "train.batch_size=2,train.eval_batches=1", "--out", (dir / out).string(), "--quiet"};
        args.insert(args.end(), extra.begin(), extra.end());
        REQUIRE(cli(args) == 0);
        return (dir / out / "adapter").string();
    };
    const std::string with_base = finetune("ft_base", {}), with_other = finetune("ft_other", {"--tokenizer", other_tokenizer});
    CHECK(file_bytes(std::filesystem::path(with_base) / "tokenizer.json") == file_bytes(base_tokenizer));
    CHECK(file_bytes(std::filesystem::path(with_other) / "tokenizer.json") == file_bytes(other_tokenizer));
    // eval reads the adapter's (until 2026-12-07 it read the base's: the text the adapter never saw)
    auto eval = [&](std::vector<std::string> extra) {
        std::vector<std::string> args = {"eval", "--data", notes, "--seq-len", "16", "--set", "train.eval_batches=1"};
        args.insert(args.end(), extra.begin(), extra.end());
        return cli_captured(args, 1);
    };
    const auto found = eval({"--model", base, "--adapter", with_other});
    const auto named = eval({"--model", base, "--adapter", with_other, "--tokenizer", other_tokenizer});
    const auto base_read = eval({"--model", base, "--adapter", with_other, "--tokenizer", base_tokenizer});
    REQUIRE(found.first == 0);
    CHECK(found.second == named.second);
    CHECK(found.second != base_read.second);
    // two adapters fine-tuned on differently encoded text are not evaluated on one encoding
    const auto mixed = cli_captured({"eval", "--model", base, "--data", notes, "--seq-len", "16", "--adapter",
                                     with_base + "," + with_other}, 2);
    CHECK(mixed.first == 1);
    CHECK(mixed.second.find("different tokenizers") != std::string::npos);
    // eval takes --model and --adapter from the run config (it used to accept "adapter" there and ignore it)
    const std::string cfg = (dir / "eval.json").string();
    std::ofstream(cfg) << nlohmann::json{{"base_model", base}, {"adapter", with_other},
                                         {"data", {{"kind", "text"}, {"path", notes}}},
                                         {"train", {{"seq_len", 16}, {"eval_batches", 1}}}}.dump();
    const auto from_config = cli_captured({"eval", "--config", cfg}, 1);
    REQUIRE(from_config.first == 0);
    CHECK(from_config.second == found.second);
    // finetune --adapter trains on with the adapter's tokenizer and writes it on (the base's would re-encode the text)
    const std::string on = (dir / "ft_on").string();
    REQUIRE(cli({"finetune", "--model", base, "--data", notes, "--steps", "1", "--seq-len", "16", "--adapter",
                 with_other, "--set", "train.batch_size=2,train.eval_batches=1", "--out", on, "--quiet"}) == 0);
    CHECK(file_bytes(std::filesystem::path(on) / "adapter" / "tokenizer.json") == file_bytes(other_tokenizer));
    CHECK(models::read_json_file((std::filesystem::path(on) / "run_config.json").string())["data"]["tokenizer"] ==
          (std::filesystem::path(with_other) / "tokenizer.json").string());
    // merge and combine carry the adapter's tokenizer on; generate encodes its prompt with it
    REQUIRE(cli({"merge", "--model", base, "--adapter", with_other, "--out", (dir / "merged").string()}) == 0);
    CHECK(file_bytes(dir / "merged" / "tokenizer.json") == file_bytes(other_tokenizer));
    REQUIRE(cli({"combine", "--model", base, "--adapter", with_other, "--weights", "1", "--out", (dir / "combined").string()}) == 0);
    CHECK(file_bytes(dir / "combined" / "tokenizer.json") == file_bytes(other_tokenizer));
    CHECK(cli({"combine", "--model", base, "--adapter", with_base + "," + with_other, "--weights", "1,1", "--out",
               (dir / "combined2").string()}) == 1);
    CHECK(!std::filesystem::exists(dir / "combined2"));  // refused before writing anything
    const auto ids = cli_captured({"generate", "--model", base, "--adapter", with_other, "--prompt", "1999",
                                   "--max-new-tokens", "1"}, 1);
    REQUIRE(ids.first == 0);
    CHECK(ids.second.rfind("1999", 0) == 0);
    CHECK(cli({"generate", "--model", base, "--adapter", with_base + "+" + with_other, "--prompt", "x"}) == 1);  // which?
}

TEST_CASE("run config sections a command does not read draw a warning: peft for train, model for finetune") {
    const auto dir = scratch_dir("unread_sections");
    const std::string cfg = (dir / "train.json").string();
    std::ofstream(cfg) << R"({"peft": {"peft_type": "LORA"}, "train": {"steps": 1, "batch_size": 2, "eval_batches": 1}})";
    const auto train = cli_captured({"train", "--config", cfg, "--out", (dir / "run").string(), "--quiet"}, 2);
    REQUIRE(train.first == 0);
    CHECK(train.second.find("warning: the run config's \"peft\" is not read by train") != std::string::npos);
    const std::string ft_cfg = (dir / "ft.json").string();
    std::ofstream(ft_cfg) << nlohmann::json{{"model", {{"model_type", "mamba"}}}, {"base_model", (dir / "run" / "model").string()},
                                            {"train", {{"steps", 1}, {"batch_size", 2}, {"eval_batches", 1}}}}.dump();
    const auto ft = cli_captured({"finetune", "--config", ft_cfg, "--out", (dir / "ft").string(), "--quiet"}, 2);
    REQUIRE(ft.first == 0);
    CHECK(ft.second.find("warning: the run config's \"model\" is not read by finetune") != std::string::npos);
    CHECK(tools::unread_sections(tools::resolve_run_config(nlohmann::json::object(), "test"), "train").empty());
}

TEST_CASE("tokenizer: a model or adapter written where an earlier one was does not keep the earlier one's tokenizer") {
    // train, finetune, merge and combine wrote the tokenizer files they had and left the others: a run on bytes into a
    // directory that held a BPE run's output kept its tokenizer.json, and eval then read the text with it
    namespace fs = std::filesystem;
    const auto dir = scratch_dir("stale_tokenizer");
    const nlohmann::json arch = {{"model_type", "mamba"}, {"vocab_size", 301}, {"hidden_size", 8},
                                 {"num_hidden_layers", 1}, {"state_size", 4}, {"intermediate_size", 16},
                                 {"time_step_rank", 1}};
    const std::string with_tok = (dir / "with_tok").string(), plain = (dir / "plain").string();
    models::save_model(with_tok, models::create_model(arch, 1));
    models::save_model(plain, models::create_model(arch, 1));
    const std::string tokenizer = write_tokenizer(dir / "with_tok", tiny_tokenizer_json());
    std::ofstream(dir / "with_tok" / "tokenizer_config.json") << R"({"model_max_length": 64})";
    write_notes(dir / "notes.txt");
    const std::string notes = (dir / "notes.txt").string();
    const std::vector<std::string> small = {"--data", notes, "--steps", "1", "--seq-len", "16", "--set",
                                            "train.batch_size=2,train.eval_batches=1", "--quiet"};
    auto run = [&](std::vector<std::string> args, const std::vector<std::string>& extra) {
        args.insert(args.end(), extra.begin(), extra.end());
        return cli(args);
    };
    // train: BPE, then bytes, into one --out
    std::ofstream(dir / "train.json") << nlohmann::json{{"model", arch}}.dump();
    const std::string run_dir = (dir / "run").string();
    const std::vector<std::string> train = {"train", "--config", (dir / "train.json").string(), "--out", run_dir};
    REQUIRE(run(train, {"--data", notes, "--tokenizer", tokenizer, "--steps", "1", "--seq-len", "16", "--set",
                        "train.batch_size=2,train.eval_batches=1", "--quiet"}) == 0);
    CHECK(fs::exists(fs::path(run_dir) / "model" / "tokenizer.json"));
    REQUIRE(run(train, small) == 0);
    CHECK_FALSE(fs::exists(fs::path(run_dir) / "model" / "tokenizer.json"));
    // finetune: the same for OUT/adapter
    const std::string ft = (dir / "ft").string();
    const std::vector<std::string> finetune = {"finetune", "--model", plain, "--peft", R"({"peft_type": "LORA", "r": 1})",
                                               "--out", ft};
    REQUIRE(run(finetune, {"--tokenizer", tokenizer, "--data", notes, "--steps", "1", "--seq-len", "16", "--set",
                           "train.batch_size=2,train.eval_batches=1", "--quiet"}) == 0);
    const std::string bpe_adapter = (dir / "bpe_adapter").string();
    fs::copy(fs::path(ft) / "adapter", bpe_adapter);
    CHECK(fs::exists(fs::path(ft) / "adapter" / "tokenizer.json"));
    REQUIRE(run(finetune, small) == 0);
    CHECK_FALSE(fs::exists(fs::path(ft) / "adapter" / "tokenizer.json"));
    const std::string byte_adapter = (fs::path(ft) / "adapter").string();
    // merge: the base's tokenizer files, then a base without any, into one --out
    const std::string merged = (dir / "merged").string();
    REQUIRE(cli({"merge", "--model", with_tok, "--adapter", byte_adapter, "--out", merged}) == 0);
    CHECK(fs::exists(fs::path(merged) / "tokenizer.json"));
    CHECK(fs::exists(fs::path(merged) / "tokenizer_config.json"));
    REQUIRE(cli({"merge", "--model", plain, "--adapter", byte_adapter, "--out", merged}) == 0);
    CHECK_FALSE(fs::exists(fs::path(merged) / "tokenizer.json"));
    CHECK_FALSE(fs::exists(fs::path(merged) / "tokenizer_config.json"));
    // combine: an adapter with a tokenizer, then one without, into one --out
    const std::string combined = (dir / "combined").string();
    REQUIRE(cli({"combine", "--model", plain, "--adapter", bpe_adapter, "--weights", "1", "--out", combined}) == 0);
    CHECK(fs::exists(fs::path(combined) / "tokenizer.json"));
    REQUIRE(cli({"combine", "--model", plain, "--adapter", byte_adapter, "--weights", "1", "--out", combined}) == 0);
    CHECK_FALSE(fs::exists(fs::path(combined) / "tokenizer.json"));
}
