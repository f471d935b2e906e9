// The commands around a BPE tokenizer.json: finetune and eval encode text with the one next to an HF-style model;
// train writes the tokenizer it encoded with next to its model and merge carries the base's on, so the next command
// reads the text the same way; generate encodes a --prompt and decodes its output with it.
#include "test_util.h"
#include "tests/tools/cli_test_util.h"
#include "tests/tools/tiny_tokenizer.h"

#include <fstream>

#include "models/checkpoint.h"

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
