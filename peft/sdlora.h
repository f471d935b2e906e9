// SDLORA: Sparse Dimension Tuning of the SSM parameters plus LoRA on the projections (Galim et al. 2024,
// "Parameter-Efficient Fine-Tuning of State Space Models", ssm-peft; reference/peft-methods.md §2.1, §2.2).
//
// Two phases. `sdlora_select` attaches a dense, zero-initialised warm-up adapter, lets the caller train it for
// `warmup_steps` steps, scores channels and states from how far the warm-up moved them, detaches it (the base
// model is bit-identical afterwards) and returns the config with "dimensions" filled. `apply` on that config then
// attaches zero-initialised sparse deltas at exactly those dimensions (and LoRA on target_modules). The dimensions
// are saved in adapter_config.json, so save → load rebuilds the same masks without a warm-up.
//
//   auto cfg = peft::Config::parse(R"({"peft_type": "SDLORA", "channel_ratio": 0.05, "state_ratio": 0.25})");
//   cfg = peft::sdlora_select(model, cfg, [&](peft::Adapter& warmup) { /* warmup_steps steps on warmup.parameters() */ });
//   auto adapter = peft::apply(model, cfg);
//
// Not here: the method bodies (sdlora.cpp: Mamba, Longhorn, selection; sdlora_s4d.cpp: S4D), the training
// loop of the warm-up (the caller's: `ssmtune finetune` trains it as the run's first steps, tools/train_common.cpp), CUDA
// models (the scatter uses index_select/concat, which are CPU-only in this build).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "peft/lora.h"
#include "peft/method.h"

namespace ssmtune::peft {

// Runs the warm-up and the selection; returns `config` with "dimensions" filled (any given ones are replaced).
// `train_warmup` gets the warm-up adapter and must train warmup.parameters() (it may also read them).
// Scores (ties go to the lower index):
//   Mamba:    ΔA_log = the warm-up's change of A_log [E, N]; channels d by Σ_n ΔA_log[d,n]², top
//             max(1, round(channel_ratio·E)); per channel the top max(1, round(state_ratio·N)) states by ΔA_log².
//   Longhorn: channels d by Σ ΔW[r,d]² over x_proj's k and q rows r ∈ [R, R+2N); no states.
//   S4D:      see sdlora_s4d.cpp (usable channels/states by the kernel contribution at lag L/2, update ones by |ΔA|).
Config sdlora_select(models::Module& model, const Config& config,
                     const std::function<void(Adapter& warmup)>& train_warmup);

// ---- pieces shared by sdlora.cpp and sdlora_s4d.cpp ----

// A trainable change of one parameter at fixed flat positions (row-major flat indices, strictly ascending):
//   delta() = alpha · scatter(values) − base ⊙ drop
// where scatter puts values[j] at flat position indices[j] of a zero tensor of the parameter's shape, and the
// optional `drop` mask (1 = pruned) zeroes the base there (effective = base ⊙ (1 − drop) + alpha · scatter).
// scatter is index_select(concat(values, [0]), map) with map[p] = j where indices[j] = p, else the appended
// zero, so its backward (index_select's scatter-add) gives dvalues exactly. All positions: a plain reshape.
class SparseDelta : public models::ParameterDelta {
public:
    SparseDelta(models::Module& host, std::string param, std::vector<int64_t> indices, double alpha, Tensor values,
                Tensor drop = Tensor());
    Tensor delta() override;
    Tensor values() const { return params_[0].second; }  // [k]
    const std::vector<int64_t>& indices() const { return indices_; }
    models::Module& host() const { return *host_; }
    const std::string& param() const { return param_; }
    std::string type_name() const override { return "SparseDelta"; }

private:
    models::Module* host_;
    std::string param_;
    Shape shape_;
    std::vector<int64_t> indices_;
    double alpha_;
    Tensor map_;   // I64 [numel]; undefined when every position is trained
    Tensor drop_;  // 1 where the base is pruned; undefined when nothing is
};

// The deltas a method attached, in file order, with their adapter-file names.
struct SparseDeltaSet {
    std::vector<std::pair<std::string, std::shared_ptr<SparseDelta>>> deltas;
    // Creates the delta (values zero, or N(0, 0.1²) from `gen` when `random`), attaches it to host.param as child
    // `child` and records it under `name`.
    std::shared_ptr<SparseDelta> add(const std::string& name, models::Module& host, const std::string& param,
                                     const std::string& child, std::vector<int64_t> indices, double alpha,
                                     bool random, Generator& gen, Tensor drop = Tensor());
    std::vector<std::pair<std::string, Tensor>> tensors() const;
    const SparseDelta& find(const std::string& name) const;  // an Error when absent
    void merge();   // param ← param + delta() for each (under NoGradGuard)
    void detach();
};

// The k indices of the largest scores, ties to the lower index, returned in ascending index order.
std::vector<int64_t> top_k_indices(const std::vector<double>& scores, int64_t k);
// The same among `candidates` only (k is capped at their number).
std::vector<int64_t> top_k_among(const std::vector<double>& scores, std::vector<int64_t> candidates, int64_t k);
// max(1, round(ratio · n)), at most n.
int64_t ratio_count(double ratio, int64_t n);
// A non-empty list of distinct integers in [0, n) read from dimensions JSON, in the given order (`what` names
// it in errors).
std::vector<int64_t> read_index_list(const nlohmann::json& j, int64_t n, const std::string& what);
// The selected layers, after checking "dimensions" is an object with exactly one object per selected layer
// (null "dimensions": the Error that says to run sdlora_select or give them).
std::vector<int64_t> dimension_layers(const nlohmann::json& config, const ModelView& model);
// LoRA next to the SDT deltas: target_modules null → `default_targets`; "init": "random" draws LoRA B too.
LoraAttachment attach_sdlora_lora(ModelView& model, const nlohmann::json& config, const nlohmann::json& default_targets,
                                  Generator& gen, bool random);
// Checks the SDLORA fields this file adds (ratios, seq_len) with the config's source named.
void check_sdlora_fields(const nlohmann::json& config);

// S4D parts (sdlora_s4d.cpp).
std::unique_ptr<Method> make_sdlora_s4d(ModelView& model, const Config& config);
// Attaches the S4D warm-up deltas (dense on C, log_A_real, A_imag, log_dt, D) to every selected layer.
void attach_s4d_warmup(ModelView& model, const nlohmann::json& config, SparseDeltaSet& set);
// The S4D "dimensions" from the warm-up deltas (read before they are detached).
nlohmann::json select_s4d_dimensions(ModelView& model, const nlohmann::json& config, const SparseDeltaSet& warm);

}  // namespace ssmtune::peft
