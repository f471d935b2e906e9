// Run configurations (see run_config.h).
#include "tools/run_config.h"

#include <algorithm>
#include <map>
#include <sstream>
#include <vector>

#include "engine/error.h"
#include "engine/json_read.h"
#include "tools/trainer.h"

namespace ssmtune::tools {

using json = nlohmann::json;

json default_run_config() {
    return {
        {"model", nullptr},
        {"base_model", nullptr},
        {"adapter", nullptr},
        {"peft", nullptr},
        {"data",
         {{"kind", "synthetic"},
          {"task", {{"name", "selective_copying"}, {"num_tokens", 8}, {"num_memorize", 4}, {"span", 32},
                    {"reverse", false}, {"token_shift", 0}}},
          {"path", nullptr},
          {"tokenizer", nullptr},
          {"val_fraction", 0.1},
          {"order", "row"},
          {"classes", json::array()},
          {"limit", 0},
          {"permutation_seed", 0}}},
        {"train",
         {{"steps", 400}, {"batch_size", 16}, {"seq_len", 128}, {"lr", 2e-3}, {"weight_decay", 0.0},
          {"schedule", "cosine"}, {"warmup_steps", 20}, {"min_lr_ratio", 0.1}, {"grad_clip", 1.0},
          {"no_decay", kDefaultNoDecay}, {"ssm_lr", nullptr}, {"adam_beta1", 0.9}, {"adam_beta2", 0.999},
          {"adam_epsilon", 1e-8}, {"gradient_accumulation_steps", 1}, {"log_every", 20}, {"eval_every", 100},
          {"save_every", 0}, {"best_metric", "loss"}, {"early_stopping_patience", 0},
          {"early_stopping_threshold", 0.0}, {"load_best_at_end", false}, {"eval_batches", 4}, {"seed", 0},
          {"device", "cpu"}, {"gradient_checkpointing", false}}},
        {"out", "runs/run"},
    };
}

namespace {

std::string keys_of(const json& j) {
    std::string s;
    for (auto& [k, v] : j.items()) s += (s.empty() ? "" : ", ") + k;
    return s;
}

// Recursively merges `user` into `base`; `path` names the place for errors.
void merge_into(json& base, const json& user, const std::string& path, const std::string& source) {
    SSMTUNE_CHECK(user.is_object(), source, ": ", path.empty() ? "the run config" : "\"" + path + "\"",
                  " must be a JSON object, got ", user.dump());
    for (auto& [k, v] : user.items()) {
        const std::string here = path.empty() ? k : path + "." + k;
        SSMTUNE_CHECK(base.contains(k), source, ": unknown key \"", here, "\"; valid keys",
                      path.empty() ? "" : " of \"" + path + "\"", ": ", keys_of(base));
        json& slot = base[k];
        const bool passthrough = here == "model" || here == "peft" || here == "data.task";
        if (slot.is_object() && !passthrough) {
            merge_into(slot, v, here, source);
        } else if (slot.is_object() && passthrough && v.is_object()) {
            slot.update(v);  // their own parsers check these keys
        } else if (!slot.is_null() && v.is_null()) {  // found by reading: it used to fail later with json's message
            SSMTUNE_FAIL(source, ": \"", here, "\" must be ", slot.type_name(), " (like ", slot.dump(),
                         "), got null; fix: leave the key out for its default");
        } else if (!slot.is_null() && !passthrough && slot.type() != v.type() && !(slot.is_number() && v.is_number())) {
            SSMTUNE_FAIL(source, ": \"", here, "\" must be ", slot.type_name(), " (like ", slot.dump(), "), got ", v.dump());
        } else {
            slot = v;
        }
    }
}

// Integer fields hold integers from here on (a float with an integral value, 1e3 from --set, becomes one), so
// every reader's get<int64_t> is exact: a float beyond the range used to be converted with undefined behaviour
// (train.seed=1e30, train.batch_size=1e30) and 2.5 truncated. The fields' own ranges are checked where read.
void normalise_integer_fields(json& out, const std::string& source) {
    for (const char* key : {"steps", "batch_size", "seq_len", "warmup_steps", "gradient_accumulation_steps", "log_every",
                            "eval_every", "save_every", "early_stopping_patience", "eval_batches"})
        out["train"][key] = json_integer(out["train"][key], source + ": train." + key);
    if (!out["train"]["seed"].is_number_unsigned())  // seeds are uint64: a JSON integer up to 2^64 − 1 stays as it is
        out["train"]["seed"] = json_integer(out["train"]["seed"], source + ": train.seed", 0);
    out["data"]["limit"] = json_integer(out["data"]["limit"], source + ": data.limit", 0);
    out["data"]["permutation_seed"] = json_integer(out["data"]["permutation_seed"], source + ": data.permutation_seed", 0);
    SSMTUNE_CHECK(out["data"]["classes"].is_array(), source, ": data.classes must be a list of class indices, got ",
                  out["data"]["classes"].dump());
    for (json& c : out["data"]["classes"]) c = json_integer(c, source + ": data.classes entry", 0, 1 << 30);
}

}  // namespace

json resolve_run_config(const json& user, const std::string& source) {
    json out = default_run_config();
    if (!user.is_null()) merge_into(out, user, "", source);
    normalise_integer_fields(out, source);
    return out;
}

void apply_assignments(json& config, const std::string& assignments) {
    // Split on commas outside brackets and quotes, so values may be JSON arrays/objects: data.classes=[5,6,7].
    std::vector<std::string> items(1);
    int depth = 0;
    bool quoted = false;
    for (char ch : assignments) {
        if (ch == '"') quoted = !quoted;
        if (!quoted && (ch == '[' || ch == '{')) ++depth;
        if (!quoted && (ch == ']' || ch == '}')) --depth;
        if (ch == ',' && depth == 0 && !quoted) items.emplace_back();
        else items.back() += ch;
    }
    for (const std::string& item : items) {
        const size_t eq = item.find('=');
        SSMTUNE_CHECK(eq != std::string::npos && eq > 0, "--set: expected key.path=value, got '", item, "'");
        try {  // found by fuzzing: raw bytes that are not UTF-8 (in the value or the key path) break every dump()
            (void)json(item).dump();
        } catch (const json::type_error&) {
            SSMTUNE_FAIL("--set: the assignment is not valid UTF-8 text; fix: write key.path=value in UTF-8");
        }
        const std::string path = item.substr(0, eq), text = item.substr(eq + 1);
        json value;
        try {
            value = json::parse(text);
        } catch (const json::parse_error&) {
            value = text;  // a bare string
        } catch (const json::exception& e) {  // out_of_range: a number beyond double (1e999)
            SSMTUNE_FAIL("--set ", item, ": ", e.what(), "; fix: give a number within double range");
        }
        json user = value;  // build {"a": {"b": value}} and merge it, so the same key checks apply
        std::vector<std::string> parts;
        std::stringstream ps(path);
        for (std::string p; std::getline(ps, p, '.');) parts.push_back(p);
        for (auto it = parts.rbegin(); it != parts.rend(); ++it) user = json{{*it, user}};
        json merged = config;
        merge_into(merged, user, "", "--set " + item);
        normalise_integer_fields(merged, "--set " + item);
        config = merged;
    }
}

std::vector<std::string> unread_sections(const json& rc, const std::string& command) {
    std::vector<std::pair<std::string, std::string>> unread;  // section, who reads it
    if (command == "train")
        unread = {{"base_model", "finetune and eval read it; train builds a new model from \"model\""},
                  {"adapter", "eval reads it"},
                  {"peft", "finetune reads it; train trains every weight of a new model"}};
    else if (command == "finetune")
        unread = {{"model", "train reads it; finetune loads \"base_model\""}};
    std::vector<std::string> out;
    for (const auto& entry : unread)
        if (!rc[entry.first].is_null())
            out.push_back("the run config's \"" + entry.first + "\" is not read by " + command + " (" + entry.second + ")");
    return out;
}

std::vector<std::string> unused_data_settings(const json& rc) {
    const json defaults = default_run_config();
    const json& d = rc["data"];
    const std::string kind = d["kind"].is_string() ? d["kind"].get<std::string>() : "";
    // What each kind reads of the data section (and train.seq_len); the rest is set only by mistake: a config
    // written for another kind, or --data together with --task (the task wins; the file was skipped silently).
    const std::map<std::string, std::vector<std::string>> reads = {
        {"synthetic", {"task"}},
        {"text", {"path", "tokenizer", "val_fraction", "seq_len"}},
        {"tokens", {"path", "val_fraction", "seq_len"}},
        {"fashion_mnist", {"path", "order", "classes", "limit", "permutation_seed"}}};
    const auto it = reads.find(kind);
    if (it == reads.end()) return {};  // an unknown kind is load_workload_data's error
    std::vector<std::string> read = it->second;
    if (kind == "fashion_mnist" && d["order"] != "permuted")  // only a permuted order draws a permutation
        read.erase(std::find(read.begin(), read.end(), "permutation_seed"));
    const std::map<std::string, std::string> readers = {
        {"task", "only synthetic reads it"}, {"path", "only text, tokens and fashion_mnist read it"},
        {"tokenizer", "only text reads it"}, {"val_fraction", "only text and tokens read it"},
        {"order", "only fashion_mnist reads it"}, {"classes", "only fashion_mnist reads it"},
        {"limit", "only fashion_mnist reads it"},
        {"permutation_seed", "only fashion_mnist with order \"permuted\" reads it"},
        {"seq_len", "only text and tokens read it: a synthetic task and an image set fix their own lengths"}};
    std::vector<std::string> unused;
    for (const auto& entry : readers) {
        const std::string& key = entry.first;
        if (std::find(read.begin(), read.end(), key) != read.end()) continue;
        const bool in_train = key == "seq_len";
        const json& value = in_train ? rc["train"][key] : d[key];
        const json& fallback = in_train ? defaults["train"][key] : defaults["data"][key];
        if (value == fallback) continue;
        const std::string why = key == "tokenizer" && kind == "tokens" ? ": token files hold ids already" : "";
        unused.push_back(std::string(in_train ? "train." : "data.") + key + " = " + value.dump() +
                         " has no effect with data.kind \"" + kind + "\" (" + entry.second + why + ")");
    }
    return unused;
}

}  // namespace ssmtune::tools
