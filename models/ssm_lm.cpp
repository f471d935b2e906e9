// LanguageModel: the Mamba/Longhorn LM wrapper, its loss, recurrent step and generation (see ssm_lm.h).
#include "models/ssm_lm.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "autograd/checkpoint.h"
#include "autograd/node.h"
#include "models/longhorn_mixer.h"
#include "models/mamba_mixer.h"
#include "ops/ops.h"

namespace ssmtune::models {

// ---------------------------------------------------------------- Mixer prefix hook
Tensor Mixer::state_offset() const {
    if (hook_state_offset.defined() || !hook_state_offset_lora_B.defined()) return hook_state_offset;
    return ops::matmul(hook_state_offset_lora_B, hook_state_offset_lora_A);  // [E, r] · [r, N]
}

int64_t Mixer::prepend_prefix(Tensor& x, Tensor& z) const {
    if (!hook_prefix.defined()) return 0;
    const int64_t B = x.size(0), E = x.size(1), P = hook_prefix.size(0);
    SSMTUNE_CHECK(hook_prefix.dim() == 2 && hook_prefix.size(1) == E, "prefix hook must be [P, E=", E, "], got ",
                  hook_prefix.describe());
    Tensor p = hook_prefix.transpose(0, 1).unsqueeze(0).expand({B, E, P});  // [B, E, P]
    x = ops::concat({p, x}, 2);                                             // [B, E, P + L]
    z = ops::concat({Tensor::zeros({B, E, P}, z.dtype(), z.device()), z}, 2);  // [B, E, P + L]
    return P;
}

void Mixer::run_prefix(MixerState& state) {
    if (!hook_prefix.defined()) return;
    autograd::NoGradGuard no_grad;
    const int64_t B = state.ssm_state.size(0), E = hook_prefix.size(1);
    const Tensor p = hook_prefix.detach().to(state.ssm_state.dtype());
    const Tensor z = Tensor::zeros({B, E}, p.dtype(), p.device());
    for (int64_t j = 0; j < p.size(0); ++j) step_inner(p.select(0, j).unsqueeze(0).expand({B, E}), z, state);
}

Tensor Mixer::causal_conv(DepthwiseConv1d& conv, const Tensor& x) const {
    if (!hook_conv_initial_state.defined()) return conv.forward(x);
    const int64_t B = x.size(0), E = x.size(1), L = x.size(2), K1 = conv.kernel() - 1;
    SSMTUNE_CHECK(hook_conv_initial_state.shape() == Shape({E, K1}), "conv initial state hook must be [E=", E, ", K-1=", K1,
                  "], got ", hook_conv_initial_state.describe());
    Tensor c0 = hook_conv_initial_state.unsqueeze(0).expand({B, E, K1});          // [B, E, K-1]
    return conv.forward(ops::concat({c0, x}, 2)).narrow(2, K1, L).contiguous();  // [B, E, L]
}

MixerState Mixer::start_state(int64_t batch, DType dtype, int64_t E, int64_t N, int64_t K, Device device) {
    MixerState s;
    s.conv_state = Tensor::zeros({batch, E, K}, dtype, device);
    if (hook_conv_initial_state.defined())  // the window before the first token: [0, c0] (its oldest slot drops out)
        s.conv_state = ops::concat({Tensor::zeros({batch, E, 1}, dtype, device),
                                    hook_conv_initial_state.detach().to(dtype).unsqueeze(0).expand({batch, E, K - 1})},
                                   2).contiguous();
    s.ssm_state = hook_initial_state.defined()
                      ? hook_initial_state.detach().to(dtype).unsqueeze(0).expand({batch, E, N}).contiguous()
                      : Tensor::zeros({batch, E, N}, dtype, device);
    run_prefix(s);
    return s;
}

// ---------------------------------------------------------------- LanguageModel
LanguageModel::LanguageModel(const LMConfig& config, uint64_t seed) : config_(config) {
    config_.validate();
    Generator gen(seed);
    auto backbone = register_module("backbone", std::make_shared<ModuleGroup>("MambaModel"));
    if (config.input_size > 0)  // PyTorch's default Linear init, like the S4D classifier's encoder
        encoder_ = backbone->add("encoder", std::make_shared<Linear>(config.input_size, config.hidden_size, true, gen));
    else
        embeddings_ = backbone->add("embeddings", std::make_shared<Embedding>(config.vocab_size, config.hidden_size,
                                                                             gen, config.embedding_init_std));
    auto layers = backbone->add("layers", std::make_shared<ModuleGroup>("ModuleList"));
    for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
        auto block = layers->add(std::to_string(i), std::make_shared<ModuleGroup>("Block"));
        norms_.push_back(block->add("norm", std::make_shared<RMSNorm>(config.hidden_size, config.layer_norm_epsilon)));
        std::shared_ptr<Mixer> mixer;
        if (config.model_type == "mamba") mixer = std::make_shared<MambaMixer>(config, gen);
        else mixer = std::make_shared<LonghornMixer>(config, gen);
        mixers_.push_back(block->add("mixer", mixer));
    }
    norm_f_ = backbone->add("norm_f", std::make_shared<RMSNorm>(config.hidden_size, config.layer_norm_epsilon));
    if (!config.tie_word_embeddings) {
        lm_head_ = register_module("lm_head", std::make_shared<Linear>(config.hidden_size, config.vocab_size, false, gen));
        lm_head_->weight() = Tensor::randn({config.vocab_size, config.hidden_size}, gen, DType::F32, 0.0,
                                           config.embedding_init_std).set_requires_grad(true);
    }
}

