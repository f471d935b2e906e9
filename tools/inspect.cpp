// `ssmtune inspect --model DIR [--peft CONFIG]`: a model summary — type, config, every parameter with its shape and
// size, per-layer and total counts — and, with --peft (a JSON file or inline JSON), which tensors that PEFT config
// would train, with HF's trainable-parameter line. Nothing is written.
// `ssmtune generate --model DIR [--adapter DIR[+DIR]] --prompt TEXT|--ids 1,2,3 ...`: greedy / temperature / top-k /
// top-p sampling with the recurrent step mode (O(1) work per token), stopping at --stop-ids. --prompt text is encoded
// with the tokenizer.json next to the model (or --tokenizer) and the output decoded with it; without one, as bytes.
// Not here: repetition penalties, beam search, HF's default stop at generation_config's eos (pass --stop-ids).
#include <cstdio>
#include <filesystem>
#include <map>

#include "models/checkpoint.h"
#include "peft/peft.h"
#include "tools/adapter_group.h"
#include "tools/commands.h"
#include "tools/data/bpe_tokenizer.h"

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
                {{"model", ""}, {"adapter", ""}, {"prompt", ""}, {"ids", ""}, {"tokenizer", ""}, {"max-new-tokens", "64"},
                 {"temperature", "0"}, {"top-k", "0"}, {"top-p", "1"}, {"stop-ids", ""}, {"seed", "0"}},
                "generate");
    if (flags.help()) {
        std::printf("usage: ssmtune generate --model DIR [--adapter DIR[+DIR...]] (--prompt TEXT | --ids 1,2,3)\n"
                    "                        [--tokenizer FILE] [--max-new-tokens 64] [--temperature 0] [--top-k 0]\n"
                    "                        [--top-p 1] [--stop-ids 0,...] [--seed 0]\n"
                    "Continues the prompt token by token with the recurrent step mode. --temperature 0 is greedy;\n"
                    "sampling filters as HF's: temperature, then top-k, then top-p. Generation ends after a token of\n"
                    "--stop-ids (e.g. the tokenizer's <|endoftext|>).\n"
                    "--prompt is encoded with --tokenizer (default: the tokenizer.json next to --model, if any) and\n"
                    "the output decoded with it; without a tokenizer, as bytes (vocabulary >= 256). --ids gives token\n"
                    "ids and prints ids.\n");
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
    const std::string tokenizer_path =
        flags.is_set("tokenizer") ? flags.str("tokenizer")
        : models::tokenizer_for(flags.str("model"), flags.is_set("adapter") ? split_adapter_group(flags.str("adapter"))
                                                                           : std::vector<std::string>{});
    std::unique_ptr<data::BpeTokenizer> tokenizer;
    std::vector<int64_t> prompt;
    const bool text = flags.is_set("prompt");
    if (text && !tokenizer_path.empty()) {
        tokenizer = std::make_unique<data::BpeTokenizer>(data::BpeTokenizer::from_file(tokenizer_path));
        SSMTUNE_CHECK(tokenizer->vocab_size() <= V, "the tokenizer ", tokenizer_path, " has ", tokenizer->vocab_size(),
                      " tokens but the model's vocabulary only ", V, "; fix: the tokenizer the model was trained with");
        prompt = tokenizer->encode(flags.str("prompt"));
    } else if (text) {
        SSMTUNE_CHECK(V >= 256, "--prompt encodes bytes, but this model's vocabulary has only ", V,
                      " tokens; fix: pass --ids");
        for (unsigned char c : flags.str("prompt")) prompt.push_back(c);
    } else {
        prompt = flags.integers("ids");
    }
    SSMTUNE_CHECK(!prompt.empty(), "generate: the prompt is empty");
    for (int64_t t : prompt) SSMTUNE_CHECK(t >= 0 && t < V, "generate: token id ", t, " is outside the vocabulary of ", V);
    models::GenerationOptions g;
    g.max_new_tokens = flags.integer("max-new-tokens");
    g.temperature = flags.number("temperature");
    g.top_k = flags.integer("top-k");
    g.top_p = flags.number("top-p");
    g.stop_ids = flags.integers("stop-ids");
    g.seed = flags.seed();
    if (g.max_new_tokens < 0 || g.top_k < 0) throw UsageError("generate: --max-new-tokens and --top-k must be >= 0");
    if (!(g.top_p >= 0 && g.top_p <= 1)) throw UsageError("generate: --top-p must be in [0, 1]");
    for (int64_t t : g.stop_ids)
        if (t < 0 || t >= V) throw UsageError("generate: --stop-ids " + std::to_string(t) + " is outside the vocabulary");
    const std::vector<int64_t> out = model.lm->generate(prompt, g);
    if (tokenizer) {
        // ids past the tokenizer's (a vocabulary padded to a multiple, as mamba-130m's 50280 for 50277) decode to
        // nothing, as HF's decode skips ids it does not know
        std::vector<int64_t> known;
        for (int64_t t : out)
            if (t < tokenizer->vocab_size()) known.push_back(t);
        if (known.size() < out.size())
            std::fprintf(stderr, "note: %zu generated ids are outside the tokenizer's %lld tokens and print as nothing\n",
                         out.size() - known.size(), (long long)tokenizer->vocab_size());
        std::printf("%s\n", tokenizer->decode(known).c_str());
    } else if (text && V == 256) {
        std::string bytes;
        for (int64_t t : out) bytes.push_back(char(t));
        std::printf("%s\n", bytes.c_str());
    } else {
        for (size_t i = 0; i < out.size(); ++i) std::printf("%s%lld", i ? "," : "", (long long)out[i]);
        std::printf("\n");
    }
    return 0;
}

}  // namespace ssmtune::tools
