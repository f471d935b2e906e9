// The language-model wrapper shared by Mamba and Longhorn, and the Mixer interface their layers implement.
//
// embedding → n × (RMSNorm → mixer → + residual) → RMSNorm → LM head (tied to the embedding unless the
// config unties it), as mamba_ssm's MixerModel/MambaLMHeadModel and HF's MambaForCausalLM. Parameter names are
// HF's: backbone.embeddings.weight, backbone.layers.{i}.norm.weight, backbone.layers.{i}.mixer.*,
// backbone.norm_f.weight, lm_head.weight (only when untied). Two modes that agree: `forward` (parallel, for
// training) and `step` (one token with a per-layer state cache, O(1) work per token, for generation).
// PEFT hook points: Linear deltas inside the mixers, the mixers' scan hooks (initial state h0, state offset h′,
// output offset y′, per-layer prefix vectors), an OutputDelta beside each whole mixer (o = mixer(u) + Δ(u), for
// parallel adapters), and `prompt_embeddings` prepended to the input.
// A frame model (config input_size F > 0) has backbone.encoder (Linear F → D with bias) in place of the embedding
// and reads real-valued frames x [B, L, F] with forward_frames; it has no token step or generation.
// Not here: the residual kept in a wider type than the compute type (we compute in F32 or F64 throughout).
#pragma once

#include <memory>
#include <vector>

#include "models/layers.h"
#include "models/lm_config.h"

namespace ssmtune::models {

// Recurrent state of one layer: the last K pre-conv inputs and the SSM state.
struct MixerState {
    Tensor conv_state;  // [B, E, K]
    Tensor ssm_state;   // [B, E, N]
};

// A mixer is a DeltaHost: the LM adds the mixer's OutputDelta (if any) to its output, o = mixer(u) + Δ(u).
class Mixer : public DeltaHost {
public:
    virtual Tensor forward(const Tensor& hidden) = 0;                 // [B, L, D] -> [B, L, D]
    virtual Tensor step(const Tensor& hidden, MixerState& state) = 0;  // [B, D] -> [B, D]
    // The state before the first token: h0 (or zeros), then the prefix positions run through (see hook_prefix).
    virtual MixerState initial_state(int64_t batch, DType dtype) = 0;
    // Scan hooks set by peft/ (undefined = off). Registered as parameters by the PEFT method when attached.
    Tensor hook_initial_state;  // h0 [E, N]
    Tensor hook_state_offset;   // h′ [E, N]
    // Low-rank h′ = lora_B [E, r] · lora_A [r, N] (STATE_OFFSET with "r"); read when hook_state_offset is undefined.
    Tensor hook_state_offset_lora_B, hook_state_offset_lora_A;
    // The h′ the scan reads: the full hook, the low-rank product, or undefined.
    Tensor state_offset() const;
    Tensor hook_output_offset;  // y′ [E]
    // Prefix vectors p [P, E] (reference/peft-methods.md §4.5): after in_proj, x ← [p; x] and z ← [0; z] along
    // the sequence, conv/scan/gate run on P + L positions, and the first P are dropped before out_proj. In the
    // recurrent mode initial_state() runs the P positions through one-step updates with z = 0.
    Tensor hook_prefix;
    // Additional-scan (reference/peft-methods.md §4.4; Mamba only): k more states per channel with A = −exp(A_log_ext)
    // [E, k] and B, C rows [k, E] applied to the conv output u as x_proj's B and C rows are; same Δ, same gate.
    Tensor hook_A_log_ext, hook_B_ext, hook_C_ext;
    // Conv initial state c0 [E, K−1] (INITIAL_STATE with conv_init_state, ssm-peft): the K−1 inputs the causal conv
    // sees before the first position, in place of its zero padding; in the step mode, the start of the conv window.
    Tensor hook_conv_initial_state;

protected:
    // conv(x) for x [B, E, L], with hook_conv_initial_state (when set) in place of the left zero padding.
    Tensor causal_conv(DepthwiseConv1d& conv, const Tensor& x) const;
    // Prepends the prefix to x and zeros to z ([B, E, L] -> [B, E, P + L]); returns P (0 when no prefix).
    int64_t prepend_prefix(Tensor& x, Tensor& z) const;
    // One recurrent step after in_proj: x, z [B, E] -> the gated scan output y ⊙ SiLU(z) [B, E] (before out_proj).
    virtual Tensor step_inner(const Tensor& x, const Tensor& z, MixerState& state) = 0;
    // Feeds the prefix rows through step_inner with z = 0 (no gradient: the recurrent mode is for inference).
    void run_prefix(MixerState& state);
    // initial_state for a mixer of width E, state size N and conv window K whose weights are on `device`: a zero conv
    // window, h0 broadcast over the batch (or zeros), then the prefix run through.
    MixerState start_state(int64_t batch, DType dtype, int64_t E, int64_t N, int64_t K, Device device);
};

// Options for LanguageModel::generate. Sampling filters as HF's logits warpers, in their order: temperature, top-k,
// top-p.
struct GenerationOptions {
    int64_t max_new_tokens = 32;
    double temperature = 1.0;  // 0 = greedy
    int64_t top_k = 0;         // 0 = no top-k filter; else the k largest logits and any tied with the k-th (HF's)
    double top_p = 1.0;        // nucleus: drops the least likely tokens whose total probability is <= 1 − top_p
    std::vector<int64_t> stop_ids;  // generation ends after emitting one of these (kept in the output, as HF's eos)
    uint64_t seed = 0;
};

// The tokens sampling draws the next one from, with their unnormalised weights exp((logit − max) / temperature), in
// decreasing logit order (ties by id): top-k, then top-p as HF's TopPLogitsWarper (ascending cumulative
// probabilities, the most likely token always kept). temperature > 0.
std::vector<std::pair<int64_t, double>> sampling_candidates(const std::vector<double>& logits,
                                                            const GenerationOptions& options);

class LanguageModel : public Module {
public:
    // A fresh model with mamba_ssm's init (Mamba) or Longhorn's, seeded.
    LanguageModel(const LMConfig& config, uint64_t seed);
    const LMConfig& config() const { return config_; }

