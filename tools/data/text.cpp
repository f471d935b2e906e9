// Token streams (see text.h).
#include "tools/data/text.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "engine/error.h"
#include "engine/safetensors.h"

namespace ssmtune::data {

TextData TextData::from_ids(std::vector<int64_t> ids, double val_fraction, int64_t vocab_size, const std::string& source) {
    SSMTUNE_CHECK(!ids.empty(), source, " is empty; fix: give a file with some text or tokens");
    SSMTUNE_CHECK(val_fraction >= 0 && val_fraction < 1, "validation fraction must be in [0, 1), got ", val_fraction);
    TextData d;
    d.source = source;
    d.vocab_size = vocab_size;
    const size_t n_val = size_t(double(ids.size()) * val_fraction);
    d.train.assign(ids.begin(), ids.end() - std::ptrdiff_t(n_val));
    d.val.assign(ids.end() - std::ptrdiff_t(n_val), ids.end());
    return d;
}

TextData TextData::from_bytes_file(const std::string& path, double val_fraction) {
    std::ifstream in(path, std::ios::binary);
    SSMTUNE_CHECK(in.good(), "cannot open text file ", path, ": ",
                  std::filesystem::exists(path) ? "unreadable" : "no such file");
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<int64_t> ids(bytes.size());
    for (size_t i = 0; i < bytes.size(); ++i) ids[i] = static_cast<unsigned char>(bytes[i]);
    return from_ids(std::move(ids), val_fraction, 256, path);
}

TextData TextData::from_safetensors(const std::string& path, double val_fraction, int64_t vocab_size) {
    TensorMap t = load_safetensors(path);
    auto it = t.find("input_ids");
    SSMTUNE_CHECK(it != t.end(), path, ": no tensor \"input_ids\"; fix: store the token ids under that name");
    SSMTUNE_CHECK(it->second.dtype() == DType::I64 || it->second.dtype() == DType::I32, path,
                  ": input_ids must be I64 or I32, got ", it->second.describe());
    std::vector<int64_t> ids = it->second.to_vector<int64_t>();
    SSMTUNE_CHECK(!ids.empty(), path, ": input_ids is empty");
    const int64_t lo = *std::min_element(ids.begin(), ids.end()), hi = *std::max_element(ids.begin(), ids.end());
    SSMTUNE_CHECK(lo >= 0, path, ": input_ids holds a negative id (", lo, ")");
    if (vocab_size > 0)
        SSMTUNE_CHECK(hi < vocab_size, path, ": token id ", hi, " is outside the model's vocabulary of ", vocab_size);
    TextData d = from_ids(std::move(ids), val_fraction, vocab_size > 0 ? vocab_size : hi + 1, path);
    return d;
}

TokenBatch TextData::sample(Generator& gen, int64_t batch, int64_t L) const {
    SSMTUNE_CHECK(int64_t(train.size()) >= L + 1, source, ": the training split has ", train.size(),
                  " tokens, fewer than one window of ", L + 1, "; fix: a shorter --seq-len or more data");
    std::vector<int64_t> x(size_t(batch * L)), y(size_t(batch * L));
    const int64_t starts = int64_t(train.size()) - L;
    for (int64_t b = 0; b < batch; ++b) {
        const int64_t s = std::min<int64_t>(starts - 1, int64_t(philox_uniform(gen.seed(), gen.advance(1)) * double(starts)));
        for (int64_t t = 0; t < L; ++t) {
            x[size_t(b * L + t)] = train[size_t(s + t)];
            y[size_t(b * L + t)] = train[size_t(s + t + 1)];
        }
    }
    return {Tensor::from_vector<int64_t>(x, {batch, L}), Tensor::from_vector<int64_t>(y, {batch, L})};
}

std::vector<TokenBatch> TextData::eval_batches(int64_t batch, int64_t L, int64_t max_batches) const {
    SSMTUNE_CHECK(int64_t(val.size()) >= L + 1, source, ": the validation split has ", val.size(),
                  " tokens, fewer than one window of ", L + 1, "; fix: a larger --val-fraction, a shorter --seq-len "
                  "or more data");
    const int64_t windows = (int64_t(val.size()) - 1) / L;
    std::vector<TokenBatch> out;
    for (int64_t w0 = 0; w0 < windows && int64_t(out.size()) < max_batches; w0 += batch) {
        const int64_t nb = std::min(batch, windows - w0);
        std::vector<int64_t> x(size_t(nb * L)), y(size_t(nb * L));
        for (int64_t b = 0; b < nb; ++b)
            for (int64_t t = 0; t < L; ++t) {
                x[size_t(b * L + t)] = val[size_t((w0 + b) * L + t)];
                y[size_t(b * L + t)] = val[size_t((w0 + b) * L + t + 1)];
            }
        out.push_back({Tensor::from_vector<int64_t>(x, {nb, L}), Tensor::from_vector<int64_t>(y, {nb, L})});
    }
    return out;
}

}  // namespace ssmtune::data