Embedding& LanguageModel::embeddings() {
    SSMTUNE_CHECK(embeddings_, "this ", config_.model_type, " model reads real-valued frames (input_size ",
                  config_.input_size, ") and has no token embedding; fix: feed it frames, or use a token model");
    return *embeddings_;
}

Linear& LanguageModel::encoder() {
    SSMTUNE_CHECK(encoder_, "this ", config_.model_type, " model reads token ids and has no frame encoder; fix: a model "
                  "with input_size > 0");
    return *encoder_;
}

Tensor LanguageModel::lm_head_weight() {
    if (config_.tie_word_embeddings) return embeddings_->weight();
    return lm_head_->weight();
}

Tensor LanguageModel::apply_head(const Tensor& h) {
    // Tied: the embedding matrix itself (an adapter on the embedding lookup does not change the head, as in HF,
    // except trainable tokens, whose rows HF ties to the head as well).
    if (config_.tie_word_embeddings) {
        const Tensor logits = ops::linear(h, embeddings_->weight());
        return tied_head_delta ? tied_head_delta->apply(logits, h) : logits;
    }
    return lm_head_->forward(h);
}

void LanguageModel::untie_lm_head() {
    if (!config_.tie_word_embeddings) return;
    SSMTUNE_CHECK(!tied_head_delta, "cannot untie the head while trainable tokens tie their rows to it; fix: detach or "
                  "merge that adapter first");
    Generator gen(0);
    lm_head_ = register_module("lm_head", std::make_shared<Linear>(config_.hidden_size, config_.vocab_size, false, gen));
    lm_head_->weight() = embeddings_->weight().detach().clone().set_requires_grad(embeddings_->weight().requires_grad());
    config_.tie_word_embeddings = false;
}

Tensor LanguageModel::hidden_states(const Tensor& ids) {
    SSMTUNE_CHECK(ids.dim() == 2, "language model input must be token ids [B, L], got ", ids.describe());
    return backbone(embeddings().forward(ids));  // [B, L, D]
}

Tensor LanguageModel::backbone(Tensor h) {
    const int64_t B = h.size(0), L = h.size(1), P = prompt_embeddings.defined() ? prompt_embeddings.size(0) : 0;
    if (P > 0) {
        Tensor prompt = prompt_embeddings.unsqueeze(0).expand({B, P, config_.hidden_size});
        h = ops::concat({prompt, h}, 1);  // [B, P + L, D]
    }
    const bool checkpointing = gradient_checkpointing() && is_training() && autograd::grad_enabled();
    const std::vector<Generator*> generators = checkpointing ? training_generators(*this) : std::vector<Generator*>();
    for (size_t i = 0; i < mixers_.size(); ++i) {
        const auto layer = [this, i](const Tensor& x) {
            Tensor u = norms_[i]->forward(x);
            return ops::add(x, mixers_[i]->add_delta(mixers_[i]->forward(u), u));  // + Δ(u) when an adapter is attached
        };
        h = checkpointing ? autograd::checkpoint(layer, h, generators) : layer(h);
    }
    h = norm_f_->forward(h);
    return P > 0 ? h.narrow(1, P, L) : h;
}

Tensor LanguageModel::forward(const Tensor& ids) { return apply_head(hidden_states(ids)); }

Tensor LanguageModel::forward_frames(const Tensor& x) {
    Linear& enc = encoder();
    SSMTUNE_CHECK(x.dim() == 3 && x.size(2) == config_.input_size && is_floating(x.dtype()), "a frame model takes "
                  "real-valued frames [B, L, F=", config_.input_size, "], got ", x.describe());
    return apply_head(backbone(enc.forward(x)));
}

Tensor LanguageModel::classify_frames(const Tensor& x) {
    Tensor logits = forward_frames(x);  // [B, L, V]
    return logits.select(1, logits.size(1) - 1);
}

Tensor LanguageModel::next_token_loss(const Tensor& logits, const Tensor& ids) {
    const int64_t B = ids.size(0), L = ids.size(1), V = logits.size(-1);
    SSMTUNE_CHECK(L >= 2, "next-token loss needs sequences of at least 2 tokens, got ", ids.describe());
    Tensor shifted_logits = logits.narrow(1, 0, L - 1).reshape({B * (L - 1), V});
    Tensor targets = ids.narrow(1, 1, L - 1).reshape({B * (L - 1)});
    return ops::cross_entropy(shifted_logits, targets);
}

Tensor LanguageModel::loss(const Tensor& ids) { return next_token_loss(forward(ids), ids); }

