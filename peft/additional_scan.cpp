// ADDITIONAL_SCAN: MambaPEFT's Additional-scan, the baseline of Kang et al. 2025's tables that grows the state
// (reference/peft-methods.md §4.4). Per selected Mamba layer, k states join the N of every channel:
//
//   A′ = −exp(A_log_ext) [E, k],  B′_t = W_B′ u_t,  C′_t = W_C′ u_t  (W_B′, W_C′ [k, E]: rows added to x_proj's B, C)
//   h′_t = exp(Δ_t A′) ⊙ h′_{t−1} + Δ_t B′_t u_t,  y_t += C′_t · h′_t   (same Δ_t and u_t, before the SiLU(z) gate)
//
// so the mixer is a Mamba mixer with state size N + k whose first N states are frozen. 3·k·E trainable per layer.
// Init: W_B′ kaiming-uniform(a=√5) = U(±1/√E), W_C′ zero (the output is unchanged until W_C′ moves), A_log_ext =
// log(N+1 .. N+k) for every channel, continuing S4D-Real. MambaPEFT's code copies the last entry of an array that
// holds the non-log values 1..N (so A_log = N, A ≈ −e^N: memoryless new states); the notes read that as a bug and
// take its commented-out alternative, as we do. "init": "random" draws W_C′ like W_B′ (a non-zero start for tests).
// Files: backbone.layers.{i}.mixer.A_log_ext [E, k], .x_proj_B_ext [k, E], .x_proj_C_ext [k, E].
// Not here: Longhorn (its ε = β/(1 + β‖k‖²) couples all states, so added k rows would change the old ones) and S4D;
// merging (the base model's state size is part of its shape).
#include <cmath>

#include "models/mamba_mixer.h"
#include "peft/method.h"

namespace ssmtune::peft {

namespace {

class AdditionalScanMethod : public Method {
public:
    AdditionalScanMethod(ModelView& model, const Config& config) {
        SSMTUNE_CHECK(model.kind() == "mamba", "ADDITIONAL_SCAN grows Mamba's diagonal state and needs a Mamba model, "
                      "not ", model.kind(), model.kind() == "longhorn"
                          ? " (Longhorn's step size ε = β/(1+β‖k‖²) couples every state, so added states would change "
                            "the existing ones)" : "", "; fix: STATE_OFFSET or INITIAL_STATE work on every model");
        const nlohmann::json& kj = config.json["d_state"];
        SSMTUNE_CHECK(kj.is_number_integer() && kj.get<int64_t>() >= 1 && kj.get<int64_t>() <= 4096,
                      "ADDITIONAL_SCAN \"d_state\" (the number of added states k) must be an integer in [1, 4096], got ",
                      kj.dump());
        const int64_t k = kj.get<int64_t>();
        const auto& c = model.lm->config();
        const int64_t E = c.intermediate_size, N = c.state_size;
        const DType dtype = model.dtype();
        Generator gen(config.json["init_seed"].get<uint64_t>());
        const bool random = config.json["init"] == "random";
        const double bound = 1.0 / std::sqrt(double(E));  // kaiming_uniform(a=√5) over fan_in E
        for (int64_t i : selected_layers(config.json, model)) {
            Tensor a_log = Tensor::empty({E, k}, DType::F64);
            for (int64_t e = 0; e < E; ++e)
                for (int64_t j = 0; j < k; ++j) a_log.data<double>()[e * k + j] = std::log(double(N + 1 + j));
            Tensor b = Tensor::uniform({k, E}, gen, -bound, bound);
            Tensor cm = random ? Tensor::uniform({k, E}, gen, -bound, bound) : Tensor::zeros({k, E});
            models::Mixer& mixer = model.lm->mixer(i);
            mixer.hook_A_log_ext = trainable(a_log.to(dtype));
            mixer.hook_B_ext = trainable(b.to(dtype));
            mixer.hook_C_ext = trainable(cm.to(dtype));
            mixers_.push_back(&mixer);
            const std::string pre = "backbone.layers." + std::to_string(i) + ".mixer.";
            tensors_.emplace_back(pre + "A_log_ext", mixer.hook_A_log_ext);
            tensors_.emplace_back(pre + "x_proj_B_ext", mixer.hook_B_ext);
            tensors_.emplace_back(pre + "x_proj_C_ext", mixer.hook_C_ext);
        }
    }
    std::vector<std::pair<std::string, Tensor>> tensors() const override { return tensors_; }
    std::string merge_refusal() const override {
        return "Additional-scan grows the state from N to N + k, and the base model's A_log and x_proj have room "
               "for N states only";
    }
    void detach() override {
        for (auto* m : mixers_) m->hook_A_log_ext = m->hook_B_ext = m->hook_C_ext = Tensor();
        mixers_.clear();
    }

private:
    std::vector<std::pair<std::string, Tensor>> tensors_;
    std::vector<models::Mixer*> mixers_;
};

}  // namespace

std::unique_ptr<Method> make_additional_scan(ModelView& model, const Config& config) {
    return std::make_unique<AdditionalScanMethod>(model, config);
}

}  // namespace ssmtune::peft
