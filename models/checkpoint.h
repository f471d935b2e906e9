// Model directories: config.json + model.safetensors (or a sharded model.safetensors.index.json; PyTorch's
// pytorch_model.bin and its sharded index are read too, without Python: engine/torch_checkpoint.h), read and
// written (always as safetensors) for every model type. The type comes from config.json's "model_type": "mamba" and "longhorn"
// (HF MambaForCausalLM layout; original state-spaces names such as backbone.embedding.weight are accepted, and
// mamba_ssm's own config.json, which has no model_type but d_model / n_layer / ssm_cfg, reads as "mamba", or
// as "longhorn" when the weights use Longhorn's own name for the β projection, mixer.dt_head)
// and "s4d" (our config around example.py's S4Model names).
// Loading is strict: missing, unexpected or wrongly shaped tensors give one Error listing all of them, and a
// config that disagrees with the weights names the config field. Writes are atomic (temp file + rename).
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

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

// Every tensor of a model directory (single file or shards), names as in the files.
TensorMap read_model_tensors(const std::string& dir);
// Throws naming the first tensor that holds a NaN or Inf (weights read from `dir`).
void check_finite_weights(const TensorMap& weights, const std::string& dir);

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
