// The interface every PEFT method implements, and the helpers they share: which model an adapter is attached
// to, HF-style target-module matching, and the per-method factory. Methods live one per file in peft/.
// Not here: the user-facing API (peft.h) and the file formats (adapter.cpp).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/rng.h"
#include "models/layers.h"
#include "models/s4d_model.h"
#include "models/ssm_lm.h"
#include "peft/peft.h"

namespace ssmtune::peft {

class Method {
public:
    virtual ~Method() = default;
    // The trainable tensors under their adapter-file names (no base_model.model. prefix).
    virtual std::vector<std::pair<std::string, Tensor>> tensors() const = 0;
    // How many elements the method adds to the model ("all params" = base + this): every tensor of tensors() by
    // default; methods that train base tensors in place (FULL, BITFIT, PARTIAL, LoRA's "bias") add none for them.
    virtual int64_t num_added() const {
        int64_t n = 0;
        for (auto& [name, t] : tensors()) n += t.numel();
        return n;
    }
    // Empty when merge() is possible, else the reason.
    virtual std::string merge_refusal() const = 0;
    virtual void merge() {}
    // Removes every hook the method attached.
    virtual void detach() = 0;
    // Fields the method adds to adapter_config.json when saving (e.g. SDLoRA's selected dimensions).
    virtual nlohmann::json saved_config() const { return nlohmann::json::object(); }
    // The tensors of the equivalent plain LoRA on the original base (lora_init.h, plain_lora_config), for a LORA
    // whose init rewrote the base weights (PiSSA, OLoRA); empty for every other method and init.
    virtual std::vector<std::pair<std::string, Tensor>> plain_lora_tensors() const { return {}; }
    // Per-sample adapters: mask [B] (1 for the samples this adapter serves), undefined to clear. LORA only.
    virtual void set_sample_mask(const Tensor& mask) {
        SSMTUNE_CHECK(!mask.defined(), "per-sample adapters work with LORA adapters only");
    }
};

// The model an adapter is attached to, with its kind resolved once.
struct ModelView {
    models::Module* module = nullptr;
    models::LanguageModel* lm = nullptr;      // Mamba or Longhorn LM
    models::S4DClassifier* s4d = nullptr;     // S4D classifier
    explicit ModelView(models::Module& m);
    std::string kind() const;                 // "mamba", "longhorn", "s4d"
    DType dtype() const;                      // the parameters' dtype (adapter tensors use it)
    int64_t num_layers() const;
};

// The layer indices a config selects ("layers_to_transform": int or list; all layers when absent/null).
std::vector<int64_t> selected_layers(const nlohmann::json& config, const ModelView& model);

// A plain suffix test (HF's `key.endswith(entry)`: modules_to_save, trainable_token_indices keys).
bool ends_with(const std::string& s, const std::string& tail);
// HF's list matching of names: equal to `target`, or ending in "." + target ("in_proj", "mixer.A_log").
bool name_matches(const std::string& name, const std::string& target);

// HF PEFT's target matching: a string is a full regex match on the module name; a list matches a name equal to
// an entry or ending in "." + entry; "all-linear" matches every Linear except the output head. Only modules
// whose type passes `accept` are returned; a target matching nothing, or matching a module of another type, is an
// Error listing the module names that can be targeted. `layers_to_transform` restricts to those layers.
std::vector<std::pair<std::string, models::Module*>> match_targets(
    const ModelView& model, const nlohmann::json& config, const std::function<bool(models::Module*)>& accept,
    const std::string& what_accepts);

// A trainable tensor owned by a method: zero, or drawn from the method's generator.
Tensor trainable(Tensor t);

// Factory of every method (one function per file).
std::unique_ptr<Method> make_full(ModelView& model, const Config& config);
std::unique_ptr<Method> make_bitfit(ModelView& model, const Config& config);
std::unique_ptr<Method> make_partial(ModelView& model, const Config& config);
std::unique_ptr<Method> make_lora(ModelView& model, const Config& config);
std::unique_ptr<Method> make_state_offset(ModelView& model, const Config& config);
std::unique_ptr<Method> make_initial_state(ModelView& model, const Config& config);
std::unique_ptr<Method> make_prompt(ModelView& model, const Config& config);
std::unique_ptr<Method> make_prefix(ModelView& model, const Config& config);
std::unique_ptr<Method> make_parallel_adapter(ModelView& model, const Config& config);
std::unique_ptr<Method> make_sdlora(ModelView& model, const Config& config);
std::unique_ptr<Method> make_surm(ModelView& model, const Config& config);
std::unique_ptr<Method> make_additional_scan(ModelView& model, const Config& config);
std::unique_ptr<Method> make_trainable_tokens(ModelView& model, const Config& config);

}  // namespace ssmtune::peft
