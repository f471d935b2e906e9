// The training commands with --device cuda against the same runs on the CPU: `train` (the default Mamba LM on a
// synthetic task), `finetune` of that model (state offset, SDLoRA with its warm-up selection, prompt tuning copying
// token embeddings on the device), `eval` with the adapter and `finetune --adapter` on from it. Same seeds, so the
// logged losses agree to float rounding. Built when the tools are.
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "cuda/gpu_compare.h"
#include "tests/tools/cli_test_util.h"

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {

// The training losses of OUT/metrics.jsonl, in order.
std::vector<double> logged_losses(const std::filesystem::path& out) {
    std::ifstream in(out / "metrics.jsonl");
    std::vector<double> losses;
    for (std::string line; std::getline(in, line);) {
        const nlohmann::json rec = nlohmann::json::parse(line);
        if (!rec.contains("split")) losses.push_back(rec["loss"].get<double>());
    }
    return losses;
}

void check_same_losses(const std::filesystem::path& cpu, const std::filesystem::path& gpu) {
    const std::vector<double> a = logged_losses(cpu), b = logged_losses(gpu);
    REQUIRE(a.size() == b.size());
    REQUIRE(!a.empty());
    for (size_t i = 0; i < a.size(); ++i) CHECK(b[i] == doctest::Approx(a[i]).epsilon(1e-3));
}

}  // namespace

TEST_CASE("gpu: train, finetune and eval with --device cuda log the CPU run's losses") {
    const std::filesystem::path dir = scratch_dir("gpu_cli");
    const auto out = [&](const std::string& name, const std::string& device) { return (dir / (name + "_" + device)).string(); };
    for (const std::string device : {"cpu", "cuda"})
        REQUIRE(cli({"train", "--task", "selective_copying", "--steps", "6", "--batch-size", "4", "--device", device,
                     "--set", "train.log_every=1,train.eval_every=0", "--out", out("train", device), "--quiet"}) == 0);
    check_same_losses(out("train", "cpu"), out("train", "cuda"));
    const std::string base = out("train", "cpu") + "/model";
    for (const std::string peft : {R"({"peft_type": "STATE_OFFSET", "variant": "h"})",
                                   R"({"peft_type": "SDLORA", "r": 2, "warmup_steps": 3})",
                                   R"({"peft_type": "PROMPT", "num_virtual_tokens": 2})"}) {
        INFO(peft);
        const std::string name = peft.substr(15, 6);  // the peft_type's first letters: a directory name
        for (const std::string device : {"cpu", "cuda"})
            REQUIRE(cli({"finetune", "--model", base, "--peft", peft, "--task", "selective_copying", "--steps", "4",
                         "--batch-size", "4", "--device", device, "--set", "train.log_every=1,train.eval_every=0",
                         "--out", out(name, device), "--quiet"}) == 0);
        const auto peft_of = [&](const std::string& device) {  // SDLoRA: the dimensions its warm-up selected
            std::ifstream in(out(name, device) + "/run_config.json");
            return nlohmann::json::parse(in)["peft"];
        };
        CHECK(peft_of("cuda") == peft_of("cpu"));
        check_same_losses(out(name, "cpu"), out(name, "cuda"));
        CHECK(cli({"eval", "--model", base, "--adapter", out(name, "cuda") + "/adapter", "--task", "selective_copying",
                   "--batch-size", "4", "--device", "cuda"}) == 0);
        // on from the saved adapter (finetune --adapter): loaded on the host, moved with the model
        for (const std::string device : {"cpu", "cuda"})
            REQUIRE(cli({"finetune", "--model", base, "--adapter", out(name, "cpu") + "/adapter", "--task",
                         "selective_copying", "--steps", "3", "--batch-size", "4", "--device", device, "--set",
                         "train.log_every=1,train.eval_every=0", "--out", out(name + "_on", device), "--quiet"}) == 0);
        check_same_losses(out(name + "_on", "cpu"), out(name + "_on", "cuda"));
    }
}
