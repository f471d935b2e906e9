// Trainable tokens (HF PEFT's TrainableTokensLayer, peft ≥ 0.15): rows of an embedding matrix or of the LM head
// replaced by trainable rows [n, D] (trainable_tokens.h has the formulas). HF computes W' = W.index_copy(0, idx,
// rows) and looks up / multiplies with W'; we leave W alone and replace only what reads the chosen rows — the
// embedding outputs of those ids (their rows, exactly), the head's logits of those tokens (+ h · (rows − W[ids]):
// exactly the base's at init, HF's h · rows up to the rounding of the sums after) — with `where`, so no [V, D] copy
// is made per step. Also the peft_type TRAINABLE_TOKENS (HF's TrainableTokensConfig:
// token_indices, target_modules (null: the input embedding), init_weights), file name
// `<module>.trainable_tokens_delta`; LoRA's trainable_token_indices uses the pieces here (lora.cpp).
// Not here: overlapping indices of several adapters (one adapter per module), S4D (no tokens).
#include "peft/trainable_tokens.h"

#include <algorithm>
#include <unordered_map>

#include "autograd/node.h"
#include "engine/tensor_copy.h"
#include "ops/ops.h"

namespace ssmtune::peft {

using nlohmann::json;

namespace {

Tensor& matrix_of(models::Module* m) {
    if (auto* e = dynamic_cast<models::Embedding*>(m)) return e->weight();
    return static_cast<models::Linear*>(m)->weight();
}

// The trainable rows [n, D] of one matrix and the token ids they replace.
class RowsDelta : public models::OutputDelta {
public:
    RowsDelta(Tensor rows, std::vector<int64_t> indices, models::Module* owner)
        : indices_(std::move(indices)), owner_(owner) {
        rows_ = register_parameter("trainable_tokens_delta", std::move(rows));
    }
    std::string type_name() const override { return "TrainableTokens"; }

protected:
    std::vector<int64_t> indices_;
    models::Module* owner_;  // the module whose matrix the rows replace
    Tensor rows_;
};

// On an Embedding: x holds the ids; the outputs of the chosen ids become their rows.
class LookupRows : public RowsDelta {
public:
    LookupRows(Tensor rows, std::vector<int64_t> indices, models::Module* owner)
        : RowsDelta(std::move(rows), std::move(indices), owner) {
        for (size_t j = 0; j < indices_.size(); ++j) position_[indices_[j]] = int64_t(j);
    }
    Tensor forward(const Tensor& ids) override {
        const Tensor base = ops::embedding(matrix_of(owner_).detach(), ids);
        return ops::sub(apply(base, ids), base);
    }
    Tensor apply(const Tensor& out, const Tensor& ids) override {
        const auto values = ids.to_vector<int64_t>();
        std::vector<int64_t> at(values.size(), 0);
        std::vector<double> hit(values.size(), 0.0);
        for (size_t i = 0; i < values.size(); ++i) {
            auto it = position_.find(values[i]);
            if (it == position_.end()) continue;
            at[i] = it->second;
            hit[i] = 1.0;
        }
        Shape mask_shape = ids.shape();
        mask_shape.push_back(1);
        const Tensor picked = ops::embedding(rows_, Tensor::from_vector<int64_t>(at, ids.shape()).to(ids.device()));
        const Tensor mask = Tensor::from_vector<double>(hit, mask_shape).to(out.dtype()).to(out.device());
        return ops::where(mask, picked, out);
    }

private:
    std::unordered_map<int64_t, int64_t> position_;  // token id -> its row j
};

// On a head (the lm_head Linear, or the tied head): x is h [..., D]; the logits of the chosen tokens become h · rows.
class HeadRows : public RowsDelta {
public:
    HeadRows(Tensor rows, std::vector<int64_t> indices, models::Module* owner)
        : RowsDelta(std::move(rows), std::move(indices), owner) {
        const int64_t V = matrix_of(owner_).size(0);
        column_row_.assign(size_t(V), 0);
        is_row_.assign(size_t(V), 0.0);
        for (size_t j = 0; j < indices_.size(); ++j) {
            column_row_[size_t(indices_[j])] = int64_t(j);
            is_row_[size_t(indices_[j])] = 1.0;
        }
    }
    Tensor forward(const Tensor& h) override {
        const Tensor base = ops::linear(h, matrix_of(owner_).detach());
        return ops::sub(apply(base, h), base);
    }
    Tensor apply(const Tensor& out, const Tensor& h) override {
        const auto V = int64_t(column_row_.size());
        // h · (rows − W[indices]) added to those logits: exactly the base's while the rows are W's (h · rows with
        // the full GEMM's rounding otherwise, HF's up to the order of the sums)
        const Tensor& w = matrix_of(owner_);
        const Tensor moved = ops::sub(rows_, ops::index_select(w.detach(), 0, Tensor::from_vector<int64_t>(
                                                                   indices_, {int64_t(indices_.size())}).to(w.device())));
        const Tensor small = ops::linear(h, moved);  // [..., n]
        const Tensor spread = ops::index_select(small, small.dim() - 1,
                                                Tensor::from_vector<int64_t>(column_row_, {V}).to(out.device()));  // [..., V]
        const Tensor mask = Tensor::from_vector<double>(is_row_, {V}).to(out.dtype()).to(out.device());
        return ops::where(mask, ops::add(out, spread), out);
    }

private:
    std::vector<int64_t> column_row_;  // [V]: the row j of each chosen token's column, 0 elsewhere
    std::vector<double> is_row_;       // [V]: 1 at the chosen tokens
};

}  // namespace

bool trainable_tokens_can_target(const ModelView& model, models::Module* m) {
    if (dynamic_cast<models::Embedding*>(m)) return true;
    return model.lm && model.lm->lm_head() && m == model.lm->lm_head();
}

TrainableTokens attach_trainable_tokens(ModelView& model, const std::string& name, models::Module* m,
                                        const json& indices, bool init_weights, Generator& gen) {
    SSMTUNE_CHECK(trainable_tokens_can_target(model, m), "trainable tokens replace rows of an Embedding or of the LM "
                  "head, but ", name, " is a ", m->type_name());
    auto* host = static_cast<models::DeltaHost*>(m);
    SSMTUNE_CHECK(host->deltas().empty(), name, " already carries a ", host->deltas().front()->type_name(), " adapter; "
                  "trainable tokens keep a module to themselves; fix: detach it first, or leave ", name, " out of the "
                  "other adapter's target_modules");
    const Tensor& matrix = matrix_of(m);
    const int64_t V = matrix.size(0);
    SSMTUNE_CHECK(indices.is_array() && !indices.empty(), "trainable token indices for ", name, " must be a non-empty "
                  "list of token ids, got ", indices.dump());
    TrainableTokens t;
    t.module = name;
    for (const json& i : indices) {
        SSMTUNE_CHECK(i.is_number_integer() && i.get<int64_t>() >= 0 && i.get<int64_t>() < V, "trainable token index ",
                      i.dump(), " for ", name, " is not a token id in [0, ", V, ")");
        SSMTUNE_CHECK(std::find(t.indices.begin(), t.indices.end(), i.get<int64_t>()) == t.indices.end(),
                      "trainable token index ", i.get<int64_t>(), " is listed twice for ", name, " (HF's index_copy "
                      "leaves which row wins undefined); fix: list each token once");
        t.indices.push_back(i.get<int64_t>());
    }
    const auto n = int64_t(t.indices.size());
    Tensor rows;
    if (init_weights) {  // the current rows: a no-op until trained
        autograd::NoGradGuard no_grad;
        rows = ops::index_select(matrix.detach(), 0, Tensor::from_vector<int64_t>(t.indices, {n}).to(matrix.device()))
                   .contiguous().clone();
    } else {  // HF: torch.randn
        rows = Tensor::randn({n, matrix.size(1)}, gen, matrix.dtype()).to(matrix.device());
    }
    t.rows = trainable(rows);
    t.host = host;
    if (dynamic_cast<models::Embedding*>(m)) {
        t.delta = std::make_shared<LookupRows>(t.rows, t.indices, m);
        // a tied LM's head is the same matrix: HF ties a second layer on it to these rows
        if (model.lm && model.lm->config().tie_word_embeddings && !model.lm->reads_frames() &&
            m == &model.lm->embeddings()) {
            SSMTUNE_CHECK(!model.lm->tied_head_delta, "the tied head carries trainable tokens already");
            t.tied_lm = model.lm;
            t.head_delta = std::make_shared<HeadRows>(t.rows, t.indices, m);
            model.lm->tied_head_delta = t.head_delta;
        }
    } else {
        t.delta = std::make_shared<HeadRows>(t.rows, t.indices, m);
    }
    host->attach_delta("trainable_tokens", t.delta);
    return t;
}

void TrainableTokens::merge() {
    autograd::NoGradGuard no_grad;
    Tensor& w = matrix_of(host);
    const Tensor rows_there = rows.detach().to(w.device()).to(w.dtype());
    for (size_t j = 0; j < indices.size(); ++j) {
        Tensor row = w.select(0, indices[j]);
        copy_into(row, rows_there.select(0, int64_t(j)));
    }
}

void TrainableTokens::detach() {
    if (host && delta) host->detach_delta(delta.get());
    if (tied_lm && tied_lm->tied_head_delta == head_delta) tied_lm->tied_head_delta.reset();
    delta.reset();
    head_delta.reset();
    tied_lm = nullptr;
}

std::vector<TrainableTokens> attach_lora_trainable_tokens(ModelView& model, const json& spec, Generator& gen) {
    std::vector<TrainableTokens> out;
    if (spec.is_null()) return out;
    SSMTUNE_CHECK(spec.is_array() || spec.is_object(), "LORA \"trainable_token_indices\" must be a list of token ids "
                  "(the input embedding's) or an object {module: [ids]}, got ", spec.dump());
    SSMTUNE_CHECK(model.lm, "trainable_token_indices trains rows of a token embedding; this is an S4D classifier; "
                  "fix: remove it");
    try {
        if (spec.is_array()) {
            out.push_back(attach_trainable_tokens(model, "backbone.embeddings", &model.lm->embeddings(), spec, true, gen));
            return out;
        }
        for (auto it = spec.begin(); it != spec.end(); ++it) {
            const std::string& key = it.key();
            bool found = false;
            for (auto& [name, m] : model.module->named_modules()) {
                if (!ends_with(name, key)) continue;  // HF's plain endswith
                if (!trainable_tokens_can_target(model, m)) continue;
                found = true;
                out.push_back(attach_trainable_tokens(model, name, m, it.value(), true, gen));
            }
            SSMTUNE_CHECK(found, "trainable_token_indices key \"", key, "\" names no Embedding or LM head of this ",
                          model.kind(), " model; fix: \"embeddings\" (the input embedding) or \"lm_head\" (untied)");
        }
    } catch (...) {
        for (auto& t : out) t.detach();
        throw;
    }
    return out;
}

namespace {

class TrainableTokensMethod : public Method {
public:
    TrainableTokensMethod(ModelView& model, const Config& config) {
        SSMTUNE_CHECK(model.lm, "TRAINABLE_TOKENS trains rows of a token embedding; this is an S4D classifier, which "
                      "reads real-valued inputs; fix: use LORA or STATE_OFFSET");
        Generator gen(config.json["init_seed"].get<uint64_t>());
        std::vector<std::pair<std::string, models::Module*>> targets;
        if (config.json["target_modules"].is_null()) {  // HF: the model's input embeddings
            targets.emplace_back("backbone.embeddings", &model.lm->embeddings());
        } else {
            targets = match_targets(model, config.json,
                                    [&](models::Module* m) { return trainable_tokens_can_target(model, m); },
                                    "Embedding modules and the LM head");
        }
        try {
            for (auto& [name, m] : targets)
                parts_.push_back(attach_trainable_tokens(model, name, m, config.json["token_indices"],
                                                         config.json["init_weights"].get<bool>(), gen));
        } catch (...) {
            detach();
            throw;
        }
    }
    std::vector<std::pair<std::string, Tensor>> tensors() const override {
        std::vector<std::pair<std::string, Tensor>> out;
        for (const auto& p : parts_) out.emplace_back(p.module + ".trainable_tokens_delta", p.rows);
        return out;
    }
    std::string merge_refusal() const override { return ""; }
    void merge() override {
        for (auto& p : parts_) p.merge();
    }
    void detach() override {
        for (auto& p : parts_) p.detach();
        parts_.clear();
    }

private:
    std::vector<TrainableTokens> parts_;
};

}  // namespace

std::unique_ptr<Method> make_trainable_tokens(ModelView& model, const Config& config) {
    return std::make_unique<TrainableTokensMethod>(model, config);
}

}  // namespace ssmtune::peft
