// State-based methods (Kang et al. 2025 "State-offset Tuning"; Galim et al. 2024 initial-state baseline;
// reference/peft-methods.md §3, §4.1–4.3). One trainable tensor per selected layer, set on the scan hooks:
//
//   STATE_OFFSET "h": y_t = C_t·(h_t + h′) + D u_t, h′ [E, N]     file: backbone.layers.{i}.mixer.state_offset
//   STATE_OFFSET "y": y_t = C_t·h_t + D u_t + y′,   y′ [E]        file: backbone.layers.{i}.mixer.output_offset
//   INITIAL_STATE:    h_{−1} = h0 instead of 0,      h0 [E, N]    file: backbone.layers.{i}.mixer.initial_state
//
// (all before the SiLU(z) gate; Longhorn's read-out uses q_t in place of C_t). On S4D the same names sit under
// s4_layers.{i}. with complex mode tensors as real pairs: h′ and h0 [H, N/2, 2] (h′ adds 2·Re Σ_n C_n h′_n, a
// per-channel constant; h0 adds 2·Re Σ_n C_n Ā_n^{t+1} h0_n), y′ [H]. Zero init by default ("random": N(0, 0.1²)).
// None of them folds into the weights (merge refuses): h′ and y′ act after the recurrence, h0 before it.
// STATE_OFFSET "h" with "r" > 0 is the low-rank form of ssm-state-tuning (notes §4.1 b): h′ = B_r A_r with
// B_r [E, r] zero and A_r [r, N] kaiming-uniform(a=√5) (U(±1/√N); S4D: A_r [r, N/2, 2], fan-in N), r(E + N) per
// layer; files ...state_offset_lora_B [E, r] and ...state_offset_lora_A [r, N] ("random" init draws B_r like A_r).
// INITIAL_STATE with "conv_init_state": true adds ssm-peft's conv initial state (notes §3): per LM layer c0 [E, K−1],
// the K−1 inputs the causal conv sees before the first position instead of zeros (file ...mixer.conv_initial_state;
// zero init, "random" N(0, 0.1²)); E(K−1) more per layer. Not on S4D, which has no conv.
// Not here: ssm-state-tuning's r_ratio reshape of the low-rank factors.
#include <algorithm>
#include <cmath>

#include "peft/method.h"

