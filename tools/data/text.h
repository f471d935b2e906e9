// Token streams for language-model training, from three sources:
//   (a) any file read as bytes (UTF-8 text or not): one token per byte, vocabulary 256;
//   (b) pre-tokenised ids: the tensor `input_ids` of a safetensors file, I64 or I32, 1-D or [B, L] (flattened
//       row by row into one stream), every id below the vocabulary size when one is given;
//   (c) a text file encoded by a byte-level BPE tokenizer (bpe_tokenizer.h).
// The last `val_fraction` of the stream is the validation split, the rest the training split; each must hold at
// least one window. A window of L + 1 consecutive tokens gives input_ids = tokens[0..L) and targets =
// tokens[1..L] (next-token prediction; the same Batch layout as the synthetic tasks, so one loss serves both).
// Training batches are B windows at uniformly random starts (one Philox draw each, seeded); evaluation walks the
// validation split in consecutive non-overlapping windows (window w starts at token w·L; the last partial one is
// dropped). Bits per byte = the evaluated targets' loss in nats / (ln 2 · the bytes those targets decode to).
// Not here: document boundaries, packing, shuffling without replacement, streaming files larger than memory.
#pragma once

#include <string>
#include <vector>

#include "engine/rng.h"
#include "tools/data/bpe_tokenizer.h"
#include "tools/data/synthetic.h"

namespace ssmtune::data {

struct TokenDataset {
    std::string source;               // the file it came from
    std::vector<int64_t> train, val;  // token ids
    int64_t vocab_size = 256;
    // The bytes each id decodes to (index: id): 1 for bytes, the tokenizer's for BPE; empty where unknown (a token
    // file does not record them).
    std::vector<int64_t> token_bytes;

    // (a) bytes; an empty file is an error.
    static TokenDataset from_bytes_file(const std::string& path, double val_fraction);
    // (b) `input_ids` from a safetensors file. `vocab_size` > 0 checks every id is below it; 0 takes max id + 1.
    static TokenDataset from_safetensors(const std::string& path, double val_fraction, int64_t vocab_size = 0);
    // (c) a text file encoded with `tokenizer`; vocab_size is the tokenizer's.
    static TokenDataset from_bpe_file(const std::string& path, const BpeTokenizer& tokenizer, double val_fraction);
    // Any id stream (ids in [0, vocab_size)); 0 < val_fraction < 1.
    static TokenDataset from_ids(std::vector<int64_t> ids, double val_fraction, int64_t vocab_size,
                                 const std::string& source);

    // Throws unless both splits hold at least one window of L + 1 tokens (names the short split and the fix).
    void check_window(int64_t L) const;
    // B random windows from the training split: input_ids, targets [B, L] I64.
    Batch sample(Generator& gen, int64_t batch, int64_t L) const;
    // Consecutive windows over the validation split in batches of up to `batch` windows (the last batch may be
    // smaller); at most `max_batches` batches (≤ 0: all).
    std::vector<Batch> eval_batches(int64_t batch, int64_t L, int64_t max_batches = 0) const;
    // The bytes the targets of a batch decode to (targets −100 skipped); an error where token_bytes is unknown.
    int64_t target_bytes(const Batch& b) const;
};
using TextData = TokenDataset;

// Bits per byte of a mean loss (nats per token) over `tokens` tokens that decode to `bytes` bytes.
double bits_per_byte(double mean_loss_nats, int64_t tokens, int64_t bytes);

}  // namespace ssmtune::data
