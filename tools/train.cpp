// `ssmtune train`, `ssmtune finetune`, `ssmtune eval`: the training commands around the shared loop.
//   train     builds a model (from "model" in the config, or a small default sized to the data) and trains it;
//             writes OUT/model (config.json + model.safetensors, and the tokenizer.json that encoded text data),
//             checkpoints, metrics.jsonl, loss.svg.
//   finetune  loads a trained model (--model DIR), applies a PEFT method (--peft JSON|FILE, default state-offset
//             tuning) and trains only its tensors; writes OUT/adapter, checkpoints, metrics, plots, and prints the
//             metrics before → after.
//   eval      loss / perplexity / accuracy / bits per byte of a model (+ --adapter) on the data.
// Every run writes its resolved config to OUT/run_config.json. Flags override the config file.
// Not here: the loop itself (trainer.cpp), data (tools/data/), the main job (quickstart.cpp).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/json_read.h"
#include "models/checkpoint.h"
#include "peft/lora_init.h"
#include "peft/peft.h"
#include "tools/adapter_group.h"
#include "tools/commands.h"
#include "tools/run_config.h"
#include "tools/train_common.h"
#include "tools/trainer.h"

namespace ssmtune::tools {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const char* kCommonHelp =
    "  --config FILE      run config (JSON; see tools/configs/); flags below override it\n"
    "  --set K=V,...      override any config field, e.g. --set train.lr=1e-3,data.task.span=64\n"
    "  --data PATH        text file (bytes), .safetensors with input_ids, or a Fashion-MNIST directory\n"
    "  --task NAME        built-in synthetic task: selective_copying, induction_heads, associative_recall\n"
    "  --tokenizer FILE   tokenizer.json (byte-level BPE) for text data; default: the one next to --model, if any\n"
    "  --out DIR          output directory (default runs/<command>)\n"
    "  --steps N --lr X --batch-size N --seq-len N --seed N --eval-every N\n"
    "  --device D         cpu (default), cuda or cuda:N: where the model trains (train.device)\n"
    "  --gradient-checkpointing  keep one layer's activations at a time, recompute in the backward pass\n"
    "                     (train.gradient_checkpointing: less memory, about 1.2x the step, the same results)\n"
    "  --resume           continue from OUT/checkpoints/last (bit-identical losses)\n"
    "  --quiet            no progress output\n";

// eval's subset: it trains nothing and writes nothing, so --out, --steps, --lr, --eval-every, --resume and --quiet
// are not its flags (until 2026-12-07 it took them and did nothing)
const char* kEvalHelp =
    "  --config FILE      run config (JSON; see tools/configs/); flags below override it\n"
    "  --set K=V,...      override any config field, e.g. --set train.eval_batches=8\n"
    "  --data PATH        text file (bytes), .safetensors with input_ids, or a Fashion-MNIST directory\n"
    "  --task NAME        built-in synthetic task: selective_copying, induction_heads, associative_recall\n"
    "  --tokenizer FILE   tokenizer.json (byte-level BPE) for text data\n"
    "  --batch-size N --seq-len N --seed N   (train.eval_batches batches of N are evaluated)\n"
    "  --device D         cpu (default), cuda or cuda:N\n";

std::map<std::string, std::string> common_flags(std::map<std::string, std::string> extra) {
    std::map<std::string, std::string> f = {{"config", ""},     {"set", ""},        {"data", ""},  {"task", ""},
                                            {"out", ""},        {"steps", ""},      {"tokenizer", ""},      {"lr", ""},    {"batch-size", ""},
                                            {"seq-len", ""},    {"seed", ""},       {"eval-every", ""},     {"device", ""},
                                            {"resume", Flags::kSwitch}, {"quiet", Flags::kSwitch},
                                            {"gradient-checkpointing", Flags::kSwitch}};
    f.insert(extra.begin(), extra.end());
    return f;
}

}  // namespace