namespace ssmtune::peft {

namespace {

enum class Hook { StateOffset, OutputOffset, InitialState };

class StateMethod : public Method {
public:
    StateMethod(ModelView& model, const Config& config, Hook hook) : hook_(hook) {
        Generator gen(config.json["init_seed"].get<uint64_t>());
        const bool random = config.json["init"] == "random";
        const DType dtype = model.dtype();
        auto make = [&](const Shape& shape) {
            return trainable(random ? Tensor::randn(shape, gen, dtype, 0.0, 0.1) : Tensor::zeros(shape, dtype));
        };
        const char* leaf = hook == Hook::StateOffset ? "state_offset" : hook == Hook::OutputOffset ? "output_offset"
                                                                                                   : "initial_state";
        const nlohmann::json rj = config.json.contains("r") ? config.json.at("r") : nlohmann::json(0);  // STATE_OFFSET
        SSMTUNE_CHECK(rj.is_number_integer() && rj.get<int64_t>() >= 0, "STATE_OFFSET \"r\" must be 0 (a full h′) or a "
                      "rank >= 1 (h′ = B A), got ", rj.dump());
        rank_ = rj.get<int64_t>();
        SSMTUNE_CHECK(rank_ == 0 || hook == Hook::StateOffset, "STATE_OFFSET \"r\" = ", rank_, " needs variant \"h\": "
                      "the output offset y′ [E] is a vector; fix: \"r\": 0");
        if (rank_ > 0) {
            attach_low_rank(model, config, gen, random);
            return;
        }
        const bool conv_state = config.json.contains("conv_init_state") && config.json.at("conv_init_state") == true;
        SSMTUNE_CHECK(!conv_state || model.lm, "INITIAL_STATE \"conv_init_state\" trains the start of Mamba's and "
                      "Longhorn's causal conv window; the S4D classifier has no such conv; fix: \"conv_init_state\": false");
        SSMTUNE_CHECK(!conv_state || model.lm->config().conv_kernel > 1, "INITIAL_STATE \"conv_init_state\": conv_kernel "
                      "1 has no padding to replace; fix: \"conv_init_state\": false");
        for (int64_t i : selected_layers(config.json, model)) {
            if (model.lm) {
                const auto& c = model.lm->config();
                const int64_t E = c.intermediate_size, N = c.state_size;
                Tensor t = make(hook == Hook::OutputOffset ? Shape{E} : Shape{E, N});
                models::Mixer& mixer = model.lm->mixer(i);
                slot(mixer.hook_state_offset, mixer.hook_output_offset, mixer.hook_initial_state) = t;
                lm_mixers_.push_back(&mixer);
                tensors_.emplace_back("backbone.layers." + std::to_string(i) + ".mixer." + leaf, t);
                if (conv_state) {  // c0 [E, K−1] in place of the conv's zero padding
                    mixer.hook_conv_initial_state = make(Shape{E, c.conv_kernel - 1});
                    tensors_.emplace_back("backbone.layers." + std::to_string(i) + ".mixer.conv_initial_state",
                                          mixer.hook_conv_initial_state);
                }
            } else {
                const auto& c = model.s4d->config();
                const int64_t H = c.d_model, M = c.d_state / 2;
                Tensor t = make(hook == Hook::OutputOffset ? Shape{H} : Shape{H, M, 2});
                models::S4DLayer& layer = model.s4d->layer(i);
                slot(layer.hook_state_offset, layer.hook_output_offset, layer.hook_initial_state) = t;
                s4d_layers_.push_back(&layer);
                tensors_.emplace_back("s4_layers." + std::to_string(i) + "." + leaf, t);
            }
        }
    }
    std::vector<std::pair<std::string, Tensor>> tensors() const override { return tensors_; }
    std::string merge_refusal() const override {
        return hook_ == Hook::InitialState
                   ? "an initial state enters the recurrence before the first token and is not a weight"
                   : "a state/output offset acts on the scan read-out at every step and is not a weight";
    }
    void detach() override {
        for (auto* m : lm_mixers_) {
            slot(m->hook_state_offset, m->hook_output_offset, m->hook_initial_state) = Tensor();
            m->hook_state_offset_lora_B = m->hook_state_offset_lora_A = m->hook_conv_initial_state = Tensor();
        }
        for (auto* l : s4d_layers_) {
            slot(l->hook_state_offset, l->hook_output_offset, l->hook_initial_state) = Tensor();
            l->hook_state_offset_lora_B = l->hook_state_offset_lora_A = Tensor();
        }
        lm_mixers_.clear();
        s4d_layers_.clear();
    }

private:
    // h′ = B_r A_r per selected layer: B_r [E, r] zero (or drawn like A_r), A_r [r, N] (S4D [r, N/2, 2]) U(±1/√N).
    void attach_low_rank(ModelView& model, const Config& config, Generator& gen, bool random) {
        const DType dtype = model.dtype();
        const int64_t E = model.lm ? model.lm->config().intermediate_size : model.s4d->config().d_model;
        const int64_t N = model.lm ? model.lm->config().state_size : model.s4d->config().d_state;
        // any r >= 1, also above min(E, N) (h′ then has full rank; as LoRA's r, and Kang et al.'s code sets no bound)
        const Shape a_shape = model.lm ? Shape{rank_, N} : Shape{rank_, N / 2, 2};
        const double a_bound = 1.0 / std::sqrt(double(N)), b_bound = 1.0 / std::sqrt(double(rank_));
        for (int64_t i : selected_layers(config.json, model)) {
            Tensor b = trainable(random ? Tensor::uniform({E, rank_}, gen, -b_bound, b_bound).to(dtype)
                                        : Tensor::zeros({E, rank_}, dtype));
            Tensor a = trainable(Tensor::uniform(a_shape, gen, -a_bound, a_bound).to(dtype));
            std::string pre;
            if (model.lm) {
                models::Mixer& mixer = model.lm->mixer(i);
                mixer.hook_state_offset_lora_B = b;
                mixer.hook_state_offset_lora_A = a;
                lm_mixers_.push_back(&mixer);
                pre = "backbone.layers." + std::to_string(i) + ".mixer.";
            } else {
                models::S4DLayer& layer = model.s4d->layer(i);
                layer.hook_state_offset_lora_B = b;
                layer.hook_state_offset_lora_A = a;
                s4d_layers_.push_back(&layer);
                pre = "s4_layers." + std::to_string(i) + ".";
            }
            tensors_.emplace_back(pre + "state_offset_lora_A", a);
            tensors_.emplace_back(pre + "state_offset_lora_B", b);
        }
    }
    Tensor& slot(Tensor& state_offset, Tensor& output_offset, Tensor& initial_state) const {
        return hook_ == Hook::StateOffset ? state_offset : hook_ == Hook::OutputOffset ? output_offset : initial_state;
    }
    Hook hook_;
    int64_t rank_ = 0;  // STATE_OFFSET "r": 0 = full h′
    std::vector<std::pair<std::string, Tensor>> tensors_;
    std::vector<models::Mixer*> lm_mixers_;
    std::vector<models::S4DLayer*> s4d_layers_;
};

}  // namespace

std::unique_ptr<Method> make_state_offset(ModelView& model, const Config& config) {
    return std::make_unique<StateMethod>(model, config,
                                         config.json["variant"] == "h" ? Hook::StateOffset : Hook::OutputOffset);
}

std::unique_ptr<Method> make_initial_state(ModelView& model, const Config& config) {
    return std::make_unique<StateMethod>(model, config, Hook::InitialState);
}

}  // namespace ssmtune::peft
