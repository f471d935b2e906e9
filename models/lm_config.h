// Configuration of the Mamba and Longhorn language models, read from and written to HF-style config.json.
//
// Field names are HuggingFace MambaConfig's (hidden_size, num_hidden_layers, state_size, expand or
// intermediate_size, conv_kernel, time_step_rank ("auto" = ceil(D/16)), layer_norm_epsilon, use_bias,
// use_conv_bias, vocab_size, tie_word_embeddings, time_step_*), and the original state-spaces names (d_model,
// n_layer, d_inner, pad_vocab_size_multiple, and mamba_ssm's ssm_cfg: d_state/d_conv/expand/dt_rank/bias/conv_bias/
// dt_min/dt_max/dt_init/dt_scale/dt_init_floor) are accepted on read.
// Unknown keys are ignored (configs carry many); wrong types or impossible values are Errors naming the field, and
// so are fields that ask for another block (rms_norm false, hidden_act not silu, d_intermediate > 0, attention
// layers, ssm_cfg.layer other than Mamba1).
// Our one addition, input_size (written only when set): > 0 makes a frame model that reads real-valued frames
// [B, L, input_size] through backbone.encoder (Linear with bias) instead of token ids through the embedding, for
// sequence classification (Fashion-MNIST by row); vocab_size is then the number of outputs and the head is
// untied (tie_word_embeddings defaults to false and must be).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ssmtune::models {

struct LMConfig {
    std::string model_type = "mamba";  // "mamba" or "longhorn"
    int64_t vocab_size = 256;
    int64_t hidden_size = 256;          // D
    int64_t num_hidden_layers = 4;
    int64_t state_size = 16;            // N
    int64_t expand = 2;
    int64_t intermediate_size = 512;    // E = expand · D
    int64_t conv_kernel = 4;            // K
    int64_t time_step_rank = 16;        // R
    double layer_norm_epsilon = 1e-5;
    bool use_bias = false;              // in_proj / out_proj bias (mamba_ssm: false; read the flag, never assume)
    bool use_conv_bias = true;
    bool tie_word_embeddings = true;
    bool residual_in_fp32 = true;
    double time_step_min = 1e-3, time_step_max = 1e-1, time_step_floor = 1e-4, time_step_scale = 1.0;
    std::string time_step_init_scheme = "random";  // or "constant"
    bool rescale_prenorm_residual = true;          // mamba_ssm's out_proj rescale at init
    double embedding_init_std = 0.02;
    int64_t input_size = 0;             // F: 0 = token ids; > 0 = real-valued frames through backbone.encoder

    // Parses config.json content; `source` names the file in errors.
    static LMConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
    // The top-level fields of `j` that neither this loader reads nor HF's / mamba_ssm's configs define: in a config
    // written by hand (a run config's "model"), most likely typos ("num_hidden_layer"), which would leave a default.
    static std::vector<std::string> unknown_fields(const nlohmann::json& j);
    nlohmann::json to_json() const;
    // Checks the sizes are positive and consistent; Error naming the field otherwise.
    void validate(const std::string& source = "config") const;
    // Parameters of the model this config describes (in double: configs from files may be absurd).
    double num_parameters() const;
};

}  // namespace ssmtune::models