std::vector<MixerState> LanguageModel::initial_states(int64_t batch) {
    std::vector<MixerState> states;
    const DType dtype = norm_f_->weight().dtype();
    for (auto& m : mixers_) states.push_back(m->initial_state(batch, dtype));
    if (prompt_embeddings.defined()) {  // PEFT prompt: its virtual tokens come first, as in forward()
        autograd::NoGradGuard no_grad;
        for (int64_t p = 0; p < prompt_embeddings.size(0); ++p)
            step_embedded(prompt_embeddings.select(0, p).unsqueeze(0).expand({batch, config_.hidden_size}).contiguous(),
                          states);
    }
    return states;
}

// One recurrent step from an embedded token h [B, D] through every layer; returns logits [B, V].
Tensor LanguageModel::step_embedded(Tensor h, std::vector<MixerState>& states) {
    SSMTUNE_CHECK(states.size() == mixers_.size(), "step: ", states.size(), " layer states for ", mixers_.size(),
                  " layers; fix: start from initial_states()");
    for (size_t i = 0; i < mixers_.size(); ++i) {
        Tensor u = norms_[i]->forward(h);
        h = ops::add(h, mixers_[i]->add_delta(mixers_[i]->step(u, states[i]), u));
    }
    return apply_head(norm_f_->forward(h));
}

Tensor LanguageModel::step(const Tensor& ids, std::vector<MixerState>& states) {
    SSMTUNE_CHECK(ids.dim() == 1, "step takes one token per sequence, ids [B], got ", ids.describe());
    return step_embedded(embeddings().forward(ids), states);
}

std::vector<std::pair<int64_t, double>> sampling_candidates(const std::vector<double>& l,
                                                            const GenerationOptions& options) {
    SSMTUNE_CHECK(options.temperature > 0 && !l.empty(), "sampling needs a temperature > 0 and logits");
    const int64_t V = int64_t(l.size());
    std::vector<int64_t> order(static_cast<size_t>(V));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return l[size_t(a)] > l[size_t(b)]; });
    // top-k: HF keeps every logit >= the k-th largest, so ties with it stay
    int64_t kept = V;
    if (options.top_k > 0 && options.top_k < V) {
        const double kth = l[size_t(order[size_t(options.top_k - 1)])];
        kept = options.top_k;
        while (kept < V && l[size_t(order[size_t(kept)])] >= kth) ++kept;
    }
    const double top = l[size_t(order[0])];
    std::vector<std::pair<int64_t, double>> out;
    double total = 0;
    for (int64_t j = 0; j < kept; ++j) {
        const int64_t id = order[size_t(j)];
        out.emplace_back(id, std::exp((l[size_t(id)] - top) / options.temperature));
        total += out.back().second;
    }
    // top-p: from the least likely up, drop tokens while their cumulative probability stays <= 1 − top_p
    if (options.top_p < 1) {
        double cumulative = 0;
        while (out.size() > 1) {
            cumulative += out.back().second / total;
            if (cumulative > 1 - options.top_p) break;
            out.pop_back();
        }
    }
    return out;
}

std::vector<int64_t> LanguageModel::generate(const std::vector<int64_t>& prompt, const GenerationOptions& options) {
    SSMTUNE_CHECK(!prompt.empty(), "generate needs a prompt of at least one token");
    embeddings();  // frame models cannot generate tokens: Error here
    SSMTUNE_CHECK(options.temperature >= 0, "generate: temperature must be >= 0, got ", options.temperature);
    SSMTUNE_CHECK(options.top_p >= 0 && options.top_p <= 1, "generate: top_p must be in [0, 1], got ", options.top_p);
    autograd::NoGradGuard no_grad;
    std::vector<MixerState> states = initial_states(1);  // (a PEFT prompt's virtual tokens already run through)
    Tensor logits;
    const Device dev = norm_f_->weight().device();  // token ids go where the model is
    const auto token = [&](int64_t id) { return Tensor::from_vector<int64_t>({id}, {1}).to(dev); };
    for (int64_t tok : prompt) logits = step(token(tok), states);
    std::vector<int64_t> out = prompt;
    Generator gen(options.seed);
    for (int64_t i = 0; i < options.max_new_tokens; ++i) {
        const std::vector<double> l = logits.to_vector<double>();
        int64_t next = 0;
        if (options.temperature == 0) {
            next = int64_t(std::max_element(l.begin(), l.end()) - l.begin());
        } else {
            const std::vector<std::pair<int64_t, double>> candidates = sampling_candidates(l, options);
            double total = 0;
            for (const auto& c : candidates) total += c.second;
            double r = philox_uniform(gen.seed(), gen.advance(1)) * total;
            next = candidates.back().first;
            for (const auto& c : candidates) {
                r -= c.second;
                if (r < 0) {
                    next = c.first;
                    break;
                }
            }
        }
        out.push_back(next);
        if (std::find(options.stop_ids.begin(), options.stop_ids.end(), next) != options.stop_ids.end()) break;
        if (i + 1 < options.max_new_tokens) logits = step(token(next), states);
    }
    return out;
}

}  // namespace ssmtune::models
