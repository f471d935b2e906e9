// LoRA pieces shared by the LORA method and by SDLORA (which trains LoRA on the projections next to its
// sparse SSM deltas): settings from the HF fields, attaching to the matched modules, naming, merging.
// Not here: the method object (lora.cpp), the SSM-side deltas (sdlora.cpp).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "peft/method.h"

namespace ssmtune::peft {

struct LoraSettings {
    int64_t r = 8;
    double scale = 1.0;    // lora_alpha / r, or lora_alpha / √r (rsLoRA)
    double dropout = 0.0;
    // default (A Kaiming, B zero) | gaussian | random (B non-zero too) | pissa | pissa_niter_K | olora | orthogonal
    std::string init = "default";
    bool dora = false;             // use_dora: DoRA on Linear modules
    bool lora_bias = false;        // lora_bias: lora_B carries a bias (out += s · b_B)
    // module: a full module name, to apply rank_pattern / alpha_pattern (empty: the config's r and lora_alpha).
    static LoraSettings from_config(const nlohmann::json& config, const std::string& module = "");
};

// The LoRA deltas attached to the matched modules of one model.
struct LoraAttachment {
    LoraSettings settings;
    nlohmann::json targets;  // the resolved target_modules
    std::vector<std::pair<std::string, models::DeltaHost*>> hosts;  // module name -> host carrying the delta
    std::vector<std::shared_ptr<models::OutputDelta>> deltas;       // the delta on hosts[i] (a host may carry others)
    // PiSSA / OLoRA: each rewritten base weight with its value before (put back on detach, dropped by merge), and the
    // starting value of every LoRA tensor under its file name (for the plain-LoRA form: [A; A0], [B, −B0])
    std::vector<std::pair<Tensor, Tensor>> base_originals;
    std::vector<std::pair<std::string, Tensor>> initial;
    std::vector<std::pair<std::string, Tensor>> tensors() const;     // HF file names, no prefix
    void merge(ModelView& model);
    std::string merge_refusal() const;  // empty, or why merge() cannot fold the adapter (lora_bias without a bias)
    void detach();
    void set_sample_mask(const Tensor& mask);  // every delta's (models::OutputDelta::set_sample_mask); not DoRA
    static void copy_merged(Tensor& w, const Tensor& delta);
};

nlohmann::json default_lora_targets(const ModelView& model);
// Whether a LORA config trains base tensors in place ("bias" other than "none", a non-empty "modules_to_save"), which
// keeps it from sharing the model with other LoRA adapters.
bool lora_trains_base_in_place(const nlohmann::json& config);
bool lora_can_target(models::Module* m);
// Attaches LoRA to the modules `config["target_modules"]` selects (null: the model's default list).
LoraAttachment attach_lora(ModelView& model, const nlohmann::json& config, Generator& gen);

}  // namespace ssmtune::peft
