// LORA (Hu et al. 2021) with HuggingFace PEFT's exact semantics and file layout (reference/peft-methods.md §1, §7).
//
//   Linear:          out = W x + b + s · B (A dropout(x)),   A [r, in] Kaiming-uniform(a=√5), B [out, r] zero
//   Embedding:       out = E[ids] + s · (A^T[ids]) B^T,       lora_embedding_A [r, V] zero, lora_embedding_B [D, r] N(0,1)
//   PointwiseConv1d: out = conv(y) + s · B (A y) per position, lora_A.weight [r, in, 1], lora_B.weight [out, r, 1]
//   s = lora_alpha / r, or lora_alpha / √r with use_rslora. Merge: W += s·B A (embedding: E += s·(B A)ᵀ).
// File names: <module>.lora_A.weight / .lora_B.weight, embeddings <module>.lora_embedding_A / _B (no ".weight"),
// as HF's get_peft_model_state_dict writes them. init_lora_weights=false draws B like A (a non-zero start, used
// by tests); "gaussian" draws A from N(0, 1/r); "pissa", "pissa_niter_K", "olora" and "orthogonal" come from
// lora_init.cpp (PiSSA and OLoRA also rewrite the base weight to W − s·B A; detach puts it back).
// Default targets when target_modules is null: in_proj, x_proj, dt_proj, out_proj for Mamba/Longhorn (the
// linear projections); encoder, output_linear.0, decoder for S4D.
// Merging an embedding adapter into a tied model first unties the LM head (HF's tied head would silently change).
// rank_pattern / alpha_pattern give single modules their own r / lora_alpha (so their own s), exclude_modules
// removes modules from the match (peft/adapter.cpp), modules_to_save trains whole modules beside the LoRA, as in HF.
// use_dora: DoRA on Linear, 1x1 Conv1d (DoraDelta) and Embedding (DoraEmbedding) modules, as HF's.
// bias "all" / "lora_only" trains biases in place beside the LoRA; lora_bias gives lora_B a bias (s · b_B added).
// Several LoRA adapters on one module (peft::apply twice, or AdapterSet::set_active with a list) apply in the order
// attached, each to the output so far, as HF's layer loops over its active adapters; so a DoRA adapter scales the
// adapters before it too (HF's base_result is the result so far). Merging while a module carries a DoRA adapter and
// another one is refused (the merged outputs would differ); a base-rewriting init (PiSSA, OLoRA) must come first.
// Not here: LoRA on the depthwise conv1d (HF forbids it on Mamba too).
#include <algorithm>
#include <cmath>
#include <regex>

#include "autograd/node.h"
#include "engine/tensor_copy.h"
#include "ops/ops.h"
#include "peft/lora.h"
#include "peft/lora_init.h"
#include "peft/lora_params.h"
#include "peft/trainable_tokens.h"