    Tensor forward(const Tensor& ids);  // ids [B, L] (I64/I32) -> logits [B, L, V]
    // Frame models: x [B, L, F] (floating) -> logits [B, L, V]; causal, so logits[:, t] sees frames 0..t.
    Tensor forward_frames(const Tensor& x);
    // Sequence classification: the logits at the last frame, which has seen them all. x [B, L, F] -> [B, V].
    Tensor classify_frames(const Tensor& x);
    bool reads_frames() const { return encoder_ != nullptr; }
    // Mean next-token cross-entropy over the B·(L−1) shifted positions (HF's loss with labels = ids).
    Tensor loss(const Tensor& ids);
    static Tensor next_token_loss(const Tensor& logits, const Tensor& ids);

    // The states before the first token: zero, or what PEFT hooks put there (initial states, the prefix run
    // through, the prompt's virtual tokens run through), so that initial_states + step per token = forward.
    std::vector<MixerState> initial_states(int64_t batch);
    Tensor step(const Tensor& ids, std::vector<MixerState>& states);  // ids [B] -> logits [B, V]
    // Continues each prompt token by token with the recurrent mode; returns prompt + new tokens.
    std::vector<int64_t> generate(const std::vector<int64_t>& prompt, const GenerationOptions& options);

    Embedding& embeddings();  // Error for a frame model
    Linear& encoder();        // Error for a token model
    Mixer& mixer(int64_t layer) { return *mixers_.at(size_t(layer)); }
    int64_t num_layers() const { return int64_t(mixers_.size()); }
    Tensor lm_head_weight();  // the embedding when tied
    // Gives the model its own lm_head.weight, a copy of the embedding (used by PEFT merge of an embedding adapter,
    // which must not change the head of a tied model).
    void untie_lm_head();
    Linear* lm_head() { return lm_head_.get(); }  // nullptr when tied
    // PEFT prompt hook: [P, D] virtual token embeddings prepended to every sequence; their positions are
    // dropped from the logits so outputs stay aligned with `ids`.
    Tensor prompt_embeddings;
    // PEFT hook on the head of a tied model (which has no lm_head module to carry it): logits <- d.apply(logits, h).
    // Trainable tokens use it, so that the head reads their rows as the embedding does (HF's tied adapter).
    std::shared_ptr<OutputDelta> tied_head_delta;

    std::string type_name() const override {
        return std::string(config_.model_type == "mamba" ? "Mamba" : "Longhorn") +
               (encoder_ ? "ForFrameClassification" : "ForCausalLM");
    }

private:
    Tensor hidden_states(const Tensor& ids);  // [B, L, D] after norm_f
    Tensor backbone(Tensor h);                 // embedded h [B, L, D] -> [B, L, D] after norm_f (+ prompt hook)
    Tensor apply_head(const Tensor& h);        // [..., D] -> logits [..., V]
    Tensor step_embedded(Tensor h, std::vector<MixerState>& states);
    LMConfig config_;
    std::shared_ptr<Embedding> embeddings_;  // token models
    std::shared_ptr<Linear> encoder_;         // frame models
    std::vector<std::shared_ptr<RMSNorm>> norms_;
    std::vector<std::shared_ptr<Mixer>> mixers_;
    std::shared_ptr<RMSNorm> norm_f_;
    std::shared_ptr<Linear> lm_head_;
};

}  // namespace ssmtune::models
