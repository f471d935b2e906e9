// Built-in synthetic sequence tasks, seeded with the counter-based Philox generator (engine/rng.h): the same
// Generator state gives the same batch, bit for bit, on any machine and thread count.
//
// Every task returns a Batch: input_ids [B, L] I64 and targets [B, L] I64 aligned with them. The model is trained
// with cross-entropy on the positions whose target is not −100, predicting targets[b, t] from input_ids[b, 0..t]
// (its logits at position t); −100 marks positions where no loss is taken.
//   selective copying (Mamba paper, Gu & Dao 2023, §4.1.1 and appendix E.1). Vocabulary num_tokens + 2:
//       0 = noise, 1..C = the C = num_tokens data tokens, C + 1 = marker. A span of S = span noise tokens in which
//       M = num_memorize data tokens (each uniform in 1..C) sit at M distinct uniformly random positions; then M
//       markers. At the i-th marker (position S + i) the target is the i-th data token in order of appearance;
//       every other target is −100. L = S + M.
//   induction heads (Mamba paper §4.1.2). Vocabulary num_tokens + 1: tokens uniform in 0..V−1 (V = num_tokens),
//       the special token V inserted once at a uniformly random position p ∈ [0, L − 3] and followed by a token X
//       (the random token already at p + 1); the last position L − 1 holds the special token again and its target
//       is X (the only target). The special token occurs exactly twice. L = seq_len.
//   associative recall (H3 / Zoology style). Vocabulary V = num_tokens (even): K = num_pairs key-value pairs
//       k_1 v_1 … k_K v_K with distinct keys uniform in [0, V/2) and values uniform in [V/2, V), then one query key
//       k_q (q uniform in 1..K). The target at the query position 2K is v_q (the only target). L = 2K + 1.
// Variants for transfer experiments: selective copying can ask for the data tokens in reverse order (`reverse`)
// and can shift every data token in the targets by `token_shift` (mod C): target ((token − 1 + shift) mod C) + 1.
// Not here: text and image data (text.h, idx.h); multi-query recall; noise inside the induction-heads copy.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "engine/rng.h"
#include "engine/tensor.h"

namespace ssmtune::data {

inline constexpr int64_t kIgnoreIndex = -100;  // targets value where no loss is taken

struct Batch {
    Tensor input_ids;  // [B, L] I64
    Tensor targets;    // [B, L] I64, kIgnoreIndex = no loss
};
using TokenBatch = Batch;

struct SelectiveCopyingConfig {
    int64_t num_tokens = 8;    // C data tokens (ids 1..C)
    int64_t num_memorize = 4;  // M data tokens to copy
    int64_t span = 32;         // S positions holding noise and the data tokens
    bool reverse = false;      // targets in reverse order of appearance
    int64_t token_shift = 0;   // targets shifted by this many data tokens (mod C)

    void validate(const std::string& where = "selective_copying") const;
    int64_t vocab_size() const { return num_tokens + 2; }
    int64_t seq_len() const { return span + num_memorize; }
    int64_t noise_token() const { return 0; }
    int64_t marker_token() const { return num_tokens + 1; }
};

struct InductionHeadsConfig {
    int64_t num_tokens = 16;  // V ordinary tokens (ids 0..V−1)
    int64_t seq_len = 64;     // L

    void validate(const std::string& where = "induction_heads") const;
    int64_t vocab_size() const { return num_tokens + 1; }
    int64_t special_token() const { return num_tokens; }
};

struct AssociativeRecallConfig {
    int64_t num_tokens = 32;  // V (even): keys 0..V/2−1, values V/2..V−1
    int64_t num_pairs = 8;    // K key-value pairs before the query

    void validate(const std::string& where = "associative_recall") const;
    int64_t vocab_size() const { return num_tokens; }
    int64_t seq_len() const { return 2 * num_pairs + 1; }
};

// One batch of `batch` sequences; each validates its config first.
Batch selective_copying(const SelectiveCopyingConfig& c, Generator& gen, int64_t batch);
Batch induction_heads(const InductionHeadsConfig& c, Generator& gen, int64_t batch);
Batch associative_recall(const AssociativeRecallConfig& c, Generator& gen, int64_t batch);

// A task chosen by name, as the run config's "data.task" object gives it. The fields are shared across tasks:
//   num_tokens → C (selective copying) or V (induction heads, associative recall)
//   num_memorize → M (selective copying) or K pairs (associative recall)
//   span → S (selective copying) or L (induction heads)
//   reverse, token_shift → selective copying only (must stay false / 0 for the other tasks)
struct SyntheticTask {
    std::string name = "selective_copying";  // selective_copying | induction_heads | associative_recall
    int64_t num_tokens = 8;
    int64_t num_memorize = 4;
    int64_t span = 32;
    bool reverse = false;
    int64_t token_shift = 0;

    // From JSON fields of the same names (unknown fields are an error listing the valid ones).
    static SyntheticTask from_json(const nlohmann::json& j, const std::string& source = "task");
    nlohmann::json to_json() const;
    void validate(const std::string& source = "task") const;
    int64_t vocab_size() const;
    int64_t seq_len() const;
    Batch sample(Generator& gen, int64_t batch) const;

    SelectiveCopyingConfig selective_copying_config() const;
    InductionHeadsConfig induction_heads_config() const;
    AssociativeRecallConfig associative_recall_config() const;
};

// Fraction of target positions (≠ −100) where argmax(logits) equals the target; logits [B, L, V], targets [B, L].
// Ties go to the lowest id. 0 when there is no target position.
double target_accuracy(const Tensor& logits, const Tensor& targets);

}  // namespace ssmtune::data