json resolve_from_flags(const Flags& flags, const std::string& command) {
    json user = json::object();
    if (flags.is_set("config")) user = models::read_json_file(flags.str("config"));
    json rc = resolve_run_config(user, flags.is_set("config") ? flags.str("config") : "run config");
    if (!flags.is_set("config") || !user.contains("out")) rc["out"] = "runs/" + command;
    if (flags.is_set("set")) apply_assignments(rc, flags.str("set"));
    if (flags.is_set("data")) {
        const std::string p = flags.str("data");
        rc["data"]["path"] = p;
        rc["data"]["kind"] = fs::is_directory(p) ? "fashion_mnist"
                             : fs::path(p).extension() == ".safetensors" ? "tokens" : "text";
    }
    if (flags.is_set("tokenizer")) rc["data"]["tokenizer"] = flags.str("tokenizer");
    if (flags.is_set("task")) {
        rc["data"]["kind"] = "synthetic";
        rc["data"]["task"]["name"] = flags.str("task");
    }
    if (flags.is_set("out")) rc["out"] = flags.str("out");
    auto set_int = [&](const char* flag, const char* key) {
        if (flags.is_set(flag)) rc["train"][key] = flags.integer(flag);
    };
    set_int("steps", "steps");
    set_int("batch-size", "batch_size");
    set_int("seq-len", "seq_len");
    if (flags.is_set("seed")) rc["train"]["seed"] = flags.seed();
    set_int("eval-every", "eval_every");
    if (flags.is_set("lr")) rc["train"]["lr"] = flags.number("lr");
    if (flags.is_set("device")) rc["train"]["device"] = flags.str("device");
    if (flags.is_set("gradient-checkpointing")) rc["train"]["gradient_checkpointing"] = true;
    return resolve_run_config(rc, "run config with flags");  // re-checked after overrides
}

namespace {

// An integer of the train section, at least `min` (json_integer: a JSON integer or an integral float within ±2^53).
int64_t train_integer(const json& t, const char* key, int64_t min) {
    return json_integer(t[key], std::string("train.") + key, min);
}

// A finite number of the train section within [lo, hi].
double train_number(const json& t, const char* key, double lo, double hi = HUGE_VAL) {
    const json& v = t[key];
    const double d = v.is_number() ? v.get<double>() : std::nan("");
    SSMTUNE_CHECK(std::isfinite(d) && d >= lo && d <= hi, "train.", key, " must be a finite number in [", lo, ", ",
                  hi, "], got ", v.dump());
    return d;
}

}  // namespace

