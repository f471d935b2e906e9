// Pieces the training commands and the main job share: the loop hooks for a workload, and a whole fine-tuning
// run (load base [+ a saved adapter] → metrics before → apply PEFT → train → save adapter → metrics after).
// Not here: flag parsing (train.cpp), the loop (trainer.h).
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tools/trainer.h"
#include "tools/workload.h"

namespace ssmtune::tools {

// Hooks that train `params` on the workload: training mode for the loss, evaluation mode for the metrics, the
// generators of workload_generators checkpointed for resume.
TrainHooks model_hooks(Workload& w, std::vector<std::pair<std::string, Tensor>> params,
                       std::function<void(const std::string&)> save_weights,
                       std::function<void(const std::string&)> load_weights);

// The generators a run's checkpoints save and restore: the workload's data sampling, S4D's dropout, the dropout of
// the PEFT layers attached to the model (models::training_generators).
std::vector<Generator*> workload_generators(Workload& w);

struct FinetuneOutcome {
    std::map<std::string, double> before, after;
    std::string adapter_dir, report;
    nlohmann::json config;  // the adapter's config (peft::Config's json), the saved adapter's when training one on
    int64_t trainable = 0, total = 0;
    double seconds = 0;
    bool interrupted = false;
};

// rc: a resolved run config with "base_model" and either "peft" (a new adapter) or "adapter" (a saved adapter's
// directory, trained on from its tensors; "before" is then its metrics). Writes OUT/run_config.json, OUT/adapter,
// checkpoints, metrics.jsonl and loss.svg.
FinetuneOutcome finetune_model(nlohmann::json rc, bool resume, bool quiet);

nlohmann::json resolve_from_flags(const class Flags& flags, const std::string& command);
// Text data without a named tokenizer is read with the adapters' tokenizer.json, else the base model's
// (models::tokenizer_for): sets rc's data.tokenizer to it. What eval and `finetune --adapter` share.
void read_text_with_adapter_tokenizer(nlohmann::json& rc, const std::string& model_dir,
                                      const std::vector<std::string>& adapter_dirs);
TrainLoopOptions loop_options(const nlohmann::json& rc, bool resume, bool quiet);

}  // namespace ssmtune::tools
