// Synthetic tasks (see synthetic.h for the exact definitions).
#include "tools/data/synthetic.h"

#include <algorithm>

#include "engine/error.h"

namespace ssmtune::data {

namespace {
// An integer uniform in [0, n) from the generator's next draw.
int64_t draw(Generator& gen, int64_t n) {
    const int64_t v = int64_t(philox_uniform(gen.seed(), gen.advance(1)) * double(n));
    return std::min(v, n - 1);
}
}  // namespace

SyntheticTask SyntheticTask::from_json(const nlohmann::json& j, const std::string& source) {
    SSMTUNE_CHECK(j.is_object(), source, ": a task must be a JSON object");
    SyntheticTask t;
    for (auto& [k, v] : j.items()) {
        try {
            if (k == "name") t.name = v.get<std::string>();
            else if (k == "num_tokens") t.num_tokens = v.get<int64_t>();
            else if (k == "num_memorize") t.num_memorize = v.get<int64_t>();
            else if (k == "span") t.span = v.get<int64_t>();
            else if (k == "reverse") t.reverse = v.get<bool>();
            else if (k == "token_shift") t.token_shift = v.get<int64_t>();
            else SSMTUNE_FAIL(source, ": unknown task field \"", k, "\"; valid: name, num_tokens, num_memorize, span, "
                              "reverse, token_shift");
        } catch (const nlohmann::json::exception&) {
            SSMTUNE_FAIL(source, ": task field \"", k, "\" has the wrong type (", v.dump(), ")");
        }
    }
    t.validate(source);
    return t;
}

nlohmann::json SyntheticTask::to_json() const {
    return {{"name", name}, {"num_tokens", num_tokens}, {"num_memorize", num_memorize}, {"span", span},
            {"reverse", reverse}, {"token_shift", token_shift}};
}

void SyntheticTask::validate(const std::string& source) const {
    SSMTUNE_CHECK(name == "selective_copying" || name == "induction_heads" || name == "associative_recall", source,
                  ": unknown task \"", name, "\"; known: selective_copying, induction_heads, associative_recall");
    SSMTUNE_CHECK(num_tokens >= 2 && num_tokens <= 1000000, source, ": num_tokens must be in [2, 1e6], got ", num_tokens);
    if (name == "selective_copying") {
        SSMTUNE_CHECK(num_memorize >= 1 && span >= num_memorize && span <= 1000000, source,
                      ": selective copying needs 1 <= num_memorize <= span <= 1e6 (got ", num_memorize, ", ", span, ")");
    } else if (name == "induction_heads") {
        SSMTUNE_CHECK(span >= 4 && span <= 1000000, source, ": induction heads needs span (the length) in [4, 1e6]");
    } else {
        SSMTUNE_CHECK(num_tokens % 2 == 0 && num_memorize >= 1 && num_memorize <= num_tokens / 2, source,
                      ": associative recall needs an even num_tokens and 1 <= num_memorize <= num_tokens/2 (got ",
                      num_tokens, ", ", num_memorize, ")");
    }
}

int64_t SyntheticTask::vocab_size() const {
    if (name == "selective_copying") return num_tokens + 2;
    if (name == "induction_heads") return num_tokens + 1;
    return num_tokens;
}

int64_t SyntheticTask::seq_len() const {
    if (name == "selective_copying") return span + num_memorize;
    if (name == "induction_heads") return span;
    return 2 * num_memorize + 1;
}

TokenBatch SyntheticTask::sample(Generator& gen, int64_t batch) const {
    SSMTUNE_CHECK(batch >= 1, "a batch needs at least one sequence");
    const int64_t L = seq_len();
    std::vector<int64_t> x(size_t(batch * L), 0), y(size_t(batch * L), -100);
    for (int64_t b = 0; b < batch; ++b) {
        int64_t* xb = x.data() + b * L;
        int64_t* yb = y.data() + b * L;
        if (name == "selective_copying") {
            const int64_t C = num_tokens, M = num_memorize;
            std::vector<int64_t> pos;
            while (int64_t(pos.size()) < M) {  // distinct positions, rejection sampling
                const int64_t p = draw(gen, span);
                if (std::find(pos.begin(), pos.end(), p) == pos.end()) pos.push_back(p);
            }
            std::sort(pos.begin(), pos.end());
            std::vector<int64_t> tokens;
            for (int64_t i = 0; i < M; ++i) {
                tokens.push_back(1 + draw(gen, C));
                xb[pos[size_t(i)]] = tokens.back();
            }
            if (reverse) std::reverse(tokens.begin(), tokens.end());
            for (int64_t i = 0; i < M; ++i) {
                xb[span + i] = C + 1;
                yb[span + i] = ((tokens[size_t(i)] - 1 + token_shift) % C + C) % C + 1;
            }
        } else if (name == "induction_heads") {
            const int64_t V = num_tokens;
            for (int64_t t = 0; t < L; ++t) xb[t] = draw(gen, V);
            const int64_t p = draw(gen, L - 3);
            xb[p] = V;
            const int64_t X = xb[p + 1];
            xb[L - 1] = V;
            yb[L - 1] = X;
        } else {
            const int64_t V = num_tokens, K = num_memorize;
            std::vector<int64_t> keys;
            while (int64_t(keys.size()) < K) {
                const int64_t k = draw(gen, V / 2);
                if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
            }
            std::vector<int64_t> values;
            for (int64_t i = 0; i < K; ++i) {
                values.push_back(V / 2 + draw(gen, V / 2));
                xb[2 * i] = keys[size_t(i)];
                xb[2 * i + 1] = values.back();
            }
            const int64_t q = draw(gen, K);
            xb[2 * K] = keys[size_t(q)];
            yb[2 * K] = values[size_t(q)];
        }
    }
    return {Tensor::from_vector<int64_t>(x, {batch, L}), Tensor::from_vector<int64_t>(y, {batch, L})};
}

double target_accuracy(const Tensor& logits, const Tensor& targets) {
    const int64_t V = logits.size(-1);
    const std::vector<double> l = logits.to_vector<double>();
    const std::vector<int64_t> t = targets.to_vector<int64_t>();
    SSMTUNE_CHECK(int64_t(l.size()) == int64_t(t.size()) * V, "target_accuracy: logits ", logits.describe(),
                  " do not match targets ", targets.describe());
    int64_t hit = 0, n = 0;
    for (size_t i = 0; i < t.size(); ++i) {
        if (t[i] == -100) continue;
        const double* row = l.data() + i * size_t(V);
        hit += int64_t(std::max_element(row, row + V) - row) == t[i];
        ++n;
    }
    return n ? double(hit) / double(n) : 0.0;
}

}  // namespace ssmtune::data