namespace ssmtune::peft {

using json = nlohmann::json;

namespace {

// rank_pattern / alpha_pattern as HF's get_pattern_key reads them: a key applies to a module whose full name matches
// (.*\.)?(key) as a whole. HF takes the first matching key in the file's order; a parsed JSON object keeps no order,
// so two keys that match one module with different values are refused rather than resolved by chance.
const json* pattern_value(const json& c, const char* field, const std::string& module) {
    if (module.empty() || !c.contains(field) || !c.at(field).is_object()) return nullptr;
    const json* found = nullptr;
    std::string found_key;
    for (auto it = c.at(field).begin(); it != c.at(field).end(); ++it) {
        std::regex re;
        try {
            re = std::regex("(.*\\.)?(" + it.key() + ")");
        } catch (const std::regex_error& e) {
            SSMTUNE_FAIL(field, " key \"", it.key(), "\" is not a valid regular expression (", e.what(), ")");
        }
        if (!std::regex_match(module, re)) continue;
        SSMTUNE_CHECK(!found || *found == it.value(), field, " keys \"", found_key, "\" and \"", it.key(),
                      "\" both match ", module, " with different values; fix: make the keys select disjoint modules");
        found = &it.value();
        found_key = it.key();
    }
    return found;
}

}  // namespace

LoraSettings LoraSettings::from_config(const json& c, const std::string& module) {
    LoraSettings s;
    const json* r = pattern_value(c, "rank_pattern", module);
    const json* a = pattern_value(c, "alpha_pattern", module);
    s.r = (r ? *r : c.at("r")).get<int64_t>();
    const double alpha = (a ? *a : c.at("lora_alpha")).get<double>();
    s.scale = c["use_rslora"].get<bool>() ? alpha / std::sqrt(double(s.r)) : alpha / double(s.r);
    s.dropout = c["lora_dropout"].get<double>();
    const json& init = c.contains("init_lora_weights") ? c["init_lora_weights"] : json(true);
    s.init = init == false ? "random" : init.is_string() ? init.get<std::string>() : "default";
    s.dora = c.contains("use_dora") && c.at("use_dora") == true;
    s.lora_bias = c.contains("lora_bias") && c.at("lora_bias") == true;
    return s;
}

namespace {

Tensor kaiming_a(int64_t r, int64_t fan_in, Generator& gen, DType dtype) {
    const double bound = 1.0 / std::sqrt(double(fan_in));  // kaiming_uniform(a=√5)
    return Tensor::uniform({r, fan_in}, gen, -bound, bound).to(dtype);
}

// A child holding a tensor named "weight" and, for lora_B under lora_bias, one named "bias" (HF's lora_A / lora_B
// are nn.Linear or nn.Conv1d modules).
class WeightHolder : public models::Module {
public:
    explicit WeightHolder(Tensor w, Tensor bias = Tensor()) {
        register_parameter("weight", w);
        if (bias.defined()) register_parameter("bias", bias);
    }
    Tensor weight() const { return params_[0].second; }
    Tensor bias() const { return params_.size() > 1 ? params_[1].second : Tensor(); }  // undefined without lora_bias
    std::string type_name() const override { return "Linear"; }
};

class LoraLinear : public models::OutputDelta {
public:
    // start: A and B from an init of lora_init.cpp (PiSSA, OLoRA, orthogonal), else drawn here
    LoraLinear(int64_t in, int64_t out, const LoraSettings& s, Generator& gen, DType dtype, bool conv,
               const LoraStart* start = nullptr)
        : s_(s), gen_(gen.seed() * 7919 + gen.advance(1)), conv_(conv) {
        Tensor a, b;
        if (start) {
            a = start->a;
            b = start->b;
        } else {
            a = s.init == "gaussian" ? Tensor::randn({s.r, in}, gen, DType::F64, 0.0, 1.0 / double(s.r)).to(dtype)
                                     : kaiming_a(s.r, in, gen, dtype);
            b = s.init == "random" ? kaiming_a(out, s.r, gen, dtype) : Tensor::zeros({out, s.r}, dtype);
        }
        if (conv) { a = a.reshape({s.r, in, 1}); b = b.reshape({out, s.r, 1}); }
        // lora_bias: b_B [out], zero like B (init_lora_weights false: nn.Linear's default, U(±1/√r))
        Tensor bias;
        if (s.lora_bias)
            bias = s.init == "random" ? Tensor::uniform({out}, gen, -1.0 / std::sqrt(double(s.r)), 1.0 / std::sqrt(double(s.r))).to(dtype)
                                      : Tensor::zeros({out}, dtype);
        a_ = register_module("lora_A", std::make_shared<WeightHolder>(trainable(a)));
        b_ = register_module("lora_B", std::make_shared<WeightHolder>(trainable(b), bias.defined() ? trainable(bias) : bias));
    }
    Tensor A() { return a_->weight(); }
    Tensor B() { return b_->weight(); }
    Tensor forward(const Tensor& x) override { return masked(product(dropped(x))); }
    // s · (B A x + b_B) for an input already dropped out: x [..., in] -> [..., out] (conv: [B, in, L] -> [B, out, L]).
    Tensor product(const Tensor& in) {
        if (conv_) {
            Tensor a = A(), b = B();
            Tensor ax = ops::matmul(a.reshape({a.size(0), a.size(1)}), in);         // [B, r, L]
            Tensor bax = ops::matmul(b.reshape({b.size(0), b.size(1)}), ax);        // [B, out, L]
            if (b_->bias().defined()) bax = ops::add(bax, b_->bias().unsqueeze(1));
            return ops::mul_scalar(bax, s_.scale);
        }
        return ops::mul_scalar(ops::linear(ops::linear(in, A()), B(), b_->bias()), s_.scale);  // [..., out]
    }
    // s · b_B [out] (merged into the host's bias), undefined without lora_bias.
    Tensor delta_bias() { return b_->bias().defined() ? ops::mul_scalar(b_->bias(), s_.scale) : Tensor(); }
    // s · B A as [out, in] (conv: [out, in, 1]).
    Tensor delta_weight() {
        Tensor a = A(), b = B();
        Tensor w = ops::mul_scalar(ops::matmul(b.reshape({b.size(0), s_.r}), a.reshape({s_.r, a.size(1)})), s_.scale);
        return conv_ ? w.reshape({w.size(0), w.size(1), 1}) : w;
    }
    std::string type_name() const override { return "LoraLayer"; }
    Generator* training_generator() override { return s_.dropout > 0 ? &gen_ : nullptr; }

protected:
    Tensor dropped(const Tensor& x) { return is_training() && s_.dropout > 0 ? ops::dropout(x, s_.dropout, true, gen_) : x; }
    LoraSettings s_;

private:
    Generator gen_;
    bool conv_;
    std::shared_ptr<WeightHolder> a_, b_;
};

// DoRA (Liu et al. 2024) on a Linear or a 1x1 Conv1d, as HF's DoraLinearLayer / DoraConv1dLayer compute it: with
// x′ = dropout(x) and the norms n = ‖W + s·B A‖ of each output row (over the inputs) held constant in backward (DoRA
// §4.3: HF detaches them),
//   out = W x + b + (m/n − 1) ⊙ W x′ + (m/n) ⊙ s·B A x′,   m initialised to n (so out = W x + b + s·B A x at init)
// merged: W ← (m/n) ⊙ (W + s·B A) row by row, b unchanged. File name <module>.lora_magnitude_vector, [out] for a
// Linear and [1, out, 1] for a Conv1d, as HF's.
class DoraDelta : public LoraLinear {
public:
    DoraDelta(models::DeltaHost* host, int64_t in, int64_t out, const LoraSettings& s, Generator& gen, DType dtype, bool conv,
              const LoraStart* start = nullptr)
        : LoraLinear(in, out, s, gen, dtype, conv, start), host_(host), conv_(conv), out_(out) {
        Tensor n = weight_norm();
        register_parameter("lora_magnitude_vector", trainable(conv ? n.reshape({1, out, 1}) : n));
    }
    Tensor forward(const Tensor& x) override {
        Tensor in = dropped(x);
        Tensor wx = conv_ ? ops::matmul(base_weight(), in) : ops::linear(in, base_weight());  // W x′
        return dora_terms(wx, product(in));
    }
    // Without dropout x′ = x, so W x′ = out − b: like HF (which passes the host's result as base_result) we reuse
    // the host's output instead of a second product with W, and sum in HF's order, out + ((m/n − 1)(out − b) +
    // (m/n) s·B A x) (forward()'s sum, added to out), so that at init (m/n exactly 1, B A = 0) the output is the
    // host's to the bit. The shorter (m/n)(out − b + s·B A x) + b is equal in exact arithmetic but rounds
    // (out − b) + b: an ulp off on x87.
    Tensor apply(const Tensor& out, const Tensor& x) override {
        if (is_training() && s_.dropout > 0) return ops::add(out, forward(x));
        const Tensor* bias = host_->find_parameter("bias");
        const Tensor b = bias ? (conv_ ? bias->unsqueeze(1) : *bias) : Tensor();  // [out] (conv: [out, 1])
        const Tensor wx = b.defined() ? ops::sub(out, b) : out;  // W x
        return ops::add(out, dora_terms(wx, product(x)));
    }
    Tensor merged_weight() {  // (m / n) ⊙ (W + s·B A), row by row, in the host's shape
        autograd::NoGradGuard no_grad;
        Tensor w = dense();
        w = ops::mul(w, ops::div(params_[0].second.detach().reshape({out_}), row_norms(w)).unsqueeze(1));
        return conv_ ? w.reshape({w.size(0), w.size(1), 1}) : w;
    }
    std::string type_name() const override { return "DoraLayer"; }

private:
    // What DoRA adds to the host's output: (m/n − 1) ⊙ W x′ + (m/n) ⊙ s·B A x′, in HF's order.
    Tensor dora_terms(const Tensor& wx, const Tensor& scaled_bax) {
        const Tensor scale = magnitude_scale();
        return ops::add(ops::mul(wx, ops::add_scalar(scale, -1.0)), ops::mul(scaled_bax, scale));
    }
    Tensor magnitude_scale() {  // m / n: [out], or [out, 1] over a conv's positions
        Tensor scale = ops::div(params_[0].second.reshape({out_}), weight_norm());
        return conv_ ? scale.unsqueeze(1) : scale;
    }
    Tensor base_weight() {  // W as [out, in]
        const Tensor& w = *host_->find_parameter("weight");
        return conv_ ? w.reshape({w.size(0), w.size(1)}) : w;
    }
    Tensor dense() {  // W + s·B A as [out, in], outside the graph, on the adapter's device (W read across when the
        autograd::NoGradGuard no_grad;  // adapter is made on the host for a model on a GPU: Adapter::to moves it after)
        const Tensor delta = delta_weight().detach().reshape({out_, -1});
        return ops::add(base_weight().detach().to(delta.device()), delta);
    }
    static Tensor row_norms(const Tensor& w) { return ops::sqrt(ops::sum(ops::mul(w, w), {1})); }
    Tensor weight_norm() {  // n = ‖W + s·B A‖ per output row, outside the graph
        autograd::NoGradGuard no_grad;
        return row_norms(dense());
    }
    models::DeltaHost* host_;
    bool conv_;
    int64_t out_;
};

class LoraEmbedding : public models::OutputDelta {
public:
    LoraEmbedding(int64_t V, int64_t D, const LoraSettings& s, Generator& gen, DType dtype) : s_(s) {
        // HF: lora_embedding_A zero, lora_embedding_B normal (so the product starts at zero).
        Tensor a = s.init == "random" ? Tensor::randn({s.r, V}, gen, dtype) : Tensor::zeros({s.r, V}, dtype);
        register_parameter("lora_embedding_A", trainable(a));
        register_parameter("lora_embedding_B", trainable(Tensor::randn({D, s.r}, gen, dtype)));
    }
    Tensor forward(const Tensor& ids) override {
        Tensor after_a = ops::embedding(params_[0].second.transpose(0, 1).contiguous(), ids);  // [..., r]
        return masked(ops::mul_scalar(ops::linear(after_a, params_[1].second), s_.scale));    // [..., D]
    }
    Tensor delta_weight() {  // [V, D] = s·(B A)ᵀ
        return ops::mul_scalar(ops::matmul(params_[1].second, params_[0].second), s_.scale).transpose(0, 1).contiguous();
    }
    std::string type_name() const override { return "LoraEmbedding"; }

private:
    LoraSettings s_;
};

// DoRA on an Embedding E [V, D], as HF's DoraEmbeddingLayer: the norms run over the vocabulary, one per embedding
// dimension, n = ‖(E + s·(B A)ᵀ)[:, d]‖ (held constant in backward), m [D] initialised to n, and
//   out = E[ids] + (m/n − 1) ⊙ E[ids] + (m/n) ⊙ s·(Aᵀ[ids]) Bᵀ;   merged: E ← (E + s·(B A)ᵀ) ⊙ (m/n) column by column.
class DoraEmbedding : public LoraEmbedding {
public:
    DoraEmbedding(models::Embedding* host, const LoraSettings& s, Generator& gen, DType dtype)
        : LoraEmbedding(host->weight().size(0), host->weight().size(1), s, gen, dtype), host_(host) {
        register_parameter("lora_magnitude_vector", trainable(weight_norm()));
    }
    Tensor forward(const Tensor& ids) override {
        const Tensor scale = ops::div(params_[2].second, weight_norm());  // m / n  [D]
        Tensor base = ops::embedding(host_->weight(), ids);                 // E[ids] [..., D]
        return ops::add(ops::mul(base, ops::add_scalar(scale, -1.0)), ops::mul(LoraEmbedding::forward(ids), scale));
    }
    // HF's DoraEmbeddingVariant: result <- (m/n) ⊙ result + (m/n) ⊙ s·(Aᵀ[ids]) Bᵀ, with `result` the host's output
    // so far (E[ids] alone, or with the LoRA adapters attached before this one): forward's value when alone.
    Tensor apply(const Tensor& out, const Tensor& ids) override {
        const Tensor scale = ops::div(params_[2].second, weight_norm());
        return ops::mul(ops::add(out, LoraEmbedding::forward(ids)), scale);
    }
    Tensor merged_weight() {
        autograd::NoGradGuard no_grad;
        Tensor w = dense();
        return ops::mul(w, ops::div(params_[2].second.detach(), column_norms(w)).unsqueeze(0));
    }
    std::string type_name() const override { return "DoraEmbedding"; }

private:
    Tensor dense() {  // E + s·(B A)ᵀ [V, D], outside the graph, on the adapter's device (as DoraDelta's)
        autograd::NoGradGuard no_grad;
        const Tensor delta = delta_weight().detach();
        return ops::add(host_->weight().detach().to(delta.device()), delta);
    }
    static Tensor column_norms(const Tensor& w) { return ops::sqrt(ops::sum(ops::mul(w, w), {0})); }
    Tensor weight_norm() {  // n [D]: column norms of E + s·(B A)ᵀ, outside the graph
        autograd::NoGradGuard no_grad;
        return column_norms(dense());
    }
    models::Embedding* host_;
};

bool is_lora_delta(const models::OutputDelta* d) {
    return dynamic_cast<const LoraLinear*>(d) || dynamic_cast<const LoraEmbedding*>(d);
}

bool is_dora_delta(const models::OutputDelta* d) {
    return dynamic_cast<const DoraDelta*>(d) || dynamic_cast<const DoraEmbedding*>(d);
}

}  // namespace

bool lora_trains_base_in_place(const json& c) {
    const bool saves = c.contains("modules_to_save") && !c.at("modules_to_save").is_null() && !c.at("modules_to_save").empty();
    return saves || (c.contains("bias") && c.at("bias") != "none");
}

json default_lora_targets(const ModelView& model) {
    if (model.s4d) return json::array({"encoder", "output_linear.0", "decoder"});
    return json::array({"in_proj", "x_proj", "dt_proj", "out_proj"});
}

bool lora_can_target(models::Module* m) {
    return dynamic_cast<models::Linear*>(m) || dynamic_cast<models::Embedding*>(m) ||
           dynamic_cast<models::PointwiseConv1d*>(m);
}

LoraAttachment attach_lora(ModelView& model, const json& config, Generator& gen) {
    LoraAttachment att;
    json c = config;
    if (c["target_modules"].is_null()) c["target_modules"] = default_lora_targets(model);
    att.settings = LoraSettings::from_config(c);
    att.targets = c["target_modules"];
    if (c["target_modules"].is_array() && c["target_modules"].empty()) return att;  // target_parameters only
    const DType dtype = model.dtype();
    try {  // a module that fails (rank too large, ambiguous pattern) leaves none attached
        for (auto& [name, m] : match_targets(model, c, lora_can_target, "Linear, Embedding and 1x1 Conv1d modules")) {
            const LoraSettings settings = LoraSettings::from_config(c, name);
            auto* host = static_cast<models::DeltaHost*>(m);
            for (auto& other : host->deltas()) {  // LoRA beside LoRA only (HF's several active adapters)
                SSMTUNE_CHECK(is_lora_delta(other.get()), name, " already carries a ", other->type_name(), " adapter, "
                              "and LoRA shares a module only with LoRA; fix: detach it first");
                SSMTUNE_CHECK(!lora_init_changes_base(settings.init), "init_lora_weights \"", settings.init, "\" rewrites ",
                              name, "'s weight, which the LoRA adapter already on it reads; fix: attach (or activate) "
                              "this adapter first");
            }
            // any r >= 1, also one larger than both sides of the weight (HF's update_layer allows it; B A then
            // has rank min(in, out) and the extra rows train as HF's do)
            std::shared_ptr<models::OutputDelta> delta;
            auto* lin = dynamic_cast<models::Linear*>(m);
            LoraStart start;
            if (lin && lora_init_is_computed(settings.init)) {
                // HF's order: the init (and PiSSA / OLoRA's new base W − s·B A) first, then DoRA's magnitude from it
                start = lora_computed_start(settings.init, name, lin->weight(), settings.r, settings.scale, gen, dtype);
                if (start.residual.defined()) {
                    att.base_originals.emplace_back(lin->weight(), lin->weight().detach().clone());
                    autograd::NoGradGuard no_grad;
                    copy_into(lin->weight(), start.residual);
                }
            }
            const LoraStart* computed = start.a.defined() ? &start : nullptr;
            if (lin && settings.dora) {
                delta = std::make_shared<DoraDelta>(host, lin->in_features(), lin->out_features(), settings, gen, dtype,
                                                    false, computed);
            } else if (lin) {
                delta = std::make_shared<LoraLinear>(lin->in_features(), lin->out_features(), settings, gen, dtype,
                                                     false, computed);
            } else if (auto* emb = dynamic_cast<models::Embedding*>(m)) {
                SSMTUNE_CHECK(!settings.lora_bias, "lora_bias is not supported on the embedding ", name, " (nor in HF "
                              "PEFT); fix: \"lora_bias\": false, or leave the embedding out of target_modules");
                if (settings.dora) delta = std::make_shared<DoraEmbedding>(emb, settings, gen, dtype);
                else delta = std::make_shared<LoraEmbedding>(emb->weight().size(0), emb->weight().size(1), settings, gen, dtype);
            } else {
                auto* conv = dynamic_cast<models::PointwiseConv1d*>(m);
                SSMTUNE_CHECK(!lora_init_is_computed(settings.init), "init_lora_weights \"", settings.init, "\" works on "
                              "Linear modules, not on the 1x1 Conv1d ", name, " (HF PEFT raises for conv layers too); "
                              "fix: leave it out of target_modules, or init_lora_weights true");
                const int64_t in = conv->weight().size(1), out = conv->weight().size(0);
                if (settings.dora) delta = std::make_shared<DoraDelta>(host, in, out, settings, gen, dtype, true);
                else delta = std::make_shared<LoraLinear>(in, out, settings, gen, dtype, true);
            }
            host->attach_delta("lora", delta);
            att.hosts.emplace_back(name, host);
            att.deltas.push_back(delta);
            if (lora_init_changes_base(settings.init))
                for (auto& [pname, t] : delta->named_parameters())
                    if (pname == "lora_A.weight" || pname == "lora_B.weight" || pname == "lora_embedding_A" ||
                        pname == "lora_embedding_B")
                        att.initial.emplace_back(name + "." + pname, t.detach().clone());
        }
    } catch (...) {
        att.detach();
        throw;
    }
    att.targets = c["target_modules"];
    return att;
}

std::vector<std::pair<std::string, Tensor>> LoraAttachment::tensors() const {
    std::vector<std::pair<std::string, Tensor>> out;
    for (size_t i = 0; i < hosts.size(); ++i) {
        for (auto& [pname, t] : deltas[i]->named_parameters()) {
            // "lora_A.weight" / "lora_embedding_A" as HF names them.
            out.emplace_back(hosts[i].first + "." + pname, t);
        }
    }
    return out;
}

void LoraAttachment::merge(ModelView& model) {
    base_originals.clear();  // the merged weights are W − s·B0 A0 + s·B A: the merged model keeps them
    for (size_t i = 0; i < hosts.size(); ++i) {
        models::DeltaHost* host = hosts[i].second;
        models::OutputDelta* delta = deltas[i].get();
        if (auto* emb = dynamic_cast<models::Embedding*>(host)) {
            if (model.lm && &model.lm->embeddings() == emb) model.lm->untie_lm_head();
            Tensor w = emb->weight();
            if (auto* dora = dynamic_cast<DoraEmbedding*>(delta)) {
                autograd::NoGradGuard no_grad;
                copy_into(w, dora->merged_weight());
            } else {
                copy_merged(w, static_cast<LoraEmbedding*>(delta)->delta_weight());
            }
        } else if (auto* dora = dynamic_cast<DoraDelta*>(delta)) {
            Tensor w = *host->find_parameter("weight");
            autograd::NoGradGuard no_grad;
            copy_into(w, dora->merged_weight());
        } else {
            auto* lora = static_cast<LoraLinear*>(delta);
            Tensor w = *host->find_parameter("weight");
            copy_merged(w, lora->delta_weight());
            if (Tensor db = lora->delta_bias(); db.defined()) {  // lora_bias: b += s · b_B (merge_refusal checked b)
                Tensor b = *host->find_parameter("bias");
                copy_merged(b, db);
            }
        }
    }
}

std::string LoraAttachment::merge_refusal() const {
    // Beside other adapters, plain LoRA deltas add and merge in any order; a DoRA delta reads the host's weight and
    // scales the output before it, so merging it, or another adapter under it, would change the outputs.
    for (auto& [name, host] : hosts) {
        const auto& all = host->deltas();
        if (all.size() > 1 && std::any_of(all.begin(), all.end(), [](const auto& d) { return is_dora_delta(d.get()); }))
            return name + " carries " + std::to_string(all.size()) + " LoRA adapters, one of them DoRA, whose output "
                   "depends on the weight and on the adapters before it; fix: make this adapter the only one active "
                   "(AdapterSet::set_active) before merging";
    }
    if (!settings.lora_bias) return "";
    for (auto& [name, host] : hosts)
        if (!host->find_parameter("bias"))
            return "lora_bias: " + name + " has no bias to fold lora_B's bias into (HF refuses this merge too); "
                   "fix: keep the adapter unmerged";
    return "";
}

void LoraAttachment::copy_merged(Tensor& w, const Tensor& delta) {
    Tensor merged = ops::add(w.detach(), delta.detach());
    autograd::NoGradGuard no_grad;
    copy_into(w, merged);
}

void LoraAttachment::set_sample_mask(const Tensor& mask) {
    for (auto& d : deltas) {
        SSMTUNE_CHECK(!is_dora_delta(d.get()), "per-sample adapters do not work with DoRA (nor in HF PEFT): its norms "
                      "scale the whole output; fix: run the DoRA adapter on its own batch");
        const Tensor p = d->named_parameters().front().second;  // (a copy: the list is a temporary)
        d->set_sample_mask(mask.defined() ? mask.to(p.dtype()).to(p.device()) : Tensor());
    }
}

void LoraAttachment::detach() {
    for (size_t i = 0; i < deltas.size(); ++i) hosts[i].second->detach_delta(deltas[i].get());
    hosts.clear();
    deltas.clear();
    autograd::NoGradGuard no_grad;
    for (auto& [weight, original] : base_originals) copy_into(weight, original);
    base_originals.clear();
    initial.clear();
}

namespace {
class LoraMethod : public Method {
public:
    LoraMethod(ModelView& model, const Config& config) : model_(model) {
        Generator gen(config.json["init_seed"].get<uint64_t>());
        att_ = attach_lora(model_, config.json, gen);
        try {
            SSMTUNE_CHECK(!lora_trains_base_in_place(config.json) || !other_adapters_on_model(), "this LoRA trains base tensors in place (\"bias\" or "
                          "\"modules_to_save\"), and the model carries another LoRA adapter already, whose tensors and "
                          "outputs those would mix with; fix: make it the only adapter on the model");
            if (config.json.contains("modules_to_save")) attach_modules_to_save(config.json.at("modules_to_save"));
            if (config.json.contains("bias")) train_biases(config.json.at("bias").get<std::string>());
            if (config.json.contains("trainable_token_indices"))
                tokens_ = attach_lora_trainable_tokens(model_, config.json.at("trainable_token_indices"), gen);
            std::vector<std::string> module_targets;
            for (auto& host : att_.hosts) module_targets.push_back(host.first);
            params_ = attach_lora_parameters(model_, config.json, module_targets, gen);
        } catch (...) {
            detach();
            throw;
        }
    }
    std::vector<std::pair<std::string, Tensor>> tensors() const override {
        auto out = att_.tensors();
        out.insert(out.end(), saved_.begin(), saved_.end());
        for (const auto& t : tokens_) out.emplace_back(t.module + ".token_adapter.trainable_tokens_delta", t.rows);
        for (const auto& p : params_)
            for (auto& named : p.tensors()) out.push_back(named);
        return out;
    }
    std::string merge_refusal() const override { return att_.merge_refusal(); }
    // "all params" as HF counts them: the LoRA tensors and the modules_to_save copies are new, the biases that
    // "bias" trains are the model's own
    int64_t num_added() const override {
        int64_t n = -in_place_elements_;
        for (auto& [name, t] : tensors()) n += t.numel();
        return n;
    }
    void merge() override {
        att_.merge(model_);
        for (auto& t : tokens_) t.merge();
        for (auto& p : params_) p.merge();
        originals_.clear();  // the trained modules are the merged model's
    }
    void detach() override {
        for (auto& t : tokens_) t.detach();
        tokens_.clear();
        for (auto& p : params_) p.detach();
        params_.clear();
        att_.detach();
        autograd::NoGradGuard no_grad;
        for (size_t i = 0; i < originals_.size(); ++i) copy_into(saved_[i].second, originals_[i]);
        originals_.clear();
    }
    json saved_config() const override { return {{"target_modules", att_.targets}}; }
    void set_sample_mask(const Tensor& mask) override { att_.set_sample_mask(mask); }
    // PiSSA / OLoRA as a plain LoRA of the original base (HF's subtract_mutated_init): W_res + s·B A = W + s·(B A −
    // B0 A0) = W + s·[B, −B0] [A; A0], so rank 2r with A′ = [A; A0], B′ = [B, −B0]; the other tensors (DoRA's
    // magnitude, trained biases, modules_to_save) as they are (HF drops them; they are part of the adapted model).
    std::vector<std::pair<std::string, Tensor>> plain_lora_tensors() const override {
        if (att_.initial.empty()) return {};
        autograd::NoGradGuard no_grad;
        std::vector<std::pair<std::string, Tensor>> out;
        for (auto& entry : tensors()) {  // (no structured binding: clang 14 cannot capture one in the lambda)
            const std::string& name = entry.first;
            const Tensor now = entry.second.detach().to(Device::cpu());
            auto it = std::find_if(att_.initial.begin(), att_.initial.end(), [&](const auto& p) { return p.first == name; });
            if (it == att_.initial.end()) {
                out.emplace_back(name, now);
                continue;
            }
            const Tensor start = it->second.to(Device::cpu());
            // `initial` holds <module>.lora_A.weight, .lora_B.weight, .lora_embedding_A and .lora_embedding_B only
            const bool is_b = name.find(".lora_B.weight") != std::string::npos || name.find(".lora_embedding_B") != std::string::npos;
            out.emplace_back(name, is_b ? ops::concat({now, ops::neg(start)}, 1) : ops::concat({now, start}, 0));
        }
        return out;
    }

private:
    bool other_adapters_on_model() const {  // an OutputDelta on some module that is not one of ours
        size_t n = 0;
        for (auto& [name, m] : model_.module->named_modules())
            if (auto* host = dynamic_cast<models::DeltaHost*>(m)) n += host->deltas().size();
        return n > att_.deltas.size();
    }
    // modules_to_save (HF): every parameter of each module whose name ends with an entry (HF's plain endswith) is
    // trained too, in place, its original kept and put back on detach; the file holds it under its own name, as HF
    // saves its trained copy. HF trains a copy beside the original, so on a tied model the embedding or head would
    // stop being tied: refused (fix: untie). A module that is, or holds, a LoRA target is refused too.
    void attach_modules_to_save(const json& list) {
        if (list.is_null()) return;
        const auto modules = model_.module->named_modules();
        std::string listing;
        for (auto& [name, m] : modules)
            if (!name.empty() && !m->named_parameters().empty()) listing += (listing.empty() ? "" : ", ") + name;
        const models::Module* tied_embedding =
            model_.lm && !model_.lm->reads_frames() && model_.lm->config().tie_word_embeddings ? &model_.lm->embeddings()
                                                                                                 : nullptr;
        for (const json& e : list) {
            const std::string entry = e.get<std::string>();
            bool any = false;
            for (auto& [name, m] : modules) {
                if (name.empty() || !ends_with(name, entry)) continue;
                any = true;
                for (auto& [host_name, host] : att_.hosts)
                    SSMTUNE_CHECK(host_name != name && host_name.rfind(name + ".", 0) != 0, "modules_to_save entry \"",
                                  entry, "\" matches ", name, ", which ", host_name == name ? "is" : "holds",
                                  " the LoRA target ", host_name, "; fix: keep the two lists apart");
                SSMTUNE_CHECK(m != tied_embedding, "modules_to_save entry \"", entry, "\" matches ", name, ", which is tied "
                              "to the LM head: HF trains a copy, after which the two differ; fix: a model with "
                              "\"tie_word_embeddings\": false");
                for (auto& [pname, t] : m->named_parameters()) {
                    const std::string full = name + "." + pname;
                    if (std::any_of(saved_.begin(), saved_.end(), [&](const auto& p) { return p.first == full; })) continue;
                    originals_.push_back(t.detach().clone());
                    saved_.emplace_back(full, trainable(t));
                }
            }
            SSMTUNE_CHECK(any, "modules_to_save entry \"", entry, "\" matches no module of this ", model_.kind(),
                          " model (a name must end with it); fix: choose among: ", listing);
        }
    }