TrainLoopOptions loop_options(const json& rc, bool resume, bool quiet) {
    const json& t = rc["train"];
    TrainLoopOptions o;
    o.steps = train_integer(t, "steps", 1);
    o.lr = train_number(t, "lr", 0);
    o.weight_decay = train_number(t, "weight_decay", 0);
    SSMTUNE_CHECK(t["schedule"].is_string(), "train.schedule must be a string, got ", t["schedule"].dump());
    o.schedule = t["schedule"];
    o.warmup_steps = std::min(train_integer(t, "warmup_steps", 0), o.steps);  // short runs: warm up the whole run
    o.min_lr_ratio = train_number(t, "min_lr_ratio", 0, 1);
    o.grad_clip = train_number(t, "grad_clip", 0);
    SSMTUNE_CHECK(t["no_decay"].is_array(), "train.no_decay must be a list of parameter names or name parts, got ",
                  t["no_decay"].dump(), "; fix: [] to decay every tensor");
    for (const json& entry : t["no_decay"]) {
        SSMTUNE_CHECK(entry.is_string() && !entry.get<std::string>().empty(), "train.no_decay entries must be "
                      "non-empty parameter names or name parts, got ", entry.dump(), "; fix: e.g. [\"mixer.A_log\", "
                      "\"norm\"], or [] to decay every tensor");
        o.no_decay.push_back(entry.get<std::string>());
    }
    if (!t["ssm_lr"].is_null()) {
        o.ssm_lr = train_number(t, "ssm_lr", 0);
        SSMTUNE_CHECK(o.ssm_lr > 0, "train.ssm_lr must be positive or null, got 0; fix: e.g. 0.001 (example.py's S4D "
                      "kernel lr), or null for the run's lr");
    }
    auto adam_beta = [&](const char* key) {
        const double beta = train_number(t, key, 0, 1);
        SSMTUNE_CHECK(beta < 1, "train.", key, " must lie in [0, 1), got 1; fix: e.g. 0.9 / 0.999 (PyTorch's "
                      "defaults)");
        return beta;
    };
    o.adam_beta1 = adam_beta("adam_beta1");
    o.adam_beta2 = adam_beta("adam_beta2");
    o.adam_epsilon = train_number(t, "adam_epsilon", 0);
    o.grad_accum_steps = train_integer(t, "gradient_accumulation_steps", 1);
    o.log_every = std::max<int64_t>(1, train_integer(t, "log_every", 0));
    o.eval_every = train_integer(t, "eval_every", 0);
    o.save_every = train_integer(t, "save_every", 0);
    SSMTUNE_CHECK(t["best_metric"].is_string() && !t["best_metric"].get<std::string>().empty(),
                  "train.best_metric must be the name of an evaluated metric, got ", t["best_metric"].dump(),
                  "; fix: e.g. \"loss\" or \"accuracy\"");
    o.best_metric = t["best_metric"];
    o.early_stopping_patience = train_integer(t, "early_stopping_patience", 0);
    o.early_stopping_threshold = train_number(t, "early_stopping_threshold", 0);
    SSMTUNE_CHECK(o.early_stopping_patience == 0 || o.eval_every > 0, "train.early_stopping_patience ",
                  o.early_stopping_patience, " needs evaluations during the run, but train.eval_every is 0; fix: e.g. "
                  "--set train.eval_every=100");
    SSMTUNE_CHECK(t["load_best_at_end"].is_boolean(), "train.load_best_at_end must be true or false, got ",
                  t["load_best_at_end"].dump());
    o.load_best_at_end = t["load_best_at_end"];
    o.out_dir = rc["out"];
    o.resume = resume;
    o.quiet = quiet;
    return o;
}

void warn_unread_sections(const json& rc, const std::string& command) {
    for (const std::string& s : unread_sections(rc, command))
        std::fprintf(stderr, "warning: %s; fix: remove it\n", s.c_str());
}

void print_metrics(const char* label, const std::map<std::string, double>& m) {
    std::printf("%s:", label);
    for (auto& [k, v] : m) std::printf(" %s %.4f", k.c_str(), v);
    std::printf("\n");
}

// The model to train: the run config's `model` as written when it names its model_type and --model-type agrees (or
// is not given); otherwise the default model for the data and type, with the fields the section does give on top —
// `--set model.hidden_size=32` or `--model-type longhorn` over a Mamba section changes that, not the whole model
// (until 2026-12-07 the first was an error, "missing model_type", and the second dropped the section's fields
// without a word). A section of the other family (S4D's fields for a language model, or the reverse) cannot carry
// over: a warning names its fields.
json resolve_model_config(const Workload& w, const json& section, const std::string& flag_type) {
    SSMTUNE_CHECK(section.is_null() || section.is_object(), "run config: \"model\" must be an object of model "
                  "config fields (or null: the default model), got ", section.dump().substr(0, 80));
    const std::string written = section.is_object() ? section.value("model_type", "") : "";
    if (!written.empty() && (flag_type.empty() || flag_type == written)) return section;
    json base = default_model_config(w, flag_type);
    if (!flag_type.empty()) {
        if ((flag_type == "s4d") != (base["model_type"] == "s4d"))
            throw UsageError("train: --model-type " + flag_type + " does not fit data kind " + w.data_kind);
        base["model_type"] = flag_type;
    }
    if (!section.is_object()) return base;
    const bool same_family = written.empty() || (written == "s4d") == (base["model_type"] == "s4d");
    std::string dropped;
    for (auto& [k, v] : section.items()) {
        if (k == "model_type") continue;
        if (same_family)
            base[k] = v;
        else
            dropped += (dropped.empty() ? "\"" : ", \"") + k + "\"";
    }
    if (!dropped.empty())
        std::fprintf(stderr, "warning: --model-type %s leaves out the %s model section's field(s) %s (the default %s "
                     "model for the data is used)\n", flag_type.c_str(), written.c_str(), dropped.c_str(),
                     flag_type.c_str());
    return base;
}

