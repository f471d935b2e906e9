// `ssmtune merge --model DIR --adapter DIR --out DIR`: folds an adapter into the base weights and writes a plain
// model directory (config.json + model.safetensors, and the base's tokenizer files) whose outputs equal the adapted
// model's. Works for LORA, SURM, BITFIT, SDLORA and FULL; the state, prompt, prefix and adapter methods say why they
// cannot merge.
// A LoRA on the embedding of a tied model unties the head (lm_head.weight is written, tie_word_embeddings false).
// `ssmtune convert --model DIR --adapter DIR --out DIR`: writes a PiSSA / OLoRA adapter (a LoRA whose init rewrote the
// base weights) as the equivalent plain LoRA of the original base, rank 2r (peft::Adapter::save_as_lora). Without
// --adapter it writes the model itself as config.json + model.safetensors from any form load_model reads
// (pytorch_model.bin, mamba_ssm's config and names).
// `--adapter A+B` merges LoRA adapters active together (HF's merge_and_unload with several active adapters).
// `ssmtune combine --model DIR --adapter A,B --weights 1,0.5 --out DIR`: a new LoRA adapter combining several
// (peft::AdapterSet::add_weighted_adapter, HF's add_weighted_adapter).
// Not here: safe_merge's NaN check (the merged weights are checked finite instead).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <initializer_list>

#include "models/checkpoint.h"
#include "peft/peft.h"
#include "tools/adapter_group.h"
#include "tools/commands.h"

