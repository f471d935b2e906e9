// `ssmtune inspect --model DIR [--peft CONFIG]`: a model summary — type, config, every parameter with its shape and
// size, per-layer and total counts — and, with --peft (a JSON file or inline JSON), which tensors that PEFT config
// would train, with HF's trainable-parameter line. Nothing is written.
// `ssmtune generate --model DIR [--adapter DIR[+DIR]] --prompt TEXT|--ids 1,2,3 ...`: greedy / temperature / top-k
// sampling with the recurrent step mode (O(1) work per token); byte-level models print text.
// Not here: tokenizer-based prompts for HF checkpoints (pass --ids; the BPE tokenizer lives in tools/data).
#include <cstdio>
#include <filesystem>
#include <map>

#include "models/checkpoint.h"
#include "peft/peft.h"
#include "tools/adapter_group.h"
#include "tools/commands.h"

namespace ssmtune::tools {

namespace {

// A config given inline ("{...}") or as a file path.
peft::Config peft_config_arg(const std::string& arg) {
    if (!arg.empty() && arg[0] == '{') return peft::Config::parse(arg, "--peft");
    return peft::Config::from_file(arg);
}

std::string with_commas(int64_t v) {
    std::string s = std::to_string(v);
    for (int i = int(s.size()) - 3; i > 0; i -= 3) s.insert(size_t(i), ",");
    return s;
}

}  // namespace

int run_inspect(int argc, char** argv) {
    Flags flags(argc, argv, {{"model", ""}, {"peft", ""}, {"adapter", ""}}, "inspect");
    if (flags.help()) {
        std::printf("usage: ssmtune inspect --model DIR [--peft CONFIG.json|'{json}'] [--adapter DIR]\n"
                    "Prints the model's layers, shapes and parameter counts; with --peft or --adapter, which tensors\n"
                    "that PEFT config trains and the trainable-parameter line.\n");
        return 0;
    }
    if (!flags.is_set("model")) throw UsageError("inspect: --model is required");
    models::AnyModel model = models::load_model(flags.str("model"));
    const auto config = models::read_json_file((std::filesystem::path(flags.str("model")) / "config.json").string());
    std::printf("model: %s (%s)\nconfig: %s\n\n", flags.str("model").c_str(), model.module().type_name().c_str(),
                config.dump().c_str());
    std::map<std::string, int64_t> per_group;
    std::printf("%-56s %-16s %12s\n", "parameter", "shape", "size");
    for (auto& [name, t] : model.module().named_parameters()) {
        std::printf("%-56s %-16s %12s\n", name.c_str(), shape_str(t.shape()).c_str(), with_commas(t.numel()).c_str());
        // group by layer: "backbone.layers.3" / "s4_layers.1", else the first name component
        std::string group = name.substr(0, name.find('.'));
        for (const char* key : {"layers.", "s4_layers."}) {
            const size_t p = name.find(key);
            if (p != std::string::npos) group = name.substr(0, name.find('.', p + std::string(key).size()));
        }
        per_group[group] += t.numel();
    }
    std::printf("\n%-40s %14s\n", "group", "parameters");
    for (auto& [g, n] : per_group) std::printf("%-40s %14s\n", g.c_str(), with_commas(n).c_str());
    std::printf("%-40s %14s\n", "total", with_commas(model.module().num_parameters()).c_str());
    if (flags.is_set("peft") || flags.is_set("adapter")) {
        peft::Adapter a = flags.is_set("adapter") ? peft::load(model.module(), flags.str("adapter"))
                                                  : peft::apply(model.module(), peft_config_arg(flags.str("peft")));
        std::printf("\n%s trains:\n", a.config().peft_type().c_str());
        for (auto& [name, t] : a.named_parameters())
            std::printf("  %-60s %-16s %10s\n", name.c_str(), shape_str(t.shape()).c_str(), with_commas(t.numel()).c_str());
        std::printf("%s\n", a.trainable_report().c_str());
    }
    return 0;
}

int run_generate(int argc, char** argv) {
    Flags flags(argc, argv,
                {{"model", ""}, {"adapter", ""}, {"prompt", ""}, {"ids", ""}, {"max-new-tokens", "64"},
                 {"temperature", "0"}, {"top-k", "0"}, {"seed", "0"}},
                "generate");
    if (flags.help()) {
        std::printf("usage: ssmtune generate --model DIR [--adapter DIR[+DIR...]] (--prompt TEXT | --ids 1,2,3)\n"
                    "                        [--max-new-tokens 64] [--temperature 0] [--top-k 0] [--seed 0]\n"
                    "Continues the prompt token by token with the recurrent step mode. --temperature 0 is greedy.\n"
                    "--prompt encodes text as bytes (vocabulary 256 models); --ids gives token ids directly.\n");
        return 0;
    }
    if (!flags.is_set("model")) throw UsageError("generate: --model is required");
    if (flags.is_set("prompt") == flags.is_set("ids")) throw UsageError("generate: give exactly one of --prompt and --ids");
    models::AnyModel model = models::load_model(flags.str("model"));
    if (!model.lm) throw UsageError("generate: " + flags.str("model") + " is an S4D classifier; generation needs a language model");
    model.module().eval();
    std::unique_ptr<AdapterGroup> adapter;  // A+B: LoRA adapters active together
    if (flags.is_set("adapter")) adapter = std::make_unique<AdapterGroup>(model.module(), flags.str("adapter"));
    const int64_t V = model.lm->config().vocab_size;
    std::vector<int64_t> prompt;
    const bool bytes = flags.is_set("prompt");
    if (bytes) {
        SSMTUNE_CHECK(V >= 256, "--prompt encodes bytes, but this model's vocabulary has only ", V,
                      " tokens; fix: pass --ids");
        for (unsigned char c : flags.str("prompt")) prompt.push_back(c);
    } else {
        for (const std::string& item : flags.list("ids")) {
            try {
                size_t used = 0;
                const long long v = std::stoll(item, &used);
                if (used != item.size()) throw std::invalid_argument(item);
                prompt.push_back(v);
            } catch (const std::exception&) {
                throw UsageError("generate: --ids must be comma-separated integers, got '" + item + "'");
            }
        }
    }
    SSMTUNE_CHECK(!prompt.empty(), "generate: the prompt is empty");
    for (int64_t t : prompt) SSMTUNE_CHECK(t >= 0 && t < V, "generate: token id ", t, " is outside the vocabulary of ", V);
    models::GenerationOptions g;
    g.max_new_tokens = flags.integer("max-new-tokens");
    g.temperature = flags.number("temperature");
    g.top_k = flags.integer("top-k");
    g.seed = uint64_t(flags.integer("seed"));
    if (g.max_new_tokens < 0 || g.top_k < 0) throw UsageError("generate: --max-new-tokens and --top-k must be >= 0");
    const std::vector<int64_t> out = model.lm->generate(prompt, g);
    if (bytes && V == 256) {
        std::string text;
        for (int64_t t : out) text.push_back(char(t));
        std::printf("%s\n", text.c_str());
    } else {
        for (size_t i = 0; i < out.size(); ++i) std::printf("%s%lld", i ? "," : "", (long long)out[i]);
        std::printf("\n");
    }
    return 0;
}

}  // namespace ssmtune::tools
