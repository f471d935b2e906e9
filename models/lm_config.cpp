// LMConfig <-> config.json (see lm_config.h).
#include "models/lm_config.h"

#include <algorithm>
#include <iterator>

#include "engine/error.h"
#include "engine/json_read.h"

namespace ssmtune::models {

namespace {

// Fields of mamba_ssm's MambaConfig and HF's MambaConfig that describe a block other than ours (RMSNorm -> mixer ->
// residual, SiLU): refused, since reading past them would build a different network that loads the same tensors.
void check_block_layout(const nlohmann::json& j, const std::string& source) {
    auto refuse = [&](const char* key, bool ok, const char* what) {
        SSMTUNE_CHECK(ok, source, ": \"", key, "\" = ", j.at(key).dump(), " asks for ", what,
                      ", which this loader does not build; fix: a Mamba-1 / Longhorn checkpoint with RMSNorm blocks");
    };
    if (j.contains("rms_norm") && !j.at("rms_norm").is_null())
        refuse("rms_norm", j.at("rms_norm") == true, "LayerNorm instead of RMSNorm");
    if (j.contains("hidden_act") && !j.at("hidden_act").is_null())
        refuse("hidden_act", j.at("hidden_act") == "silu", "an activation other than SiLU");
    if (j.contains("d_intermediate") && !j.at("d_intermediate").is_null())
        refuse("d_intermediate", j.at("d_intermediate") == 0, "an MLP after each mixer");
    if (j.contains("attn_layer_idx") && !j.at("attn_layer_idx").is_null())
        refuse("attn_layer_idx", j.at("attn_layer_idx").is_array() && j.at("attn_layer_idx").empty(),
               "attention layers (a hybrid model)");
    if (j.contains("ssm_cfg") && j.at("ssm_cfg").is_object() && j.at("ssm_cfg").contains("layer")) {
        const auto& layer = j.at("ssm_cfg").at("layer");
        SSMTUNE_CHECK(layer == "Mamba1", source, ": ssm_cfg \"layer\" = ", layer.dump(),
                      " is not a mixer this loader builds (Mamba1); fix: a Mamba-1 checkpoint (Mamba-2 is not implemented)");
    }
}

}  // namespace

LMConfig LMConfig::from_json(const nlohmann::json& j, const std::string& source) {
    SSMTUNE_CHECK(j.is_object(), source, ": expected a JSON object");
    LMConfig c;
    read_json_field(j, "model_type", c.model_type, source);
    if (c.model_type == "mamba_ssm") c.model_type = "mamba";
    SSMTUNE_CHECK(c.model_type == "mamba" || c.model_type == "longhorn", source, ": model_type \"", c.model_type,
                  "\" is not a language model this loader knows (mamba, longhorn)");
    // Original state-spaces names first, HF names override.
    read_json_field(j, "d_model", c.hidden_size, source);
    read_json_field(j, "n_layer", c.num_hidden_layers, source);
    check_block_layout(j, source);
    if (j.contains("ssm_cfg") && j.at("ssm_cfg").is_object()) {  // mamba_ssm's Mamba(...) arguments
        const auto& s = j.at("ssm_cfg");
        read_json_field(s, "d_state", c.state_size, source);
        read_json_field(s, "d_conv", c.conv_kernel, source);
        read_json_field(s, "expand", c.expand, source);
        read_json_field(s, "bias", c.use_bias, source);
        read_json_field(s, "conv_bias", c.use_conv_bias, source);
        read_json_field(s, "dt_min", c.time_step_min, source);
        read_json_field(s, "dt_max", c.time_step_max, source);
        read_json_field(s, "dt_init_floor", c.time_step_floor, source);
        read_json_field(s, "dt_scale", c.time_step_scale, source);
        read_json_field(s, "dt_init", c.time_step_init_scheme, source);
    }
    read_json_field(j, "hidden_size", c.hidden_size, source);
    read_json_field(j, "num_hidden_layers", c.num_hidden_layers, source);
    read_json_field(j, "state_size", c.state_size, source);
    read_json_field(j, "expand", c.expand, source);
    read_json_field(j, "conv_kernel", c.conv_kernel, source);
    read_json_field(j, "vocab_size", c.vocab_size, source);
    read_json_field(j, "layer_norm_epsilon", c.layer_norm_epsilon, source);
    read_json_field(j, "norm_epsilon", c.layer_norm_epsilon, source);
    read_json_field(j, "use_bias", c.use_bias, source);
    read_json_field(j, "use_conv_bias", c.use_conv_bias, source);
    read_json_field(j, "input_size", c.input_size, source);
    if (c.input_size > 0) c.tie_word_embeddings = false;  // a frame model has no embedding to tie to
    read_json_field(j, "tie_word_embeddings", c.tie_word_embeddings, source);
    read_json_field(j, "tie_embeddings", c.tie_word_embeddings, source);
    read_json_field(j, "residual_in_fp32", c.residual_in_fp32, source);
    read_json_field(j, "time_step_min", c.time_step_min, source);
    read_json_field(j, "time_step_max", c.time_step_max, source);
    read_json_field(j, "time_step_floor", c.time_step_floor, source);
    read_json_field(j, "time_step_scale", c.time_step_scale, source);
    read_json_field(j, "time_step_init_scheme", c.time_step_init_scheme, source);
    read_json_field(j, "rescale_prenorm_residual", c.rescale_prenorm_residual, source);
    c.intermediate_size = c.expand * c.hidden_size;
    for (const char* key : {"d_inner", "intermediate_size"}) {
        read_json_field(j, key, c.intermediate_size, source);
    }
    // Original configs give the unpadded vocabulary and a multiple to pad to.
    if (j.contains("pad_vocab_size_multiple") && !j.contains("hidden_size")) {
        int64_t multiple = 1;
        read_json_field(j, "pad_vocab_size_multiple", multiple, source);
        if (multiple > 1 && c.vocab_size % multiple) c.vocab_size += multiple - c.vocab_size % multiple;
    }
    c.time_step_rank = (c.hidden_size + 15) / 16;
    const char* rank_keys[] = {"time_step_rank", "dt_rank"};
    for (const char* key : rank_keys) {
        const nlohmann::json* src = j.contains(key) ? &j.at(key)
                                    : (j.contains("ssm_cfg") && j.at("ssm_cfg").is_object() && j.at("ssm_cfg").contains(key))
                                        ? &j.at("ssm_cfg").at(key) : nullptr;
        if (!src || src->is_null()) continue;
        if (src->is_string()) {
            SSMTUNE_CHECK(src->get<std::string>() == "auto", source, ": field \"", key,
                          "\" must be an integer or \"auto\", got \"", src->get<std::string>(), "\"");
        } else {
            SSMTUNE_CHECK(src->is_number_integer(), source, ": field \"", key, "\" must be an integer or \"auto\"");
            c.time_step_rank = src->get<int64_t>();
        }
    }
    c.validate(source);
    return c;
}

std::vector<std::string> LMConfig::unknown_fields(const nlohmann::json& j) {
    static const char* const known[] = {
        // read here (HF and mamba_ssm names)
        "model_type", "d_model", "n_layer", "ssm_cfg", "hidden_size", "num_hidden_layers", "state_size", "expand",
        "conv_kernel", "vocab_size", "layer_norm_epsilon", "norm_epsilon", "use_bias", "use_conv_bias", "input_size",
        "tie_word_embeddings", "tie_embeddings", "residual_in_fp32", "time_step_min", "time_step_max",
        "time_step_floor", "time_step_scale", "time_step_init_scheme", "rescale_prenorm_residual", "d_inner",
        "intermediate_size", "pad_vocab_size_multiple", "time_step_rank", "dt_rank",
        // checked for another block (check_block_layout)
        "rms_norm", "hidden_act", "d_intermediate", "attn_layer_idx", "attn_cfg", "fused_add_norm",
        // HF MambaConfig / PretrainedConfig fields that do not change the network
        "architectures", "torch_dtype", "transformers_version", "pad_token_id", "bos_token_id", "eos_token_id",
        "initializer_range", "use_cache", "use_mambapy", "num_labels", "id2label", "label2id", "_name_or_path"};
    std::vector<std::string> out;
    for (auto it = j.begin(); it != j.end(); ++it)
        if (std::none_of(std::begin(known), std::end(known), [&](const char* k) { return it.key() == k; }))
            out.push_back(it.key());
    return out;
}

nlohmann::json LMConfig::to_json() const {
    nlohmann::json j;
    j["model_type"] = model_type;
    const std::string family = model_type == "mamba" ? "Mamba" : "Longhorn";
    j["architectures"] = {family + (input_size > 0 ? "ForFrameClassification" : "ForCausalLM")};
    if (input_size > 0) j["input_size"] = input_size;
    j["vocab_size"] = vocab_size;
    j["hidden_size"] = hidden_size;
    j["num_hidden_layers"] = num_hidden_layers;
    j["state_size"] = state_size;
    j["expand"] = expand;
    j["intermediate_size"] = intermediate_size;
    j["conv_kernel"] = conv_kernel;
    j["time_step_rank"] = time_step_rank;
    j["layer_norm_epsilon"] = layer_norm_epsilon;
    j["use_bias"] = use_bias;
    j["use_conv_bias"] = use_conv_bias;
    j["tie_word_embeddings"] = tie_word_embeddings;
    j["residual_in_fp32"] = residual_in_fp32;
    j["time_step_min"] = time_step_min;
    j["time_step_max"] = time_step_max;
    j["time_step_floor"] = time_step_floor;
    j["time_step_scale"] = time_step_scale;
    j["time_step_init_scheme"] = time_step_init_scheme;
    j["rescale_prenorm_residual"] = rescale_prenorm_residual;
    j["hidden_act"] = "silu";
    j["torch_dtype"] = "float32";
    return j;
}

void LMConfig::validate(const std::string& source) const {
    const auto positive = [&](int64_t v, const char* name) {
        SSMTUNE_CHECK(v > 0, source, ": field \"", name, "\" must be positive, got ", v);
    };
    positive(vocab_size, "vocab_size");
    positive(hidden_size, "hidden_size");
    positive(num_hidden_layers, "num_hidden_layers");
    positive(state_size, "state_size");
    positive(intermediate_size, "intermediate_size");
    positive(conv_kernel, "conv_kernel");
    positive(time_step_rank, "time_step_rank");
    SSMTUNE_CHECK(input_size >= 0, source, ": field \"input_size\" must be >= 0 (0 = token ids), got ", input_size);
    SSMTUNE_CHECK(input_size == 0 || !tie_word_embeddings, source, ": a frame model (input_size ", input_size,
                  ") has no token embedding to tie the head to; fix: \"tie_word_embeddings\": false");
    SSMTUNE_CHECK(layer_norm_epsilon > 0, source, ": field \"layer_norm_epsilon\" must be positive");
    SSMTUNE_CHECK(time_step_min > 0 && time_step_max >= time_step_min, source,
                  ": time_step_min/time_step_max must satisfy 0 < min <= max");
    SSMTUNE_CHECK(time_step_init_scheme == "random" || time_step_init_scheme == "constant", source,
                  ": field \"time_step_init_scheme\" must be \"random\" or \"constant\"");
}

double LMConfig::num_parameters() const {
    const double D = double(hidden_size), E = double(intermediate_size), N = double(state_size),
                 R = double(time_step_rank), K = double(conv_kernel), V = double(vocab_size);
    const bool mamba = model_type == "mamba";
    double layer = D                                   // norm
                   + 2 * E * D + (use_bias ? 2 * E : 0)  // in_proj
                   + E * K + (use_conv_bias ? E : 0)     // conv1d
                   + (R + 2 * N) * E                     // x_proj
                   + E * R + E                           // dt_proj
                   + (mamba ? E * N : 0) + E             // A_log (Mamba only), D
                   + D * E + (use_bias ? D : 0);         // out_proj
    const double input = input_size > 0 ? double(input_size) * D + D : V * D;  // encoder or embedding
    return input + double(num_hidden_layers) * layer + D + (tie_word_embeddings ? 0 : V * D);
}

}  // namespace ssmtune::models
