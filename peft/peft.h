// The PEFT layer: freeze a model and train only a method's tensors (reference/peft-methods.md).
//
//   auto adapter = peft::apply(model, peft::Config::parse(R"({"peft_type": "LORA", "r": 8,
//                                                             "target_modules": ["in_proj", "out_proj"]})"));
//   adapter.print_trainable_parameters();   // trainable params: N || all params: M || trainable%: P
//   ... train adapter.parameters() ...
//   adapter.save("my-adapter");             // adapter_config.json + adapter_model.safetensors
//
// `apply` sets requires_grad off on every base tensor and attaches one method at the hook points the models
// expose (OutputDelta on Linear/Embedding/PointwiseConv1d, ParameterDelta on any parameter, the mixers' scan
// hooks, the LM's prompt embeddings). Files follow HuggingFace PEFT: names carry the `base_model.model.` prefix;
// LORA uses HF's exact tensor names and config fields so adapters go both ways.
// Several adapters on one model: AdapterSet (below) holds them by name, one or (LORA) several attached at a time
// (HF's add_adapter / set_adapter); Adapter::disable / enable is HF's disable_adapter.
// Not here: methods other than LORA active together or per sample, quantised bases, LoRA variants other than DoRA.
#pragma once

#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/tensor.h"
#include "models/module.h"

namespace ssmtune::peft {

// The prefix of every tensor name in adapter_model.safetensors (HF PEFT's).
inline constexpr const char* kAdapterTensorPrefix = "base_model.model.";

// Method names accepted in "peft_type".
const std::vector<std::string>& known_peft_types();

// The adapter configuration: the JSON object of adapter_config.json with every default filled in.
struct Config {
    nlohmann::json json;
    const std::string& peft_type() const;
    // Parses a JSON object; fills defaults for its peft_type; rejects unknown types and unknown keys (listing
    // the valid ones) and out-of-range values. `source` names the text in error messages.
    static Config parse(const std::string& text, const std::string& source = "adapter config");
    static Config from_json(const nlohmann::json& j, const std::string& source = "adapter config");
    static Config from_file(const std::string& path);
    // Returns a copy with `overrides` merged in (then validated again).
    Config with(const nlohmann::json& overrides) const;
};

class Method;  // peft/method.h

// How AdapterSet::add_weighted_adapter combines LORA adapters (HF's add_weighted_adapter arguments).
struct WeightedAdapterOptions {
    // cat | linear | svd | ties | ties_svd | dare_linear | dare_ties | dare_linear_svd | dare_ties_svd |
    // magnitude_prune | magnitude_prune_svd (HF's default: svd); with one adapter always linear, as HF
    std::string combination_type = "svd";
    int64_t svd_rank = 0;         // the *_svd types' rank; 0: the largest of the adapters' ranks
    double svd_clamp = -1;        // a quantile in [0, 1] the SVD factors are clamped to (±); < 0: no clamping
    double density = -1;          // the fraction kept by ties / dare / magnitude_prune (required there)
    std::string majority_sign_method = "total";  // ties: "total" (sign of the sum) or "frequency" (of the signs)
    uint64_t seed = 0;            // dare's random masks (ours, not torch's draws)
};

class Adapter {
public:
    Adapter(models::Module& model, Config config, std::unique_ptr<Method> method, int64_t base_params);
    Adapter(Adapter&&) noexcept;
    Adapter& operator=(Adapter&&) noexcept;
    ~Adapter();

    const Config& config() const { return config_; }
    // The trainable tensors under their adapter-file names (without the base_model.model. prefix).
    std::vector<std::pair<std::string, Tensor>> named_parameters() const;
    std::vector<Tensor> parameters() const;
    int64_t num_trainable() const;
    int64_t num_total() const;  // base parameters + tensors the method added
    std::string trainable_report() const;  // HF's "trainable params: ... || all params: ... || trainable%: ..."
    void print_trainable_parameters() const;

    // adapter_config.json + adapter_model.safetensors (names prefixed base_model.model.), written atomically.
    void save(const std::string& dir) const;
    // The adapter_config.json save() writes (the config with what the method resolved, e.g. target_modules).
    nlohmann::json saved_config() const;
    // A LORA adapter whose init rewrote the base weights (init_lora_weights "pissa", "pissa_niter_K", "olora") as the
    // equivalent plain LoRA of the original base, rank 2r (HF's save_pretrained with
    // path_initial_model_for_weight_conversion): loads with init_lora_weights true on the unmodified base, gives the
    // same outputs, merges the same way. Any other adapter is an Error (save() is already plain).
    void save_as_lora(const std::string& dir) const;
    // Copies the tensors of DIR/adapter_model.safetensors (or, as HF PEFT falls back, of the legacy
    // DIR/adapter_model.bin that torch.save wrote) into this adapter (strict: missing, unexpected and
    // wrongly shaped names are one Error that lists them).
    void load_weights(const std::string& dir);