namespace ssmtune::tools {

namespace {
// The checks merge and convert share: every `required` flag is given, and --out is not the input directory named
// by `kept` ("model" or "adapter"), which writing there would overwrite.
void check_inputs_out(const Flags& flags, const std::string& command, std::initializer_list<const char*> required,
                      const char* kept, const char* kept_what) {
    for (const char* name : required)
        if (!flags.is_set(name)) throw UsageError(command + ": --" + name + " is required");
    std::error_code ec;
    if (std::filesystem::exists(flags.str("out")) && std::filesystem::equivalent(flags.str("out"), flags.str(kept), ec))
        throw UsageError(command + ": --out must not be the " + kept_what + " directory");
}
}  // namespace

int run_merge(int argc, char** argv) {
    Flags flags(argc, argv, {{"model", ""}, {"adapter", ""}, {"out", ""}}, "merge");
    if (flags.help()) {
        std::printf("usage: ssmtune merge --model DIR --adapter DIR[+DIR...] --out DIR\n"
                    "Folds a PEFT adapter into the base weights and writes a plain model directory.\n"
                    "  --model DIR    the base model (config.json + model.safetensors)\n"
                    "  --adapter DIR  adapter_config.json + adapter_model.safetensors; A+B: LoRA adapters\n"
                    "                 active together, all merged\n"
                    "  --out DIR      where the merged model is written (must differ from --model)\n");
        return 0;
    }
    check_inputs_out(flags, "merge", {"model", "adapter", "out"}, "model", "base model's");
    models::AnyModel model = models::load_model(flags.str("model"));
    AdapterGroup adapter(model.module(), flags.str("adapter"));
    // the adapters' own tokenizer.json (they must agree), replacing the base's copy below; "" when none has one
    const std::string tokenizer = models::tokenizer_for("", split_adapter_group(flags.str("adapter")));
    const std::string type = adapter.peft_types();
    adapter.merge();  // refuses with the reason for methods that cannot merge
    for (auto& [name, t] : model.module().named_parameters())
        for (double v : t.to_vector<double>())
            SSMTUNE_CHECK(std::isfinite(v), "merged tensor ", name, " holds a non-finite value; the adapter in ",
                          flags.str("adapter"), " is damaged; no output written");
    models::save_model(flags.str("out"), model);
    models::copy_tokenizer_files(flags.str("model"), flags.str("out"));  // eval / generate read text with it
    if (!tokenizer.empty()) models::install_tokenizer(tokenizer, flags.str("out"));  // the adapters' own, if any
    std::printf("merged %s adapter %s into %s; wrote %s\n", type.c_str(), flags.str("adapter").c_str(),
                flags.str("model").c_str(), flags.str("out").c_str());
    return 0;
}

int run_convert(int argc, char** argv) {
    Flags flags(argc, argv, {{"model", ""}, {"adapter", ""}, {"out", ""}}, "convert");
    if (flags.help()) {
        std::printf("usage: ssmtune convert --model DIR --adapter DIR --out DIR\n"
                    "       ssmtune convert --model DIR --out DIR\n"
                    "With --adapter: writes a LoRA adapter whose init rewrote the base weights (init_lora_weights\n"
                    "\"pissa\", \"pissa_niter_K\", \"olora\") as the equivalent plain LoRA of the original base: rank\n"
                    "2r, init_lora_weights true, the same outputs (HF's path_initial_model_for_weight_conversion).\n"
                    "Without: writes the model in the form ssmtune writes (config.json with HF's field names +\n"
                    "model.safetensors, and its tokenizer files) from any form it reads: pytorch_model.bin or its\n"
                    "shards, mamba_ssm's config.json and original tensor names (state-spaces/mamba-*).\n"
                    "  --model DIR    the model (with --adapter: the base it was trained on, unmodified)\n"
                    "  --adapter DIR  the PiSSA / OLoRA adapter\n"
                    "  --out DIR      where the adapter or model is written (must differ from the input)\n");
        return 0;
    }
    if (!flags.is_set("adapter")) {  // a model, rewritten as config.json + model.safetensors
        check_inputs_out(flags, "convert", {"model", "out"}, "model", "model");
        const models::AnyModel model = models::load_model(flags.str("model"));
        models::save_model(flags.str("out"), model);
        models::copy_tokenizer_files(flags.str("model"), flags.str("out"));
        std::printf("wrote %s: the %s model of %s as config.json + model.safetensors (%zu tensors)\n",
                    flags.str("out").c_str(), model.model_type.c_str(), flags.str("model").c_str(),
                    model.module().state_dict().size());
        return 0;
    }
    check_inputs_out(flags, "convert", {"model", "adapter", "out"}, "adapter", "adapter's");
    models::AnyModel model = models::load_model(flags.str("model"));
    peft::Adapter adapter = peft::load(model.module(), flags.str("adapter"));
    adapter.save_as_lora(flags.str("out"));
    const std::string tokenizer = models::tokenizer_for("", {flags.str("adapter")});  // carried on, if it has one
    models::install_tokenizer(tokenizer, flags.str("out"));  // ("": none, and no earlier write's either)
    std::printf("wrote %s: the %s adapter %s as a plain LoRA of rank %lld on %s\n", flags.str("out").c_str(),
                adapter.config().json["init_lora_weights"].get<std::string>().c_str(), flags.str("adapter").c_str(),
                static_cast<long long>(2 * adapter.config().json["r"].get<int64_t>()), flags.str("model").c_str());
    return 0;
}

int run_combine(int argc, char** argv) {
    Flags flags(argc, argv, {{"model", ""}, {"adapter", ""}, {"weights", ""}, {"out", ""}, {"combination", "svd"},
                             {"svd-rank", "0"}, {"svd-clamp", "-1"}, {"density", "-1"}, {"majority-sign", "total"},
                             {"seed", "0"}}, "combine");
    if (flags.help()) {
        std::printf("usage: ssmtune combine --model DIR --adapter DIR,DIR[,...] --weights W,W[,...] --out DIR [options]\n"
                    "Writes a new LoRA adapter combining LoRA adapters of one base model, as HF PEFT's\n"
                    "add_weighted_adapter: config of the first adapter with r = lora_alpha = the new rank.\n"
                    "  --model DIR          the base model the adapters were trained on\n"
                    "  --adapter A,B        the LoRA adapter directories, in order (the first gives the config)\n"
                    "  --weights W,W        one weight per adapter (negative subtracts)\n"
                    "  --out DIR            where the combined adapter is written (none of the inputs)\n"
                    "  --combination TYPE   svd (default, HF's), cat (exact: rank = the sum), linear, ties,\n"
                    "                       ties_svd, dare_linear, dare_ties, dare_linear_svd, dare_ties_svd,\n"
                    "                       magnitude_prune, magnitude_prune_svd\n"
                    "  --svd-rank R         the *svd types' rank (default: the largest of the adapters')\n"
                    "  --svd-clamp Q        clamp the SVD factors to ± their Q-quantile (0..1; default none)\n"
                    "  --density D          fraction kept by ties / dare / magnitude_prune (required there)\n"
                    "  --majority-sign M    ties: total (default) or frequency\n"
                    "  --seed S             dare's random masks (default 0)\n");
        return 0;
    }
    for (const char* required : {"model", "adapter", "weights", "out"})
        if (!flags.is_set(required)) throw UsageError(std::string("combine: --") + required + " is required");
    const std::vector<std::string> dirs = flags.list("adapter");
    std::vector<double> weights;
    for (const std::string& w : flags.list("weights")) {
        char* end = nullptr;
        weights.push_back(std::strtod(w.c_str(), &end));
        if (w.empty() || *end != '\0' || !std::isfinite(weights.back()))
            throw UsageError("combine: --weights expects numbers separated by commas, got '" + flags.str("weights") + "'");
    }
    if (dirs.size() != weights.size())
        throw UsageError("combine: " + std::to_string(dirs.size()) + " adapter directories but " +
                         std::to_string(weights.size()) + " weights; give one weight per adapter");
    std::error_code ec;
    for (const std::string& dir : dirs) {
        if (dir.empty()) throw UsageError("combine: --adapter has an empty entry");
        if (std::filesystem::exists(flags.str("out")) && std::filesystem::equivalent(flags.str("out"), dir, ec))
            throw UsageError("combine: --out must not be one of the input adapter directories");
    }
    const std::string tokenizer = models::tokenizer_for("", dirs);  // the inputs' (they must agree), if any
    peft::WeightedAdapterOptions options;
    options.combination_type = flags.str("combination");
    options.svd_rank = flags.integer("svd-rank", 0, Flags::kMaxSize);  // 0: the largest of the adapters' ranks
    options.svd_clamp = flags.number("svd-clamp");
    options.density = flags.number("density");
    options.majority_sign_method = flags.str("majority-sign");
    options.seed = flags.seed();
    models::AnyModel model = models::load_model(flags.str("model"));
    peft::AdapterSet set(model.module());
    std::vector<std::string> names;
    for (const std::string& dir : dirs) {
        names.push_back(adapter_set_name(dir));
        set.load(names.back(), dir);
    }
    const peft::Adapter& combined = set.add_weighted_adapter(names, weights, "__combined__", options);
    combined.save(flags.str("out"));
    models::install_tokenizer(tokenizer, flags.str("out"));  // ("": none, and no earlier write's either)
    std::printf("combined %zu LoRA adapter(s) (%s) into %s: r %lld, %lld tensors\n", dirs.size(),
                dirs.size() == 1 ? "linear" : options.combination_type.c_str(), flags.str("out").c_str(),
                static_cast<long long>(combined.saved_config()["r"].get<int64_t>()),
                static_cast<long long>(combined.named_parameters().size()));
    return 0;
}

}  // namespace ssmtune::tools
