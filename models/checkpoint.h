// Model directories: config.json + model.safetensors (or a sharded model.safetensors.index.json; PyTorch's
// pytorch_model.bin and its sharded index are read too, without Python: engine/torch_checkpoint.h), read and
// written (always as safetensors) for every model type. The type comes from config.json's "model_type": "mamba" and "longhorn"
// (HF MambaForCausalLM layout; original state-spaces names such as backbone.embedding.weight are accepted, and
// mamba_ssm's own config.json, which has no model_type but d_model / n_layer / ssm_cfg, reads as "mamba", or
// as "longhorn" when the weights use Longhorn's own name for the β projection, mixer.dt_head)
// and "s4d" (our config around example.py's S4Model names).
// Loading is strict: missing, unexpected or wrongly shaped tensors give one Error listing all of them, and a
// config that disagrees with the weights names the config field. It reads one tensor at a time into a model built
// without its random initialisation (ModelWeights, SkipRandomInit), so it holds one copy of the weights: a 130M
// Mamba loads at 0.52 GB peak RSS, where reading the files whole took 1.35–1.50 GB. Writes are atomic (temp file +
// rename).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/tensor_file.h"
#include "models/s4d_model.h"
#include "models/ssm_lm.h"

namespace ssmtune::models {

// A model of any supported type. Exactly one of lm / s4d is set.
struct AnyModel {
    std::string model_type;
    std::shared_ptr<LanguageModel> lm;
    std::shared_ptr<S4DClassifier> s4d;
    Module& module() const;
    bool is_language_model() const { return lm != nullptr; }
};

nlohmann::json read_json_file(const std::string& path);
void write_json_file(const std::string& path, const nlohmann::json& j);

// A model directory's weight files opened (HF's order of preference: model.safetensors, the shards of its index.json,
// pytorch_model.bin, the shards of its index), read one tensor at a time (engine/tensor_file.h): loading a model keeps
// its own parameters and one tensor of the file in memory, not the file's tensors beside the model. Checked when it
// opens: every file's header or pickle, no tensor in two shards, every weight_map entry present.
class ModelWeights {
public:
    explicit ModelWeights(const std::string& dir);
    ~ModelWeights();
    const std::string& dir() const { return dir_; }
    // Every tensor's name and shape (names as in the files, or as renamed).
    std::map<std::string, Shape> shapes() const;
    // The number of values the files hold.
    double element_count() const;
    // Calls the tensor `from` `to` from now on (the model's name for a tensor the files name otherwise).
    void rename(const std::string& from, const std::string& to);
    // Leaves the tensor out (one that is not a parameter, e.g. a tied lm_head.weight).
    void drop(const std::string& name);
    // One tensor, in the file's dtype (CPU), checked finite.
    Tensor read(const std::string& name) const;
    // Reads every tensor into `module`'s parameters: strict (Module::load_state_dict: one Error listing every missing,
    // unexpected or wrongly shaped name before anything is read), each checked finite (a NaN/Inf weight would only
    // surface later as a NaN loss). Straight into a parameter of the file's dtype; through one tensor otherwise.
    // A tensor found damaged stops the load with the parameters before it already read.
    void load_into(Module& module) const;

private:
    struct Source;
    std::string dir_;
    std::vector<std::unique_ptr<TensorFile>> files_;
    std::map<std::string, Source> tensors_;
};

// Every tensor of a model directory (single file or shards), names as in the files, each checked finite.
TensorMap read_model_tensors(const std::string& dir);

// The fix for `dir` lacking its `wanted_file` (config.json, adapter_config.json), for the usual mix-ups: a run
// directory whose `run_subdir` holds it ("this is <run_is> DIR/run_subdir"), a directory of the other kind holding
// `other_file` ("this is <other_is>"), a file inside the wanted directory; else `fallback`.
std::string directory_mixup_fix(const std::string& dir, const std::string& wanted_file, const std::string& run_subdir,
                                const std::string& run_is, const std::string& other_file, const std::string& other_is,
                                const std::string& fallback);
AnyModel load_model(const std::string& dir);
// A fresh model from a config.json object (seeded init), e.g. to train from scratch.
AnyModel create_model(const nlohmann::json& config, uint64_t seed, const std::string& source = "config");
// The parameter count a model config describes, from the config alone (nothing allocated); 0 for an unknown
// model_type (create_model's error names it). Errors as create_model's for a malformed config.
double described_parameters(const nlohmann::json& config, const std::string& source = "config");
void save_model(const std::string& dir, const AnyModel& model);
// The files HF keeps beside a model's weights for its tokenizer and generation settings (tokenizer.json,
// tokenizer_config.json, special_tokens_map.json, generation_config.json), copied from `from_dir` to `to_dir` where
// present, replacing older copies; those `from_dir` lacks are removed from `to_dir` (an earlier write's would describe
// another model). The CLI reads text and prompts with the tokenizer.json next to a model, so a model written from
// another (merge) carries them on. Returns how many were copied.
int copy_tokenizer_files(const std::string& from_dir, const std::string& to_dir);
// Copies `tokenizer_file` (any name) to model_dir/tokenizer.json, where the commands look for it. "": the directory's
// model or adapter reads no tokenizer, so any tokenizer files an earlier write left in model_dir are removed (a run
// on bytes into a directory that held a BPE run's output used to keep its tokenizer.json, and eval then read the text
// with it).
void install_tokenizer(const std::string& tokenizer_file, const std::string& model_dir);
// model_dir/tokenizer.json when it exists, else "".
std::string tokenizer_beside(const std::string& model_dir);
// The tokenizer.json a base model with these adapters reads text with: the adapters' own (finetune writes the one
// it encoded its data with into the adapter directory, as HF's Trainer saves the tokenizer with its output; several
// that hold one must hold the same file, else an Error naming them), else the model's (none for model_dir ""), else "".
std::string tokenizer_for(const std::string& model_dir, const std::vector<std::string>& adapter_dirs);

}  // namespace ssmtune::models
