// Run configurations of the training commands (train, finetune, eval, the main job): one JSON object with
// defaults for everything, strict keys (an unknown key is an error that lists the valid ones), command-line
// overrides, and the resolved config written next to the run's outputs. Example files: tools/configs/*.json.
//
//   {"model": {...model config.json...},      train: the model to build (default: a small Mamba sized to the data)
//    "base_model": "DIR", "adapter": "DIR",   finetune/eval: the trained model (and adapter) to start from
//    "peft": {...adapter config...},          finetune: the method (default STATE_OFFSET h)
//    "data": {"kind": "synthetic" | "text" | "tokens" | "fashion_mnist", "task": {...}, "path": "...",
//             "val_fraction": 0.1, "order": "row", "classes": [], "limit": 0, "permutation_seed": 0},
//    "train": {"steps", "batch_size", "seq_len", "lr", "weight_decay", "schedule", "warmup_steps", "min_lr_ratio",
//              "grad_clip", "no_decay", "ssm_lr", "adam_beta1", "adam_beta2", "adam_epsilon",
//              "gradient_accumulation_steps", "log_every", "eval_every", "save_every", "best_metric",
//              "early_stopping_patience", "early_stopping_threshold", "load_best_at_end", "eval_batches", "seed"},
//    "out": "runs/NAME"}
// Not here: what the commands do with it (train.cpp).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ssmtune::tools {

class Flags;

// The defaults of every section.
nlohmann::json default_run_config();
// Merges `user` into the defaults, recursively; unknown keys are an Error naming the path and the valid keys
// ("model" and "peft" objects are passed through: their own parsers check them).
nlohmann::json resolve_run_config(const nlohmann::json& user, const std::string& source);
// Applies "a.b.c=value" assignments (comma-separated; values parsed as JSON, else taken as strings).
void apply_assignments(nlohmann::json& config, const std::string& assignments);
// The data settings (and train.seq_len) a resolved config sets away from their defaults that its data.kind does not
// read, one sentence each ("data.order = \"pixel\" has no effect with data.kind \"text\" (only fashion_mnist reads it)");
// the commands print them as warnings.
std::vector<std::string> unused_data_settings(const nlohmann::json& rc);
// The top-level sections a resolved config sets that `command` does not read, one sentence each: train builds from
// "model" (base_model, adapter and peft are finetune's and eval's), finetune trains a new adapter on "base_model"
// from "peft" (a "model" or "adapter" is not read). eval reads every section it can use and ignores the rest
// quietly, so one config serves a finetune run and its evaluation.
std::vector<std::string> unread_sections(const nlohmann::json& rc, const std::string& command);

}  // namespace ssmtune::tools
