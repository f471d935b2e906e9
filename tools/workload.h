// A workload: a model paired with a dataset, giving the training loss of a step and the evaluation metrics.
// Language models (Mamba, Longhorn) take token data (synthetic tasks, byte text, token files) and Fashion-MNIST as
// pixel tokens (8-bit intensity per step, class token 256 + label predicted at the last pixel; pixel or permuted
// order). Models that read real-valued frames take image sequences in any order: the S4D classifier and the
// Mamba/Longhorn frame models (config input_size > 0; class logits read at the last frame). Any other pairing is
// an error that says which model types fit the data. Data stays on the host; each batch is moved to
// Workload::device (train.device) at the model's door, so one workload trains on the CPU or a GPU.
//   LM loss:    mean cross-entropy over target positions (next token for text; the task's targets for synthetic
//               tasks). Metrics: loss, perplexity, accuracy (synthetic: on target positions), bits_per_byte (text).
//   Image loss: cross-entropy of the class logits. Metrics: loss, accuracy.
// Not here: the loop (trainer.h), the commands (train.cpp).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/rng.h"
#include "models/checkpoint.h"
#include "tools/data/idx.h"
#include "tools/data/synthetic.h"
#include "tools/data/text.h"

namespace ssmtune::tools {

struct Workload {
    models::AnyModel model;
    // The data (one of the two is used, by data_kind).
    data::SyntheticTask task;               // synthetic
    data::TextData text;                    // text, tokens
    std::vector<data::TokenBatch> eval_tokens;  // fixed evaluation batches of token data
    data::ImageSequences train_images, test_images;  // fashion_mnist
    int64_t batch_size = 16, seq_len = 128;
    std::string data_kind;         // synthetic | text | tokens | fashion_mnist
    std::string tokenizer_path;    // text: the tokenizer.json that encoded it ("" = read as bytes)
    int64_t data_vocab = 0;        // token data: the vocabulary the data needs
    int64_t num_classes = 0;       // image data
    int64_t input_features = 0;    // image data: d_input
    Device device = Device::cpu();  // where the model is (train.device); batches are moved there
    Generator data_gen{0};         // training batches (its state is checkpointed)
    std::string units_name = "tokens";
    // Training loss of one batch drawn from data_gen; `units` = tokens or samples.
    std::function<Tensor(double& units)> train_loss;
    // Metrics on the validation/test data (evaluation mode is set by the caller).
    std::function<std::map<std::string, double>()> evaluate;
};

// "cpu", "cuda" or "cuda:N" (train.device, --device) as a Device; an Error naming the fix when the build has no
// CUDA or the machine no such GPU. `where` names the setting in the message.
Device resolve_device(const std::string& name, const std::string& where);

// Loads the data described by the resolved run config's "data" and "train" sections. The model is attached
// afterwards with attach_model (so `train` can size a fresh model to the data first).
std::shared_ptr<Workload> load_workload_data(const nlohmann::json& run_config);
// Builds the loss and metrics for `model` on the workload's data; errors when they do not fit together. Sets
// w.device from train.device; moving the model (and an adapter) there is the caller's.
void attach_model(Workload& w, models::AnyModel model, const nlohmann::json& run_config);
// This machine's physical memory in bytes (0 when unknown).
double physical_memory_bytes();
// Refuses, before anything is allocated, a model whose float32 weights — with `training`, also their gradients and
// AdamW's two moments (16 bytes a parameter) — exceed the host's memory.
void check_model_fits_memory(double parameters, bool training, const std::string& source);
// Refuses a batch whose activations cannot fit in the host's memory (CPU runs only): a lower bound of what one
// evaluation batch's forward pass keeps (the current layer's in_proj output and the logits) or, with `training`, what
// a training step's backward needs of every layer (at least 4·E values a step per Mamba / Longhorn layer, 2·H per S4D
// layer, and the logits), times the batch that step really runs × steps per sample, in float32. A lower bound — the
// real peak is about three times it — so a run refused here could not have run; `train --batch-size 4096 --seq-len
// 4096` used to be killed by the kernel after a minute. attach_model checks evaluation; train and finetune training.
void check_batch_fits_memory(const Workload& w, bool training);

// The default model for `train` when the config gives none: a small Mamba LM sized to the data's vocabulary,
// or an S4D classifier sized to the image data; with model_type mamba or longhorn on image data, a small LM that
// reads the images as pixel tokens (one value per step) or a small frame model (rows: several values per step).
nlohmann::json default_model_config(const Workload& w, const std::string& model_type = "");

}  // namespace ssmtune::tools
