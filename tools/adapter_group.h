// `--adapter` values that name several adapter directories active together, "A+B" (peft::AdapterSet::set_active
// with a list: LORA adapters, each module adding their terms in that order), for the commands that run a model with
// an adapter (eval, grads, generate, merge). A value that names an existing directory is that one directory, '+' or
// not. One directory is peft::load's adapter by itself (a FULL one included, which no set holds).
// Not here: switching between groups (the eval command does it on its set).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "peft/peft.h"

namespace ssmtune::tools {

// The directories of one --adapter value: "A+B" -> {A, B}; an existing directory, or a value without '+', -> {value}.
// An empty value or part ("", "A+", "+B") or a directory named twice is a UsageError.
std::vector<std::string> split_adapter_group(const std::string& value);

// The name an adapter directory gets in a peft::AdapterSet (which joins names with '+'): the directory, '+' as '_'.
std::string adapter_set_name(const std::string& dir);

// The adapters of one --adapter value loaded onto `model` (each directory once, in the order given) and active
// together. With one directory this is peft::load's adapter itself, not held in a set: a set switches its adapters
// off and on, which a FULL adapter (every base weight trained in place) cannot do, so `generate`, `grads` and `merge`
// refused one that `eval` read (until 2026-12-07).
class AdapterGroup {
public:
    AdapterGroup(models::Module& model, const std::string& value);
    // The directories themselves (each once), held in a set however many (set_per_sample needs one), e.g. the
    // distinct entries of --per-sample: no '+' splitting.
    AdapterGroup(models::Module& model, std::vector<std::string> dirs);
    // The trainable tensors under their adapter-file names (prefixed base_model.model.); with several adapters each
    // name is preceded by the adapter's position in the value and '/': "1/base_model.model....", "2/...".
    // (Errors about the set name each adapter by its directory.)
    std::vector<std::pair<std::string, Tensor>> named_tensors() const;
    void to(Device device);  // every adapter (and the model) to `device`
    // Folds every adapter into the base weights, the last first (HF's merge_and_unload of the active adapters); each
    // one's merge_refusal is checked before anything changes (a module shared with a DoRA adapter is refused).
    void merge();
    std::string peft_types() const;  // "LORA", or "LORA+LORA"
    // One adapter per sample (peft::AdapterSet::set_batch_adapters): per_sample[i] is one of this group's directories,
    // or "__base__".
    void set_per_sample(const std::vector<std::string>& per_sample);
    size_t size() const { return dirs_.size(); }

private:
    AdapterGroup(models::Module& model, std::vector<std::string> dirs, bool in_set);
    peft::Adapter& adapter(size_t i);  // the i-th directory's
    const peft::Adapter& adapter(size_t i) const;

    peft::AdapterSet set_;                  // several directories (or per sample)
    std::unique_ptr<peft::Adapter> single_;  // one directory from a --adapter value
    std::vector<std::string> dirs_;
};

}  // namespace ssmtune::tools
