// Trainable tokens (HF PEFT's TrainableTokensLayer): chosen rows of an embedding matrix, or of the LM head's
// weight, replaced by trainable ones, the rest frozen — for new or re-purposed tokens without training the whole
// matrix. The peft_type TRAINABLE_TOKENS and LoRA's `trainable_token_indices` both build on this.
//   embedding E [V, D]:  out[b, l] = rows[j] where ids[b, l] == token_indices[j], else E[ids[b, l]]
//   LM head W [V, D]:    logits[..., v] = h · rows[j] where v == token_indices[j], else h · W[v]
// On a tied model the head reads the embedding's rows too (HF ties a second layer to the first). Merging writes the
// rows into the matrix. Not here: duplicate indices (HF's index_copy leaves them undefined), other module types.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "peft/method.h"

namespace ssmtune::peft {

// The rows of one matrix (`module`: an Embedding, or the LM's lm_head Linear) held by a method.
struct TrainableTokens {
    std::string module;
    std::vector<int64_t> indices;
    Tensor rows;  // [n, D], trainable
    Tensor weight;  // the matrix [V, D] (frozen; written by merge)
    models::DeltaHost* host = nullptr;
    std::shared_ptr<models::OutputDelta> delta;       // on host
    models::LanguageModel* tied_lm = nullptr;         // set when the tied head reads these rows too
    std::shared_ptr<models::OutputDelta> head_delta;  // on tied_lm's head
    void merge();   // weight[indices] = rows (the tied head follows: it is the same matrix)
    void detach();  // every hook off; the matrix unchanged
};

// The modules trainable tokens can replace rows of: Embedding, and a Linear used as the LM head (no bias).
bool trainable_tokens_can_target(const ModelView& model, models::Module* m);

// Attaches rows for `indices` (a JSON list of distinct ints in [0, V)) to module `name`: rows = the matrix's rows
// (init_weights true, a no-op until trained) or N(0, 1) from `gen` (false, HF's randn). The input embedding of a
// tied LM also gets the head hook. Another adapter already on the module is an Error.
TrainableTokens attach_trainable_tokens(ModelView& model, const std::string& name, models::Module* m,
                                        const nlohmann::json& indices, bool init_weights, Generator& gen);

// LoRA's trainable_token_indices (HF, peft >= 0.15): a list trains those rows of the input embedding, an object
// {module: list} those of each Embedding or LM head whose name ends with the key (HF's plain suffix test; a key that
// names none is an Error). Rows start as the matrix's own (HF's wrapper default). File names:
// <module>.token_adapter.trainable_tokens_delta (HF's TrainableTokensWrapper).
std::vector<TrainableTokens> attach_lora_trainable_tokens(ModelView& model, const nlohmann::json& spec, Generator& gen);

}  // namespace ssmtune::peft
