// Synthetic tasks (see synthetic.h for the exact definitions). Each random choice is one Philox draw taken from
// the caller's Generator in a fixed order (sequence by sequence, left to right), so batches are reproducible.
#include "tools/data/synthetic.h"

#include <algorithm>
#include <numeric>

#include "engine/error.h"
#include "engine/json_read.h"

namespace ssmtune::data {

namespace {

constexpr int64_t kMaxLength = int64_t(1) << 24;  // far beyond any task in the papers; guards allocations
constexpr int64_t kMaxVocab = int64_t(1) << 24;

// An integer uniform in [0, n) from the generator's next draw.
int64_t draw(Generator& gen, int64_t n) {
    const int64_t v = int64_t(philox_uniform(gen.seed(), gen.advance(1)) * double(n));
    return std::min(v, n - 1);
}

// k distinct integers of [0, n) in uniformly random order, by a partial Fisher–Yates shuffle (k draws).
std::vector<int64_t> distinct(Generator& gen, int64_t n, int64_t k) {
    std::vector<int64_t> pool(static_cast<size_t>(n));
    std::iota(pool.begin(), pool.end(), int64_t(0));
    for (int64_t i = 0; i < k; ++i) std::swap(pool[size_t(i)], pool[size_t(i + draw(gen, n - i))]);
    pool.resize(size_t(k));
    return pool;
}

void check_batch(int64_t batch, int64_t L, const char* task) {
    SSMTUNE_CHECK(batch >= 1 && batch <= kMaxLength && batch * L <= (int64_t(1) << 31), task, ": batch size ", batch,
                  " with sequences of ", L, " tokens is out of range; fix: a batch size in [1, ", (int64_t(1) << 31) / L,
                  "]");
}

Batch make_batch(const std::vector<int64_t>& x, const std::vector<int64_t>& y, int64_t batch, int64_t L) {
    return {Tensor::from_vector<int64_t>(x, {batch, L}), Tensor::from_vector<int64_t>(y, {batch, L})};
}

}  // namespace

// ---------------------------------------------------------------------------------------------- configs

void SelectiveCopyingConfig::validate(const std::string& w) const {
    SSMTUNE_CHECK(num_tokens >= 1 && num_tokens <= kMaxVocab, w, ".num_tokens = ", num_tokens,
                  " is out of range; fix: 1 <= num_tokens <= ", kMaxVocab);
    SSMTUNE_CHECK(num_memorize >= 1 && num_memorize <= kMaxLength, w, ".num_memorize = ", num_memorize,
                  " is out of range; fix: 1 <= num_memorize <= ", kMaxLength);
    SSMTUNE_CHECK(span >= num_memorize && span <= kMaxLength, w, ".span = ", span, " cannot hold num_memorize = ",
                  num_memorize, " data tokens; fix: num_memorize <= span <= ", kMaxLength);
    SSMTUNE_CHECK(token_shift > -kMaxVocab && token_shift < kMaxVocab, w, ".token_shift = ", token_shift,
                  " is out of range; fix: |token_shift| < num_tokens");
}

void InductionHeadsConfig::validate(const std::string& w) const {
    SSMTUNE_CHECK(num_tokens >= 1 && num_tokens <= kMaxVocab, w, ".num_tokens = ", num_tokens,
                  " is out of range; fix: 1 <= num_tokens <= ", kMaxVocab);
    SSMTUNE_CHECK(seq_len >= 4 && seq_len <= kMaxLength, w, ".seq_len = ", seq_len,
                  " is out of range (special token, X, filler, special token need 4); fix: 4 <= seq_len <= ",
                  kMaxLength);
}

void AssociativeRecallConfig::validate(const std::string& w) const {
    SSMTUNE_CHECK(num_tokens >= 2 && num_tokens % 2 == 0 && num_tokens <= kMaxVocab, w, ".num_tokens = ", num_tokens,
                  " must be even and in [2, ", kMaxVocab, "] (keys and values take one half each); fix: an even "
                  "num_tokens");
    SSMTUNE_CHECK(num_pairs >= 1 && num_pairs <= num_tokens / 2, w, ".num_pairs = ", num_pairs,
                  " distinct keys do not fit in the ", num_tokens / 2, " key tokens; fix: 1 <= num_pairs <= num_tokens/2");
}

// ---------------------------------------------------------------------------------------------- generators

Batch selective_copying(const SelectiveCopyingConfig& c, Generator& gen, int64_t batch) {
    c.validate();
    const int64_t S = c.span, M = c.num_memorize, C = c.num_tokens, L = c.seq_len();
    check_batch(batch, L, "selective_copying");
    std::vector<int64_t> x(size_t(batch * L), c.noise_token()), y(size_t(batch * L), kIgnoreIndex);
    for (int64_t b = 0; b < batch; ++b) {
        int64_t* xb = x.data() + b * L;
        int64_t* yb = y.data() + b * L;
        std::vector<int64_t> pos = distinct(gen, S, M);
        std::sort(pos.begin(), pos.end());
        std::vector<int64_t> tokens(static_cast<size_t>(M));
        for (int64_t i = 0; i < M; ++i) {
            tokens[size_t(i)] = 1 + draw(gen, C);
            xb[pos[size_t(i)]] = tokens[size_t(i)];
        }
        if (c.reverse) std::reverse(tokens.begin(), tokens.end());
        for (int64_t i = 0; i < M; ++i) {
            xb[S + i] = c.marker_token();
            yb[S + i] = ((tokens[size_t(i)] - 1 + c.token_shift) % C + C) % C + 1;
        }
    }
    return make_batch(x, y, batch, L);
}

Batch induction_heads(const InductionHeadsConfig& c, Generator& gen, int64_t batch) {
    c.validate();
    const int64_t L = c.seq_len, V = c.num_tokens;
    check_batch(batch, L, "induction_heads");
    std::vector<int64_t> x(size_t(batch * L)), y(size_t(batch * L), kIgnoreIndex);
    for (int64_t b = 0; b < batch; ++b) {
        int64_t* xb = x.data() + b * L;
        for (int64_t t = 0; t < L - 1; ++t) xb[t] = draw(gen, V);
        const int64_t p = draw(gen, L - 2);  // p ∈ [0, L − 3]: X = xb[p + 1] lies before the final special token
        xb[p] = c.special_token();
        xb[L - 1] = c.special_token();
        y[size_t(b * L + L - 1)] = xb[p + 1];
    }
    return make_batch(x, y, batch, L);
}

Batch associative_recall(const AssociativeRecallConfig& c, Generator& gen, int64_t batch) {
    c.validate();
    const int64_t K = c.num_pairs, half = c.num_tokens / 2, L = c.seq_len();
    check_batch(batch, L, "associative_recall");
    std::vector<int64_t> x(size_t(batch * L)), y(size_t(batch * L), kIgnoreIndex);
    for (int64_t b = 0; b < batch; ++b) {
        int64_t* xb = x.data() + b * L;
        const std::vector<int64_t> keys = distinct(gen, half, K);
        for (int64_t i = 0; i < K; ++i) {
            xb[2 * i] = keys[size_t(i)];
            xb[2 * i + 1] = half + draw(gen, half);
        }
        const int64_t q = draw(gen, K);
        xb[2 * K] = xb[2 * q];
        y[size_t(b * L + 2 * K)] = xb[2 * q + 1];
    }
    return make_batch(x, y, batch, L);
}

// ---------------------------------------------------------------------------------------------- by name

SyntheticTask SyntheticTask::from_json(const nlohmann::json& j, const std::string& source) {
    SSMTUNE_CHECK(j.is_object(), source, ": a task must be a JSON object such as {\"name\": \"selective_copying\"}, "
                  "got ", j.dump());
    SyntheticTask t;
    for (auto& [k, v] : j.items()) {
        SSMTUNE_CHECK(k == "name" || k == "num_tokens" || k == "num_memorize" || k == "span" || k == "reverse" ||
                          k == "token_shift",
                      source, ": unknown task field \"", k, "\"; valid: name, num_tokens, num_memorize, span, reverse, "
                      "token_shift");
        SSMTUNE_CHECK(!v.is_null(), source, ": task field \"", k, "\" is null; fix: leave it out for its default");
    }
    // (an integer field through json_integer: nlohmann's get<int64_t> truncated 2.5 and converted 1e30 with
    // undefined behaviour)
    read_json_field(j, "name", t.name, source);
    read_json_field(j, "num_tokens", t.num_tokens, source);
    read_json_field(j, "num_memorize", t.num_memorize, source);
    read_json_field(j, "span", t.span, source);
    read_json_field(j, "reverse", t.reverse, source);
    read_json_field(j, "token_shift", t.token_shift, source);
    t.validate(source);
    return t;
}

nlohmann::json SyntheticTask::to_json() const {
    return {{"name", name}, {"num_tokens", num_tokens}, {"num_memorize", num_memorize}, {"span", span},
            {"reverse", reverse}, {"token_shift", token_shift}};
}

SelectiveCopyingConfig SyntheticTask::selective_copying_config() const {
    SelectiveCopyingConfig c;
    c.num_tokens = num_tokens;
    c.num_memorize = num_memorize;
    c.span = span;
    c.reverse = reverse;
    c.token_shift = token_shift;
    return c;
}

InductionHeadsConfig SyntheticTask::induction_heads_config() const {
    InductionHeadsConfig c;
    c.num_tokens = num_tokens;
    c.seq_len = span;
    return c;
}

AssociativeRecallConfig SyntheticTask::associative_recall_config() const {
    AssociativeRecallConfig c;
    c.num_tokens = num_tokens;
    c.num_pairs = num_memorize;
    return c;
}

void SyntheticTask::validate(const std::string& source) const {
    const std::string w = source + " (" + name + ")";
    if (name == "selective_copying") {
        selective_copying_config().validate(w);
        return;
    }
    SSMTUNE_CHECK(name == "induction_heads" || name == "associative_recall", source, ": unknown task \"", name,
                  "\"; known: selective_copying, induction_heads, associative_recall");
    SSMTUNE_CHECK(!reverse && token_shift == 0, w, ": reverse and token_shift apply to selective_copying only; fix: "
                  "drop them (or set false / 0)");
    if (name == "induction_heads") {
        SSMTUNE_CHECK(span >= 4 && span <= kMaxLength, w, ".span (the sequence length) = ", span,
                      " is out of range; fix: 4 <= span <= ", kMaxLength);
        induction_heads_config().validate(w);
    } else {
        SSMTUNE_CHECK(num_memorize >= 1 && num_memorize <= num_tokens / 2, w, ".num_memorize (the key-value pairs) = ",
                      num_memorize, " does not fit in the ", num_tokens / 2, " key tokens; fix: 1 <= num_memorize <= "
                      "num_tokens/2");
        associative_recall_config().validate(w);
    }
}

int64_t SyntheticTask::vocab_size() const {
    if (name == "selective_copying") return selective_copying_config().vocab_size();
    if (name == "induction_heads") return induction_heads_config().vocab_size();
    return associative_recall_config().vocab_size();
}

int64_t SyntheticTask::seq_len() const {
    if (name == "selective_copying") return selective_copying_config().seq_len();
    if (name == "induction_heads") return span;
    return associative_recall_config().seq_len();
}

Batch SyntheticTask::sample(Generator& gen, int64_t batch) const {
    validate();
    if (name == "selective_copying") return selective_copying(selective_copying_config(), gen, batch);
    if (name == "induction_heads") return induction_heads(induction_heads_config(), gen, batch);
    return associative_recall(associative_recall_config(), gen, batch);
}

double target_accuracy(const Tensor& logits, const Tensor& targets) {
    const int64_t V = logits.size(-1);
    const std::vector<double> l = logits.to_vector<double>();
    const std::vector<int64_t> t = targets.to_vector<int64_t>();
    SSMTUNE_CHECK(int64_t(l.size()) == int64_t(t.size()) * V, "target_accuracy: logits ", logits.describe(),
                  " do not match targets ", targets.describe(), "; fix: logits [B, L, V] for targets [B, L]");
    int64_t hit = 0, n = 0;
    for (size_t i = 0; i < t.size(); ++i) {
        if (t[i] == kIgnoreIndex) continue;
        const double* row = l.data() + i * size_t(V);
        hit += int64_t(std::max_element(row, row + V) - row) == t[i];
        ++n;
    }
    return n ? double(hit) / double(n) : 0.0;
}

}  // namespace ssmtune::data
