// Adapter configs: the JSON of adapter_config.json, with each method's defaults and strict key checking.
//
// Every type accepts HF PEFT's bookkeeping fields (task_type, base_model_name_or_path, revision, inference_mode,
// auto_mapping, peft_version) plus `layers_to_transform` and our `init_seed` (seed of random inits). LORA
// accepts HF LoraConfig's fields (rank_pattern, alpha_pattern and exclude_modules included); those naming features
// we do not implement are accepted only at their default value (e.g. lora_bias must be false), so an HF file that
// needs them is refused instead of misread.
// Not here: what the fields mean (each method's file), YAML configs.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "models/checkpoint.h"
#include "peft/lora_init.h"
#include "peft/peft.h"

namespace ssmtune::peft {

namespace {

using Json = nlohmann::json;

const Json& common_defaults() {
    static const Json j = {{"task_type", nullptr},         {"base_model_name_or_path", nullptr},
                           {"revision", nullptr},          {"inference_mode", false},
                           {"auto_mapping", nullptr},      {"peft_version", nullptr},
                           {"layers_to_transform", nullptr}, {"layers_pattern", nullptr},
                           {"init_seed", 0}};
    return j;
}

// LoRA fields shared by LORA and SDLORA (SDLoRA trains LoRA on the projections next to its SSM deltas).
Json lora_fields(const Json& targets) {
    return {{"r", 8}, {"lora_alpha", 8}, {"lora_dropout", 0.0}, {"target_modules", targets}, {"use_rslora", false}};
}

// Per type: defaults of its own fields. null target_modules = the model's documented default list.
const std::map<std::string, Json>& type_defaults() {
    static const std::map<std::string, Json> m = [] {
        std::map<std::string, Json> t;
        t["FULL"] = Json::object();
        t["LORA"] = lora_fields(nullptr);
        for (const char* k : {"bias", "fan_in_fan_out", "init_lora_weights", "modules_to_save", "rank_pattern",
                              "alpha_pattern", "use_dora", "exclude_modules", "lora_bias", "layer_replication",
                              "loftq_config", "megatron_config", "megatron_core", "target_parameters",
                              "trainable_token_indices", "eva_config", "corda_config", "use_qalora",
                              "qalora_group_size", "runtime_config", "alora_invocation_tokens", "arrow_config",
                              "ensure_weight_tying"})
            t["LORA"][k] = nullptr;
        t["LORA"]["bias"] = "none";
        t["LORA"]["fan_in_fan_out"] = false;
        t["LORA"]["init_lora_weights"] = true;
        t["LORA"]["use_dora"] = false;
        t["LORA"]["lora_bias"] = false;
        t["SDLORA"] = lora_fields(nullptr);
        t["SDLORA"].update({{"sdlora_alpha", 1.0}, {"channel_ratio", 0.01}, {"state_ratio", 0.25},
                            {"warmup_steps", 500}, {"warmup_lr", nullptr}, {"dimensions", nullptr}, {"init", "zero"}, {"seq_len", 64},
                            {"select_channel_ratio", 1.0}, {"select_state_ratio", 1.0}});
        t["STATE_OFFSET"] = {{"variant", "h"}, {"init", "zero"}, {"r", 0}};
        t["INITIAL_STATE"] = {{"init", "zero"}, {"conv_init_state", false}};
        t["ADDITIONAL_SCAN"] = {{"d_state", 8}, {"init", "zero"}};
        t["PROMPT"] = {{"num_virtual_tokens", 16}, {"prompt_tuning_init", "SAMPLE_VOCAB"}};
        t["PREFIX"] = {{"num_virtual_tokens", 16}, {"init_std", 0.02}};
        t["BITFIT"] = {{"bias_names", nullptr}};
        t["PARTIAL"] = {{"param_names", nullptr}};
        t["PARALLEL_ADAPTER"] = {{"target_modules", nullptr}, {"r", 16}, {"scaling", 4.0}, {"activation", "relu"},
                                 {"init", "lora"}, {"adapter_dropout", 0.0}};
        t["TRAINABLE_TOKENS"] = {{"token_indices", Json::array()}, {"target_modules", nullptr}, {"init_weights", true}};
        t["SURM"] = {{"structure", "circulant"}, {"mode", "lora"}, {"target_modules", nullptr}, {"block_size", 0},
                     {"ldr_rank", 1}, {"kron_factor", 0}, {"surm_alpha", 1.0}, {"activation", "gelu"},
                     {"surm_dropout", 0.0}, {"init", "zero"}};
        return t;
    }();
    return m;
}

std::string join_keys(const Json& j) {
    std::string out;
    for (auto& [k, v] : j.items()) out += (out.empty() ? "" : ", ") + k;
    return out;
}

// Values that must stay at their defaults because the feature is not implemented.
void check_unsupported_lora_fields(const Json& j, const std::string& source) {
    auto must = [&](const char* key, bool ok, const char* fix) {
        SSMTUNE_CHECK(ok, source, ": LORA field \"", key, "\" = ", j[key].dump(), " is not supported; fix: ", fix);
    };
    // (use_dora, fan_in_fan_out and lora_bias are booleans: from_json's type check)
    must("bias", j["bias"] == "none" || j["bias"] == "all" || j["bias"] == "lora_only",
         "\"none\", \"all\" (every bias trains too) or \"lora_only\" (the LoRA targets' biases)");
    // as HF's LoraConfig: lora_bias only with the plain inits, and not with DoRA
    must("lora_bias", j["lora_bias"] == false || j["init_lora_weights"].is_boolean(),
         "lora_bias needs init_lora_weights true or false");
    must("lora_bias", j["lora_bias"] == false || j["use_dora"] != true, "lora_bias is not supported with DoRA (nor in "
         "HF PEFT): set one of them to false");
    must("layer_replication", j["layer_replication"].is_null() || (j["layer_replication"].is_array() &&
         j["layer_replication"].empty()), "remove it (HF replicates the layers of Llama-, BERT- and Falcon-like models only)");
    const Json& tp = j["target_parameters"];
    must("target_parameters", tp.is_null() || (tp.is_array() && std::all_of(tp.begin(), tp.end(), [](const Json& e) {
             return e.is_string() && !e.get<std::string>().empty();
         })), "a list of parameter names (\"A_log\", \"x_proj.weight\")");
    // features that change the outputs and that we do not implement: refused rather than ignored
    must("use_qalora", j["use_qalora"].is_null() || j["use_qalora"] == false, "false (QA-LoRA is for quantised bases)");
    must("alora_invocation_tokens", j["alora_invocation_tokens"].is_null(), "remove it (activated LoRA is not implemented)");
    must("arrow_config", j["arrow_config"].is_null(), "remove it (Arrow routing is not implemented)");
    must("ensure_weight_tying", j["ensure_weight_tying"].is_null() || j["ensure_weight_tying"] == false,
         "false (trainable tokens on a tied model are tied already; a LoRA on the embedding of a tied model does not "
         "reach the head, as HF's default)");
    must("trainable_token_indices", j["trainable_token_indices"].is_null() || j["trainable_token_indices"].is_array() ||
         j["trainable_token_indices"].is_object(), "a list of token ids or an object {module: [ids]}");
    const std::string init_fix = lora_init_refusal(j["init_lora_weights"]);
    must("init_lora_weights", init_fix.empty(), init_fix.c_str());
}

// rank_pattern / alpha_pattern: {module pattern: value}; exclude_modules: a regex string or a list of names;
// modules_to_save: a list of module names.
void check_lora_patterns(const Json& j, const std::string& source) {
    for (const char* key : {"rank_pattern", "alpha_pattern"}) {
        if (j[key].is_null()) continue;
        SSMTUNE_CHECK(j[key].is_object(), source, ": \"", key, "\" must be an object {module pattern: value}, got ",
                      j[key].dump());
        for (auto it = j[key].begin(); it != j[key].end(); ++it) {
            const Json& v = it.value();
            const bool ok = key[0] == 'r' ? v.is_number_integer() && v.get<int64_t>() >= 1 && v.get<int64_t>() <= (1 << 16)
                                          : v.is_number() && std::abs(v.get<double>()) <= 1e9;
            SSMTUNE_CHECK(ok, source, ": ", key, "[\"", it.key(), "\"] = ", v.dump(), " must be ",
                          key[0] == 'r' ? "an integer rank in [1, 65536]" : "a number (the module's lora_alpha)");
        }
    }
    const Json& ms = j["modules_to_save"];
    SSMTUNE_CHECK(ms.is_null() || (ms.is_array() && std::all_of(ms.begin(), ms.end(), [](const Json& e) {
                      return e.is_string() && !e.get<std::string>().empty();
                  })),
                  source, ": \"modules_to_save\" must be a list of module names, got ", ms.dump());
    const Json& ex = j["exclude_modules"];
    SSMTUNE_CHECK(ex.is_null() || ex.is_string() ||
                  (ex.is_array() && std::all_of(ex.begin(), ex.end(), [](const Json& e) { return e.is_string(); })),
                  source, ": \"exclude_modules\" must be a regex string or a list of module names, got ", ex.dump());
}

void check_number(const Json& j, const char* key, double lo, double hi, const std::string& source, bool integer) {
    if (!j.contains(key) || j[key].is_null()) return;
    SSMTUNE_CHECK(j[key].is_number() && (!integer || j[key].is_number_integer()), source, ": \"", key, "\" must be ",
                  integer ? "an integer" : "a number", ", got ", j[key].dump());
    const double v = j[key].get<double>();
    SSMTUNE_CHECK(v >= lo && v <= hi, source, ": \"", key, "\" = ", v, " is out of range [", lo, ", ", hi, "]");
}

// layers_to_transform / layers_pattern (common to every type): refused where nothing would read them. Found by
// fuzzing the CLI: PROMPT took even `"layers_to_transform": "abc"` silently. As HF's LoraConfig.__post_init__: a
// layers_pattern needs a non-empty layers_to_transform, and neither goes with a string target_modules (a regex or
// "all-linear"; HF's regex path never reads the layer indices, so such a file would not load there).
void check_layer_selection(const Json& j, const std::string& type, const std::string& source) {
    const Json& layers = j["layers_to_transform"];
    const Json& pattern = j["layers_pattern"];
    const bool layers_set = !layers.is_null(), pattern_set = !pattern.is_null();
    if (type == "FULL" || type == "PROMPT" || type == "TRAINABLE_TOKENS") {
        const char* why = type == "FULL"       ? "it trains every parameter of the model"
                          : type == "PROMPT"   ? "its virtual tokens enter with the input, before every layer"
                                               : "it trains rows of the embedding, which is in no layer";
        SSMTUNE_CHECK(!layers_set && !pattern_set, source, ": ", type, " selects no layers (", why, "), but \"",
                      layers_set ? "layers_to_transform" : "layers_pattern", "\" is ", (layers_set ? layers : pattern).dump(),
                      "; fix: remove it");
        return;
    }
    SSMTUNE_CHECK(!pattern_set || (layers_set && !(layers.is_array() && layers.empty())), source,
                  ": \"layers_pattern\" ", pattern.dump(), " is set without \"layers_to_transform\" (it only names the "
                  "layer list the indices count in; HF refuses this too); fix: add layers_to_transform or remove it");
    if (type == "LORA" && j["target_modules"].is_string())
        SSMTUNE_CHECK(!layers_set && !pattern_set, source, ": \"layers_to_transform\" / \"layers_pattern\" with a string "
                      "target_modules (", j["target_modules"].dump(), "): HF refuses the pair (its regex matching never "
                      "reads the layer indices); fix: name the layers in the regex (\".*layers\\.0\\.mixer\\..*_proj\") "
                      "or list the modules");
}

}  // namespace

const std::vector<std::string>& known_peft_types() {
    static const std::vector<std::string> v = [] {
        std::vector<std::string> out;
        for (auto& [k, _] : type_defaults()) out.push_back(k);
        return out;
    }();
    return v;
}

const std::string& Config::peft_type() const { return json.at("peft_type").get_ref<const std::string&>(); }

Config Config::from_json(const nlohmann::json& in, const std::string& source) {
    SSMTUNE_CHECK(in.is_object(), source, ": an adapter config must be a JSON object, got ", in.type_name());
    SSMTUNE_CHECK(in.contains("peft_type") && in["peft_type"].is_string(), source,
                  ": missing \"peft_type\"; fix: add one of ", join_keys(Json(type_defaults())));
    const std::string type = in["peft_type"];
    auto it = type_defaults().find(type);
    SSMTUNE_CHECK(it != type_defaults().end(), source, ": unknown peft_type \"", type, "\"; known: ",
                  join_keys(Json(type_defaults())));
    Json out = common_defaults();
    out.update(it->second);
    for (auto& [k, v] : in.items()) {
        if (k == "peft_type") continue;
        SSMTUNE_CHECK(out.contains(k), source, ": unknown key \"", k, "\" for peft_type ", type, "; valid keys: ",
                      it->second.empty() ? std::string("none of its own") : join_keys(it->second), " (and ",
                      join_keys(common_defaults()), ")");
        // a field whose default is a number, a boolean or a string takes that type only: one clear error here rather
        // than the JSON library's "type must be number" where a method reads it (found by fuzzing the CLI).
        // init_lora_weights (true or a method's name) and PARALLEL_ADAPTER's scaling (its own message) are checked
        // where they are read.
        const Json& d = out[k];
        const bool typed = (d.is_number() || d.is_boolean() || d.is_string()) && k != "init_lora_weights" && k != "scaling";
        SSMTUNE_CHECK(!typed || (d.is_number() ? v.is_number() : d.is_boolean() ? v.is_boolean() : v.is_string()), source,
                      ": \"", k, "\" must be ", d.is_number() ? "a number" : d.is_boolean() ? "true or false" : "a string",
                      " (default ", d.dump(), "), got ", v.dump());
        out[k] = v;
    }
    out["peft_type"] = type;
    // HF's bookkeeping fields: strings (task_type one of HF's TaskType, as PeftConfig.__post_init__ requires)
    for (const char* key : {"task_type", "base_model_name_or_path", "revision", "peft_version"})
        SSMTUNE_CHECK(out[key].is_null() || out[key].is_string(), source, ": \"", key, "\" must be a string or null, got ",
                      out[key].dump());
    static const std::set<std::string> task_types = {"SEQ_CLS", "SEQ_2_SEQ_LM", "CAUSAL_LM", "TOKEN_CLS",
                                                     "QUESTION_ANS", "FEATURE_EXTRACTION"};
    SSMTUNE_CHECK(out["task_type"].is_null() || task_types.count(out["task_type"].get<std::string>()), source,
                  ": \"task_type\" ", out["task_type"].dump(), " is not one of HF's task types (CAUSAL_LM, SEQ_CLS, "
                  "SEQ_2_SEQ_LM, TOKEN_CLS, QUESTION_ANS, FEATURE_EXTRACTION); fix: CAUSAL_LM, or leave it out");
    SSMTUNE_CHECK(out["auto_mapping"].is_null() || out["auto_mapping"].is_object(), source,
                  ": \"auto_mapping\" must be an object or null, got ", out["auto_mapping"].dump());
    if (type == "LORA" && out["fan_in_fan_out"] == true) {
        // HF sets it back to false, with a warning, for every nn.Linear target (the flag is for GPT-2's Conv1D,
        // which stores [in, out]); every module we can target stores [out, in]
        std::fprintf(stderr, "warning: %s: fan_in_fan_out is true, but every module LoRA can target here stores its "
                     "weight as [out, in]; setting it to false (as HF PEFT does for Linear targets)\n", source.c_str());
        out["fan_in_fan_out"] = false;
    }
    if (type == "LORA") {
        check_unsupported_lora_fields(out, source);
        check_lora_patterns(out, source);
    }
    check_number(out, "r", type == "STATE_OFFSET" ? 0 : 1, 1 << 16, source, true);  // STATE_OFFSET: 0 = full h′
    check_number(out, "lora_alpha", -1e9, 1e9, source, false);
    check_number(out, "lora_dropout", 0, 0.999, source, false);
    check_number(out, "adapter_dropout", 0, 0.999, source, false);
    check_number(out, "surm_dropout", 0, 0.999, source, false);
    check_number(out, "num_virtual_tokens", 1, 1 << 16, source, true);
    check_number(out, "channel_ratio", 0, 1, source, false);
    check_number(out, "state_ratio", 0, 1, source, false);
    check_number(out, "warmup_steps", 0, 1e9, source, true);
    check_number(out, "warmup_lr", 0, 1e3, source, false);  // null: the run's lr
    check_number(out, "block_size", 0, 1 << 24, source, true);
    check_number(out, "ldr_rank", 1, 256, source, true);
    check_number(out, "kron_factor", 0, 1 << 24, source, true);  // 0: the largest common divisor up to 8
    check_number(out, "surm_alpha", -1e9, 1e9, source, false);
    check_number(out, "init_seed", 0, 1.8e19, source, true);
    const Json& tm = out.contains("target_modules") ? out["target_modules"] : Json();
    const bool params_only = out.contains("target_parameters") && out["target_parameters"].is_array() &&
                             !out["target_parameters"].empty();  // LoRA on parameters alone: target_modules []
    SSMTUNE_CHECK(tm.is_null() || tm.is_string() || (tm.is_array() && (!tm.empty() || params_only) &&
                  std::all_of(tm.begin(), tm.end(), [](const Json& e) { return e.is_string(); })),
                  source, ": \"target_modules\" must be a list of module names, a regex string or null, got ", tm.dump());
    check_layer_selection(out, type, source);
    if (type == "INITIAL_STATE")
        SSMTUNE_CHECK(out["conv_init_state"].is_boolean(), source, ": INITIAL_STATE \"conv_init_state\" must be true or "
                      "false, got ", out["conv_init_state"].dump());
    if (type == "STATE_OFFSET")
        SSMTUNE_CHECK(out["variant"] == "h" || out["variant"] == "y", source,
                      ": STATE_OFFSET \"variant\" must be \"h\" (state offset) or \"y\" (output offset), got ",
                      out["variant"].dump());
    if (out.contains("init") && type != "PARALLEL_ADAPTER")
        SSMTUNE_CHECK(out["init"] == "zero" || out["init"] == "random", source,
                      ": \"init\" must be \"zero\" or \"random\", got ", out["init"].dump());
    Config c;
    c.json = out;
    return c;
}

Config Config::parse(const std::string& text, const std::string& source) {
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for numbers beyond double
        SSMTUNE_FAIL(source, ": not valid JSON (", e.what(), ")");
    }
    return from_json(j, source);
}

Config Config::from_file(const std::string& path) { return from_json(models::read_json_file(path), path); }

Config Config::with(const nlohmann::json& overrides) const {
    nlohmann::json j = json;
    for (auto& [k, v] : overrides.items()) j[k] = v;
    return from_json(j, "adapter config with overrides");
}

}  // namespace ssmtune::peft