int run_train(int argc, char** argv) {
    Flags flags(argc, argv, common_flags({{"model-type", ""}}), "train");
    if (flags.help()) {
        std::printf("usage: ssmtune train [options]\nTrains a model from scratch (Mamba, Longhorn or S4D) on a dataset.\n"
                    "  --model-type T     mamba | longhorn | s4d (default: mamba for token data, s4d for images; mamba or\n"
                    "                     longhorn read images as pixel tokens in pixel or permuted order, and as\n"
                    "                     real-valued frames through an input layer in row order)\n%s",
                    kCommonHelp);
        return 0;
    }
    json rc = resolve_from_flags(flags, "train");
    warn_unread_sections(rc, "train");
    auto w = load_workload_data(rc);
    rc["model"] = resolve_model_config(*w, rc["model"], flags.is_set("model-type") ? flags.str("model-type") : "");
    const json& model_cfg = rc["model"];
    if (model_cfg.is_object() && model_cfg.value("model_type", "") != "s4d") {  // (S4D's own format refuses them)
        std::string unknown;
        for (const std::string& k : models::LMConfig::unknown_fields(model_cfg))
            unknown += (unknown.empty() ? "\"" : ", \"") + k + "\"";
        if (!unknown.empty())
            std::fprintf(stderr, "warning: model config field(s) %s are not read (typos leave the defaults); the "
                         "fields read: hidden_size, num_hidden_layers, state_size, expand, intermediate_size, "
                         "conv_kernel, time_step_rank, vocab_size, use_bias, use_conv_bias, tie_word_embeddings, "
                         "input_size, layer_norm_epsilon, time_step_*\n", unknown.c_str());
    }
    // before allocating: weights (+ gradients and AdamW's moments where they stay on the host)
    check_model_fits_memory(models::described_parameters(model_cfg, "model config"),
                            rc["train"]["device"] == "cpu", "the model config");
    models::AnyModel model = models::create_model(model_cfg, rc["train"]["seed"].get<uint64_t>(), "model config");
    attach_model(*w, model, rc);
    check_batch_fits_memory(*w, /*training=*/true);
    model.module().to(w->device);  // the same initial weights on every device
    if (!flags.is_set("resume")) set_aside_earlier_run(rc["out"]);
    fs::create_directories(rc["out"].get<std::string>());
    models::write_json_file((fs::path(rc["out"].get<std::string>()) / "run_config.json").string(), rc);
    const bool quiet = flags.is_set("quiet");
    if (!quiet)
        std::printf("training %s (%lld parameters) on %s data on %s; output in %s\n", model.model_type.c_str(),
                    (long long)model.module().num_parameters(), w->data_kind.c_str(), w->device.str().c_str(),
                    rc["out"].get<std::string>().c_str());
    TrainHooks hooks = model_hooks(*w, model.module().named_parameters(),
                                   [model](const std::string& dir) { models::save_model(dir, model); },
                                   [model](const std::string& dir) {
                                       models::ModelWeights(dir).load_into(model.module());
                                   });
    TrainResult r = run_training(loop_options(rc, flags.is_set("resume"), quiet), hooks);
    const std::string out_model = (fs::path(rc["out"].get<std::string>()) / "model").string();
    models::save_model(out_model, model);
    // finetune, eval and generate read text with the tokenizer next to the model
    models::install_tokenizer(w->tokenizer_path, out_model);  // ("": none, and no earlier run's either)
    auto plots = plot_run(rc["out"]);
    if (!quiet) {
        print_metrics(r.loaded_best ? "best (loaded at the end)" : "final", r.loaded_best ? r.best_eval : r.last_eval);
        std::printf("model: %s\nplot: %s\n", out_model.c_str(), plots.front().c_str());
    }
    return r.interrupted ? 130 : 0;
}

