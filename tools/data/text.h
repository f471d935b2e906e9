// Token streams for language-model training: any UTF-8 (or binary) file read as bytes (vocabulary 256), or
// pre-tokenised `input_ids` from a safetensors file (I64/I32, any shape, flattened to one stream). The last
// `val_fraction` of the stream is the validation split. Training batches are random windows (seeded); evaluation
// walks the validation split in consecutive windows. Targets are the next tokens (targets[t] = ids[t+1]), in the
// same TokenBatch layout as the synthetic tasks, so one loss serves both.
// Not here: tokenizers (bpe_tokenizer.h converts text to ids first), document boundaries, packing.
#pragma once

#include <string>
#include <vector>

#include "engine/rng.h"
#include "tools/data/synthetic.h"

namespace ssmtune::data {

struct TextData {
    std::string source;                 // the file it came from
    std::vector<int64_t> train, val;    // token ids
    int64_t vocab_size = 256;
    double bytes_per_token = 1.0;       // for bits per byte (1 for byte-level data)

    static TextData from_bytes_file(const std::string& path, double val_fraction);
    // `vocab_size` > 0 checks every id is below it; 0 takes max id + 1.
    static TextData from_safetensors(const std::string& path, double val_fraction, int64_t vocab_size = 0);
    static TextData from_ids(std::vector<int64_t> ids, double val_fraction, int64_t vocab_size, const std::string& source);

    // B random windows of L + 1 tokens from the training split.
    TokenBatch sample(Generator& gen, int64_t batch, int64_t L) const;
    // Consecutive windows over the validation split (at most max_batches batches; the last partial window dropped).
    std::vector<TokenBatch> eval_batches(int64_t batch, int64_t L, int64_t max_batches) const;
};

// Bits per byte from a mean loss in nats per token.
inline double bits_per_byte(double mean_loss_nats, double bytes_per_token) {
    return mean_loss_nats / (0.6931471805599453 * bytes_per_token);
}

}  // namespace ssmtune::data
