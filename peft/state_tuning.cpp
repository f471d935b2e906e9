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
// Not here: the low-rank h′ = B_r A_r form and conv initial states of ssm-peft.
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
        for (int64_t i : selected_layers(config.json, model)) {
            if (model.lm) {
                const auto& c = model.lm->config();
                const int64_t E = c.intermediate_size, N = c.state_size;
                Tensor t = make(hook == Hook::OutputOffset ? Shape{E} : Shape{E, N});
                models::Mixer& mixer = model.lm->mixer(i);
                slot(mixer.hook_state_offset, mixer.hook_output_offset, mixer.hook_initial_state) = t;
                lm_mixers_.push_back(&mixer);
                tensors_.emplace_back("backbone.layers." + std::to_string(i) + ".mixer." + leaf, t);
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
        for (auto* m : lm_mixers_) slot(m->hook_state_offset, m->hook_output_offset, m->hook_initial_state) = Tensor();
        for (auto* l : s4d_layers_) slot(l->hook_state_offset, l->hook_output_offset, l->hook_initial_state) = Tensor();
        lm_mixers_.clear();
        s4d_layers_.clear();
    }

private:
    Tensor& slot(Tensor& state_offset, Tensor& output_offset, Tensor& initial_state) const {
        return hook_ == Hook::StateOffset ? state_offset : hook_ == Hook::OutputOffset ? output_offset : initial_state;
    }
    Hook hook_;
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
