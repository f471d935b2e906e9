// Token streams (see text.h).
#include "tools/data/text.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/error.h"
#include "engine/round_to_double.h"
#include "engine/safetensors.h"

namespace ssmtune::data {

namespace {

std::string read_file(const std::string& path, const char* what) {
    std::ifstream in(path, std::ios::binary);
    SSMTUNE_CHECK(in.good(), "cannot open ", what, " ", path, ": ",
                  std::filesystem::exists(path) ? "unreadable" : "no such file", "; fix: check the --data path");
    std::stringstream ss;
    ss << in.rdbuf();
    std::string s = ss.str();
    SSMTUNE_CHECK(!s.empty(), what, " ", path, " is empty; fix: give a file with some text");
    return s;
}

Batch window_batch(const std::vector<int64_t>& ids, const std::vector<int64_t>& starts, int64_t L) {
    const int64_t B = int64_t(starts.size());
    std::vector<int64_t> x(size_t(B * L)), y(size_t(B * L));
    for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < L; ++t) {
            x[size_t(b * L + t)] = ids[size_t(starts[size_t(b)] + t)];
            y[size_t(b * L + t)] = ids[size_t(starts[size_t(b)] + t + 1)];
        }
    return {Tensor::from_vector<int64_t>(x, {B, L}), Tensor::from_vector<int64_t>(y, {B, L})};
}

}  // namespace

TokenDataset TokenDataset::from_ids(std::vector<int64_t> ids, double val_fraction, int64_t vocab_size,
                                    const std::string& source) {
    SSMTUNE_CHECK(!ids.empty(), source, " is empty; fix: give a file with some text or tokens");
    SSMTUNE_CHECK(val_fraction > 0 && val_fraction < 1, source, ": the validation fraction must be in (0, 1), got ",
                  val_fraction, "; fix: e.g. 0.1 (the last 10 % of the data)");
    SSMTUNE_CHECK(vocab_size >= 1, source, ": vocabulary size ", vocab_size, " must be positive");
    const size_t n = ids.size(), n_val = size_t(std::llround(round_to_double(double(n) * val_fraction)));
    SSMTUNE_CHECK(n_val >= 2 && n - n_val >= 2, source, ": ", n, " tokens split at val_fraction ", val_fraction, " into ",
                  n - n_val, " training and ", n_val, " validation tokens; each part needs at least one window (2 "
                  "tokens or more); fix: more data or a val_fraction nearer 0.5");
    TokenDataset d;
    d.source = source;
    d.vocab_size = vocab_size;
    d.train.assign(ids.begin(), ids.end() - std::ptrdiff_t(n_val));
    d.val.assign(ids.end() - std::ptrdiff_t(n_val), ids.end());
    return d;
}

TokenDataset TokenDataset::from_bytes_file(const std::string& path, double val_fraction) {
    const std::string bytes = read_file(path, "text file");
    std::vector<int64_t> ids(bytes.size());
    for (size_t i = 0; i < bytes.size(); ++i) ids[i] = static_cast<unsigned char>(bytes[i]);
    TokenDataset d = from_ids(std::move(ids), val_fraction, 256, path);
    d.token_bytes.assign(256, 1);
    return d;
}

TokenDataset TokenDataset::from_safetensors(const std::string& path, double val_fraction, int64_t vocab_size) {
    TensorMap t = load_safetensors(path);
    auto it = t.find("input_ids");
    if (it == t.end()) {
        std::string names;
        for (auto& [k, v] : t) names += (names.empty() ? "" : ", ") + k;
        SSMTUNE_FAIL(path, ": no tensor \"input_ids\" (it holds: ", names.empty() ? "nothing" : names,
                     "); fix: store the token ids under that name");
    }
    const Tensor& ids_t = it->second;
    SSMTUNE_CHECK(ids_t.dtype() == DType::I64 || ids_t.dtype() == DType::I32, path, ": input_ids must be I64 or I32, got ",
                  ids_t.describe(), "; fix: save the ids as integers");
    SSMTUNE_CHECK(ids_t.dim() == 1 || ids_t.dim() == 2, path, ": input_ids must be 1-D [N] or 2-D [B, L], got ",
                  ids_t.describe());
    std::vector<int64_t> ids = ids_t.to_vector<int64_t>();
    SSMTUNE_CHECK(!ids.empty(), path, ": input_ids is empty; fix: a file with some tokens");
    const int64_t lo = *std::min_element(ids.begin(), ids.end()), hi = *std::max_element(ids.begin(), ids.end());
    SSMTUNE_CHECK(lo >= 0, path, ": input_ids holds a negative id (", lo, "); fix: ids in [0, vocab_size)");
    if (vocab_size > 0)
        SSMTUNE_CHECK(hi < vocab_size, path, ": token id ", hi, " is outside the model's vocabulary of ", vocab_size,
                      "; fix: tokenise with the model's tokenizer");
    return from_ids(std::move(ids), val_fraction, vocab_size > 0 ? vocab_size : hi + 1, path);  // (bytes unknown)
}