    // Empty when the method can fold into the base weights, else why it cannot.
    std::string merge_refusal() const;
    // Folds the method into the base weights (outputs unchanged) and detaches it.
    void merge();
    // Removes the method from the model and restores requires_grad; the base weights are as before (FULL, which
    // trains every base tensor in place, keeps the trained values; BITFIT and PARTIAL restore the originals).
    // With several adapters on one model (peft::apply twice), detach or merge them in the reverse order of applying:
    // each restores the requires_grad flags it found, so taking an earlier one off first leaves the base trainable
    // while a later one is attached (AdapterSet::set_active freezes it again at the next switch).
    void detach();
    bool attached() const { return method_ != nullptr; }
    // Takes the method off the model and keeps its tensors apart (the model computes as its base: HF's
    // disable_adapter); enable() applies it again with those values, outputs bit for bit as before. While disabled,
    // named_parameters() gives the held tensors (save() works, and what is written to them is what enable() puts
    // back). After enable() the tensors are new objects: build the optimizer again. FULL, which trains the base in
    // place and keeps its values on detach, cannot be disabled.
    void disable();
    void enable();
    bool disabled() const { return disabled_; }
    // Per-sample use (AdapterSet::set_batch_adapters): the adapter's terms count for the samples where mask [B] is 1
    // and not where it is 0; an undefined mask clears it. LORA only (not DoRA).
    void set_sample_mask(const Tensor& mask);
    // Moves the model and the method's tensors to `device` in place (hooks follow), e.g. to fine-tune on a GPU:
    // apply on the CPU, then adapter.to(Device::cuda()). Every method runs there (SURM's products as x @ denseᵀ).
    void to(Device device);

private:
    friend Adapter apply(models::Module& model, const Config& config);
    nlohmann::json full_config() const;  // config_ with what the method adds to it (adapter_config.json)
    models::Module* model_;
    Config config_;
    std::unique_ptr<Method> method_;
    int64_t base_params_;
    std::vector<std::pair<Tensor, bool>> saved_requires_grad_;
    // while disabled: the tensors, the config to apply again (with what the method adds to it), its num_added()
    bool disabled_ = false;
    std::vector<std::pair<std::string, Tensor>> held_;
    nlohmann::json held_config_;
    int64_t held_added_ = 0;
};

// Several named adapters on one model; the active ones are attached, the others held disabled (Adapter::disable), so
// switching costs a detach and an apply, not a reload. As HF's PeftModel: add() and load() leave the active adapters
// as they were, set_active() switches, set_active("") runs the base model.
// Several LORA adapters can be active at once (HF's set_adapter with a list): each module computes its base output,
// then each adapter's term in the list's order on the output so far (plain LoRA adds s·B A x, so the order does not
// matter; DoRA scales the output so far, as HF's does). All active adapters train (HF's set_adapter makes them
// trainable). Not with in-place parts (bias, modules_to_save), and a base-rewriting init (PiSSA, OLoRA) only first.
class AdapterSet {
public:
    explicit AdapterSet(models::Module& model) : model_(&model) {}
    Adapter& add(const std::string& name, const Config& config);    // applied fresh, held disabled
    Adapter& load(const std::string& name, const std::string& dir);  // peft::load, held disabled
    void set_active(const std::string& name);                        // "" = none
    void set_active(const std::vector<std::string>& names);          // several at once (LORA only), in this order
    void set_active(std::initializer_list<std::string> names) { set_active(std::vector<std::string>(names)); }  // {"a", "b"}
    std::string active() const;  // the active adapter's name, "" for none, several joined by "+"
    const std::vector<std::string>& active_names() const { return active_; }
    // One adapter per sample of the next batches (HF's adapter_names= "mixed batch"): per_sample[i] names sample i's
    // LORA adapter, or kBaseAdapter for the base model; the named adapters are attached together and each counts only
    // for its own samples. Not DoRA, not in-place parts, not a base-rewriting init (all samples would see it), as in
    // HF; unlike HF also in training mode (each adapter's gradient comes from its own samples). A batch of another
    // size is an error; set_active() ends it (add() and load() keep it). Call it after moving the adapters to their
    // device.
    static constexpr const char* kBaseAdapter = "__base__";
    void set_batch_adapters(const std::vector<std::string>& per_sample);
    Adapter& get(const std::string& name);
    const Adapter& get(const std::string& name) const;
    std::vector<std::string> names() const;
    void remove(const std::string& name);  // detaches it (an active one too: the others stay active) and forgets it
    // A new adapter `new_name` combining LORA adapters with weights (HF's add_weighted_adapter; peft/weighted_adapter.cpp
    // has the math of each combination type), added held disabled like add(). Its config is the first adapter's with
    // r = lora_alpha = the new rank (so s = 1), no rsLoRA, no rank / alpha patterns and the union of the
    // target_modules. Refused, before anything changes: other methods, DoRA, lora_bias, in-place parts (bias,
    // modules_to_save), a base-rewriting init, trainable tokens, target_parameters, a module of an adapter the new
    // config would not reach (HF drops it).
    Adapter& add_weighted_adapter(const std::vector<std::string>& names, const std::vector<double>& weights,
                                  const std::string& new_name, const WeightedAdapterOptions& options = {});

private:
    // Makes the adapter with nothing attached (the active ones disabled meanwhile), holds it disabled, restores the
    // active ones.
    Adapter& insert(const std::string& name, const std::function<Adapter()>& make);
    void check_combinable(const std::vector<std::string>& names);  // the rules above, before anything changes
    models::Module* model_;
    std::vector<std::pair<std::string, std::unique_ptr<Adapter>>> adapters_;
    std::vector<std::string> active_;  // in the order attached
    std::vector<std::string> per_sample_;  // set_batch_adapters' names while the active adapters carry sample masks
};

// Freezes `model` and attaches the method of `config`. Errors list what exists when a target matches nothing.
Adapter apply(models::Module& model, const Config& config);
// Reads DIR/adapter_config.json, applies it and loads DIR/adapter_model.safetensors.
Adapter load(models::Module& model, const std::string& dir);

// True when `parts` is a run of whole dot-separated parts of the parameter name `name`: "conv1d" in
// "backbone.layers.0.mixer.conv1d.bias", "mixer.A_log" in "backbone.layers.3.mixer.A_log" but not in
// "...mixer.A_log_delta". PARTIAL's `param_names` and the training loop's `train.no_decay` read entries this way.
bool has_name_parts(const std::string& name, const std::string& parts);

}  // namespace ssmtune::peft