int run_finetune(int argc, char** argv) {
    Flags flags(argc, argv, common_flags({{"model", ""}, {"peft", ""}, {"adapter", ""}}), "finetune");
    if (flags.help()) {
        std::printf("usage: ssmtune finetune --model DIR [--peft JSON|FILE | --adapter DIR] [options]\n"
                    "Applies a PEFT method to a trained model and trains only its tensors; writes OUT/adapter.\n"
                    "  --model DIR        the trained model (config.json + model.safetensors)\n"
                    "  --peft CONFIG      adapter config, inline JSON or a file (default STATE_OFFSET h)\n"
                    "  --adapter DIR      instead of a new adapter, train on a saved one (its config and tensors\n"
                    "                     are the start; a new optimizer and schedule; before = its metrics)\n%s",
                    kCommonHelp);
        return 0;
    }
    json rc = resolve_from_flags(flags, "finetune");
    if (flags.is_set("model")) rc["base_model"] = flags.str("model");
    if (flags.is_set("peft") && flags.is_set("adapter"))
        throw UsageError("finetune: --peft (a new adapter) and --adapter (train on a saved one) exclude each other");
    if (flags.is_set("peft")) {
        const std::string p = flags.str("peft");
        rc["peft"] = !p.empty() && p[0] == '{' ? peft::Config::parse(p, "--peft").json : peft::Config::from_file(p).json;
        rc["adapter"] = nullptr;  // the flag wins over the config's adapter, as flags do
    }
    if (flags.is_set("adapter")) {
        if (flags.str("adapter").empty()) throw UsageError("finetune: --adapter needs a directory");
        rc["adapter"] = flags.str("adapter");
        rc["peft"] = nullptr;  // its config is the adapter's own
    }
    if (!rc["base_model"].is_string()) throw UsageError("finetune: --model DIR (the trained base model) is required");
    if (!rc["adapter"].is_null() && !rc["adapter"].is_string())
        throw UsageError("finetune: the run config's adapter must be one adapter directory, got " + rc["adapter"].dump());
    if (rc["adapter"].is_string() && !rc["peft"].is_null())
        throw UsageError("finetune: the run config sets both \"peft\" (a new adapter) and \"adapter\" (train on a "
                         "saved one); drop one, or give --peft or --adapter");
    warn_unread_sections(rc, "finetune");
    if (rc["peft"].is_null() && rc["adapter"].is_null()) rc["peft"] = {{"peft_type", "STATE_OFFSET"}, {"variant", "h"}};
    const bool quiet = flags.is_set("quiet");
    FinetuneOutcome out = finetune_model(rc, flags.is_set("resume"), quiet);
    if (!quiet) {
        print_metrics("before", out.before);
        print_metrics("after ", out.after);
        std::printf("%s\nadapter: %s\n", out.report.c_str(), out.adapter_dir.c_str());
        const json& init = out.config.value("init_lora_weights", json(true));
        if (init.is_string() && peft::lora_init_changes_base(init.get<std::string>()))
            std::printf("(its init rewrote the base weights, which loading it on the original base does again; "
                        "`ssmtune convert --model %s --adapter %s --out DIR` writes it as a plain LoRA)\n",
                        rc["base_model"].get<std::string>().c_str(), out.adapter_dir.c_str());
    }
    return out.interrupted ? 130 : 0;
}

