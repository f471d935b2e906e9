// Built-in synthetic sequence tasks (Mamba paper, Gu & Dao 2023, §4.1 and appendix E.1; associative recall as in
// H3/Zoology), seeded with the counter-based Philox generator so a (seed, offset) pair fixes every batch.
//
// All tasks return token ids [B, L] and targets [B, L] aligned with the ids: targets[b, t] is what the model must
// predict from positions ≤ t (cross-entropy on logits[b, t]); −100 where no loss is taken.
//   selective copying:   vocabulary C + 2: 0 = blank, 1..C = data tokens, C + 1 = marker. M data tokens at random
//                        distinct positions (in order) of a span of S blanks, then M markers; at the i-th marker the
//                        target is the i-th data token. L = S + M.
//   induction heads:     vocabulary V + 1: tokens uniform in [0, V); a trigger V at a random position p ≤ L − 3
//                        followed by a token X; the last position is the trigger again and its target is X.
//   associative recall:  vocabulary V (even): K pairs key value, keys distinct from [0, V/2), values from [V/2, V),
//                        then a query key (one of the K); the target at the query is its value. L = 2K + 1.
// Variants for transfer experiments: selective copying can ask for the data tokens in reverse order
// (`reverse`) and can shift every data token by `token_shift` (mod C) in the targets.
// Not here: text and image data (text.h, idx.h).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "engine/rng.h"
#include "engine/tensor.h"

namespace ssmtune::data {

struct TokenBatch {
    Tensor input_ids;  // [B, L] I64
    Tensor targets;    // [B, L] I64, −100 = no loss
};

struct SyntheticTask {
    std::string name = "selective_copying";  // selective_copying | induction_heads | associative_recall
    int64_t num_tokens = 8;   // C (selective copying) or V (induction heads, associative recall)
    int64_t num_memorize = 4; // M (selective copying) or K pairs (associative recall)
    int64_t span = 32;        // S (selective copying) or L (induction heads)
    bool reverse = false;     // selective copying: output in reverse order
    int64_t token_shift = 0;  // selective copying: target = ((token − 1 + shift) mod C) + 1

    // From JSON fields of the same names (unknown fields are an error listing the valid ones).
    static SyntheticTask from_json(const nlohmann::json& j, const std::string& source = "task");
    nlohmann::json to_json() const;
    void validate(const std::string& source = "task") const;
    int64_t vocab_size() const;
    int64_t seq_len() const;
    TokenBatch sample(Generator& gen, int64_t batch) const;
};

// Fraction of target positions (≠ −100) where argmax(logits) equals the target; logits [B, L, V].
double target_accuracy(const Tensor& logits, const Tensor& targets);

}  // namespace ssmtune::data
