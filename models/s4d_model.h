// The S4D sequence classifier: the `S4Model` of state-spaces/s4 example.py around the standalone S4D layer
// (models/s4/s4d.py; Gu, Gupta, Goel, Ré 2022, "On the Parameterization and Initialization of Diagonal SSMs").
//
//   x [B, L, d_input] → encoder Linear → n × ( S4D layer → dropout → + residual → LayerNorm )  (post-norm;
//   pre-norm as an option) → mean over L → decoder Linear → logits [B, d_output].
//   S4D layer on u [B, H, L]: K = s4d_kernel(log_dt, C, log_A_real, A_imag, L);  y = K * u + D ⊙ u;
//   y = dropout(GELU(y));  y = GLU(Conv1d(H → 2H, k=1)(y)) over channels.
// Names as example.py: encoder.*, s4_layers.{i}.kernel.{log_dt, C, log_A_real, A_imag}, s4_layers.{i}.D,
// s4_layers.{i}.output_linear.0.{weight [2H, H, 1], bias [2H]}, norms.{i}.{weight, bias}, decoder.*.
// Inits: S4D-Lin (default), S4D-Inv, S4D-Real; ZOH (default) or bilinear discretisation.
// Dropout is DropoutNd/Dropout1d style: one mask value per (batch, channel), tied across L.
// Recurrent mode: the diagonal recurrence s ← exp(ΔA) s + B̄ u per mode, y = 2 Re(C·s) + D u, one step per frame.
// Not here: the full S4 (DPLR) kernel, bidirectional layers, the S4 repo's per-parameter lr registration
// (the CLI puts kernel parameters in their own optimizer group instead).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "models/layers.h"

namespace ssmtune::models {

struct S4DConfig {
    int64_t d_input = 1;
    int64_t d_output = 10;
    int64_t d_model = 64;   // H
    int64_t d_state = 64;   // N (N/2 complex modes)
    int64_t n_layers = 4;
    bool prenorm = false;
    double dropout = 0.1;
    std::string init = "lin";            // lin | inv | real
    std::string discretization = "zoh";  // zoh | bilinear
    double dt_min = 1e-3, dt_max = 1e-1;

    static S4DConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
    nlohmann::json to_json() const;
    void validate(const std::string& source = "config") const;
    double num_parameters() const;  // of the classifier this config describes
};

// The S4D layer's kernel parameters (s4_layers.{i}.kernel.*).
class S4DKernel : public Module {
public:
    S4DKernel(const S4DConfig& config, Generator& gen);
    Tensor forward(int64_t L);  // K [H, L]
    Tensor& log_dt() { return params_[0].second; }      // [H]
    Tensor& C() { return params_[1].second; }           // [H, N/2, 2]
    Tensor& log_A_real() { return params_[2].second; }  // [H, N/2]
    Tensor& A_imag() { return params_[3].second; }      // [H, N/2]
    std::string type_name() const override { return "S4DKernel"; }

private:
    bool bilinear_;
};

// Recurrent state of one S4D layer: complex mode states as real pairs.
struct S4DState {
    Tensor s;  // [B, H, N/2, 2]
};

// A DeltaHost: the classifier adds the layer's OutputDelta (if any) to its output, o = layer(u) + Δ(u), with u
// [B, H, L] (channels first) in forward and [B, H] in step (parallel adapters).
class S4DLayer : public DeltaHost {
public:
    S4DLayer(const S4DConfig& config, Generator& gen);
    Tensor forward(const Tensor& u, Generator& dropout_gen);  // u [B, H, L] -> [B, H, L]
    Tensor step(const Tensor& u, S4DState& state);            // u [B, H] -> [B, H] (evaluation mode)
    S4DState initial_state(int64_t batch, DType dtype) const;
    std::shared_ptr<S4DKernel> kernel;
    PointwiseConv1d& output_linear() { return *output_linear_; }  // output_linear.0
    Tensor& D() { return params_[0].second; }  // [H]
    std::string type_name() const override { return "S4D"; }
    // PEFT scan hooks (undefined = off), all added to the SSM output before the activation:
    //   y′ [H];  state offset h′ [H, N/2, 2]: + 2·Re Σ_n C_n h′_n;  initial state h0 [H, N/2, 2] (s_{−1} = h0):
    //   + 2·Re Σ_n C_n Ā_n^{t+1} h0_n (ops::s4d_initial_state_response), also the start state of step().
    Tensor hook_output_offset, hook_state_offset, hook_initial_state;
    // Low-rank h′ = lora_B [H, r] · lora_A [r, N/2, 2] (STATE_OFFSET with "r"); read when hook_state_offset is undefined.
    Tensor hook_state_offset_lora_B, hook_state_offset_lora_A;
    bool has_state_offset() const { return hook_state_offset.defined() || hook_state_offset_lora_B.defined(); }

private:
    Tensor output_conv(const Tensor& y);  // GLU(Conv1d(H → 2H, 1)) over channels, y [B, H, L]
    Tensor state_offset_response();       // 2·Re Σ_n C_n h′_n per channel, [H]
    S4DConfig config_;
    std::shared_ptr<PointwiseConv1d> output_linear_;
};

class S4DClassifier : public Module {
public:
    S4DClassifier(const S4DConfig& config, uint64_t seed);
    const S4DConfig& config() const { return config_; }
    Tensor forward(const Tensor& x);  // x [B, L, d_input] -> logits [B, d_output]
    // The decoder applied at every position instead of to the mean (sequence regression, e.g. SDLoRA's
    // synthetic experiment): x [B, L, d_input] -> [B, L, d_output].
    Tensor forward_sequence(const Tensor& x);
    Tensor loss(const Tensor& x, const Tensor& labels);  // mean cross-entropy, labels [B] I64
    // Recurrent mode: feeds x one frame at a time; returns the logits after the last frame (equal to forward).
    Tensor forward_recurrent(const Tensor& x);
    int64_t num_layers() const { return int64_t(layers_.size()); }
    S4DLayer& layer(int64_t i) { return *layers_.at(size_t(i)); }
    Linear& encoder() { return *encoder_; }
    Linear& decoder() { return *decoder_; }
    // Seed of the dropout masks of the next training forward pass (advanced on each pass).
    Generator& dropout_generator() { return dropout_gen_; }
    std::string type_name() const override { return "S4Model"; }

private:
    Tensor features(const Tensor& x);  // the last layer's output [B, H, L]
    S4DConfig config_;
    std::shared_ptr<Linear> encoder_, decoder_;
    std::vector<std::shared_ptr<S4DLayer>> layers_;
    std::vector<std::shared_ptr<LayerNorm>> norms_;
    Generator dropout_gen_;
};

}  // namespace ssmtune::models