int run_eval(int argc, char** argv) {
    std::map<std::string, std::string> spec = common_flags({{"model", ""}, {"adapter", ""}});
    for (const char* unused : {"out", "steps", "lr", "eval-every", "resume", "quiet", "gradient-checkpointing"})
        spec.erase(unused);
    Flags flags(argc, argv, spec, "eval");
    if (flags.help()) {
        std::printf("usage: ssmtune eval --model DIR [--adapter DIR[,DIR...]] [--data PATH | --task NAME] [options]\n"
                    "(--model and --adapter default to the --config's base_model and adapter; text is read with the\n"
                    "adapters' tokenizer.json, else the model's, unless --tokenizer names one)\n"
                    "Prints loss, perplexity, accuracy (and bits per byte for text) on the validation/test data as one\n"
                    "JSON line. Several adapter directories (comma-separated) are loaded onto the one base model and\n"
                    "evaluated in turn (peft::AdapterSet): one line each, with its \"adapter\". An entry A+B evaluates\n"
                    "LoRA adapters active together (each module adds their terms, as HF's set_adapter([A, B])).\n%s",
                    kEvalHelp);
        return 0;
    }
    json rc = resolve_from_flags(flags, "eval");
    // the flags, else the config's base_model and adapter (a finetune config names its base; until 2026-12-07 eval
    // read neither from the config: "adapter" was accepted and ignored)
    if (flags.is_set("model")) rc["base_model"] = flags.str("model");
    if (flags.is_set("adapter")) rc["adapter"] = flags.str("adapter");
    if (!rc["base_model"].is_string()) throw UsageError("eval: --model DIR (or base_model in --config) is required");
    if (!rc["adapter"].is_null() && !rc["adapter"].is_string())
        throw UsageError("eval: the run config's adapter must be a directory (A,B,C for several), got " + rc["adapter"].dump());
    const std::string model_dir = rc["base_model"];
    std::vector<std::string> dirs;  // --adapter A,B,C
    if (rc["adapter"].is_string()) {
        std::stringstream list(rc["adapter"].get<std::string>());
        for (std::string d; std::getline(list, d, ',');)
            if (!d.empty()) dirs.push_back(d);
        if (dirs.empty()) throw UsageError("eval: --adapter needs a directory");
    }
    // text is read with the adapters' tokenizer (finetune writes the one it encoded with beside the adapter), else
    // the base model's (load_workload_data looks there), unless --tokenizer names one
    std::vector<std::string> adapter_parts;
    for (const std::string& d : dirs)
        for (const std::string& part : split_adapter_group(d)) adapter_parts.push_back(part);
    read_text_with_adapter_tokenizer(rc, model_dir, adapter_parts);
    auto w = load_workload_data(rc);
    models::AnyModel model = models::load_model(model_dir);
    auto print = [](const std::map<std::string, double>& m, const std::string& adapter) {
        json j = json::object();
        for (auto& [k, v] : m) j[k] = v;
        if (!adapter.empty()) j["adapter"] = adapter;
        std::printf("%s\n", j.dump().c_str());
    };
    if (dirs.size() <= 1 && (dirs.empty() || split_adapter_group(dirs[0]).size() == 1)) {
        std::unique_ptr<peft::Adapter> adapter;
        if (!dirs.empty()) adapter = std::make_unique<peft::Adapter>(peft::load(model.module(), dirs[0]));
        attach_model(*w, model, rc);
        if (adapter) adapter->to(w->device);  // the model and the adapter's tensors
        else model.module().to(w->device);
        model.module().eval();
        print(w->evaluate(), "");
        return 0;
    }
    // several: one base, every adapter directory loaded once, then each entry evaluated in turn, an entry A+B with
    // A and B active together
    peft::AdapterSet set(model.module());
    std::vector<std::vector<std::string>> groups;  // the set names of each entry
    for (const std::string& d : dirs) {
        std::vector<std::string> names;
        for (const std::string& part : split_adapter_group(d)) {
            names.push_back(adapter_set_name(part));
            const auto known = set.names();
            if (std::find(known.begin(), known.end(), names.back()) == known.end()) set.load(names.back(), part);
        }
        groups.push_back(names);
    }
    attach_model(*w, model, rc);
    for (size_t i = 0; i < dirs.size(); ++i) {
        set.set_active(groups[i]);
        for (const std::string& n : groups[i]) set.get(n).to(w->device);  // (the model is there after the first)
        model.module().eval();
        print(w->evaluate(), dirs[i]);
    }
    return 0;
}

}  // namespace ssmtune::tools