    // HF's "bias": "all" trains every parameter whose name contains "bias" (HF's substring test), "lora_only" the
    // bias of each LoRA target; in place, originals put back on detach, like modules_to_save (whose biases it
    // leaves to that list). File names as HF's state dict has them: a LoRA target's own bias sits under its
    // wrapped base layer, "<module>.base_layer.bias"; any other keeps its name.
    void train_biases(const std::string& mode) {
        if (mode == "none") return;
        std::vector<std::pair<std::string, Tensor>> chosen;
        if (mode == "all") {
            for (auto& [name, t] : model_.module->named_parameters())
                if (name.find("bias") != std::string::npos) chosen.emplace_back(name, t);
        } else {
            for (auto& [name, host] : att_.hosts)
                if (Tensor* b = host->find_parameter("bias")) chosen.emplace_back(name + ".bias", *b);
        }
        auto own = att_.tensors();  // lora_B's own bias (lora_bias) is in the model's parameters by now
        own.insert(own.end(), saved_.begin(), saved_.end());
        for (auto& entry : chosen) {  // (no structured binding: clang 14 cannot capture one in the lambda)
            const std::string& name = entry.first;
            const Tensor& t = entry.second;
            const bool trained = std::any_of(own.begin(), own.end(), [&](const auto& p) {
                return p.second.impl_ptr() == t.impl_ptr();
            });
            if (trained) continue;  // lora_B's bias, or a modules_to_save module's bias
            std::string file_name = name;
            for (auto& [host_name, host] : att_.hosts)
                if (name == host_name + ".bias") file_name = host_name + ".base_layer.bias";
            originals_.push_back(t.detach().clone());
            saved_.emplace_back(file_name, trainable(t));
            in_place_elements_ += t.numel();
        }
    }

    ModelView model_;
    LoraAttachment att_;
    std::vector<std::pair<std::string, Tensor>> saved_;  // modules_to_save parameters and "bias" biases, in place
    std::vector<TrainableTokens> tokens_;                 // trainable_token_indices
    std::vector<ParamLora> params_;                       // target_parameters
    std::vector<Tensor> originals_;                       // their values before training
    int64_t in_place_elements_ = 0;                       // of which the biases (not new tensors: see num_added)
};
}  // namespace

std::unique_ptr<Method> make_lora(ModelView& model, const Config& config) {
    return std::make_unique<LoraMethod>(model, config);
}

}  // namespace ssmtune::peft