TokenDataset TokenDataset::from_bpe_file(const std::string& path, const BpeTokenizer& tokenizer, double val_fraction) {
    TokenDataset d = from_ids(tokenizer.encode(read_file(path, "text file")), val_fraction, tokenizer.vocab_size(), path);
    d.token_bytes.assign(size_t(d.vocab_size), 0);  // (ids the vocabulary skips never occur)
    for (const std::vector<int64_t>* split : {&d.train, &d.val})
        for (int64_t id : *split) d.token_bytes[size_t(id)] = tokenizer.token_bytes(id);
    return d;
}

void TokenDataset::check_window(int64_t L) const {
    SSMTUNE_CHECK(L >= 1, "sequence length ", L, " must be at least 1");
    SSMTUNE_CHECK(int64_t(train.size()) >= L + 1, source, ": the training split has ", train.size(),
                  " tokens, fewer than one window of ", L + 1, "; fix: a shorter --seq-len or more data");
    SSMTUNE_CHECK(int64_t(val.size()) >= L + 1, source, ": the validation split has ", val.size(),
                  " tokens, fewer than one window of ", L + 1, "; fix: a larger val_fraction, a shorter --seq-len or "
                  "more data");
}

Batch TokenDataset::sample(Generator& gen, int64_t batch, int64_t L) const {
    check_window(L);
    SSMTUNE_CHECK(batch >= 1, "a batch needs at least one window, got batch size ", batch);
    const int64_t count = int64_t(train.size()) - L;  // possible starts
    std::vector<int64_t> starts(static_cast<size_t>(batch));
    for (int64_t& s : starts)
        s = std::min<int64_t>(count - 1, int64_t(philox_uniform(gen.seed(), gen.advance(1)) * double(count)));
    return window_batch(train, starts, L);
}

std::vector<Batch> TokenDataset::eval_batches(int64_t batch, int64_t L, int64_t max_batches) const {
    check_window(L);
    SSMTUNE_CHECK(batch >= 1, "a batch needs at least one window, got batch size ", batch);
    const int64_t windows = (int64_t(val.size()) - 1) / L;
    std::vector<Batch> out;
    for (int64_t w0 = 0; w0 < windows && (max_batches <= 0 || int64_t(out.size()) < max_batches); w0 += batch) {
        std::vector<int64_t> starts;
        for (int64_t w = w0; w < std::min(windows, w0 + batch); ++w) starts.push_back(w * L);
        out.push_back(window_batch(val, starts, L));
    }
    return out;
}

double bits_per_byte(double mean_loss_nats, int64_t tokens, int64_t bytes) {
    SSMTUNE_CHECK(tokens > 0 && bytes > 0, "bits_per_byte needs positive token and byte counts, got ", tokens, " and ",
                  bytes);
    return mean_loss_nats * double(tokens) / (std::log(2.0) * double(bytes));
}

int64_t TokenDataset::target_bytes(const Batch& b) const {
    SSMTUNE_CHECK(!token_bytes.empty(), source, ": the bytes of its tokens are unknown (a token file does not record "
                  "them); fix: use text data for bits per byte");
    int64_t bytes = 0;
    for (int64_t t : b.targets.to_vector<int64_t>())
        if (t != kIgnoreIndex) bytes += token_bytes.at(size_t(t));
    return bytes;
}

}  // namespace ssmtune::data
