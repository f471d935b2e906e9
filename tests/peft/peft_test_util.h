// Shared battery for every PEFT method on every model it supports (issue: "for every method on every model"):
// zero-init leaves outputs unchanged, the HF report format, float64 gradcheck of the adapter tensors, base
// tensors bit-identical after AdamW steps while every adapter tensor moves, save → load → identical outputs,
// merge → same outputs (or a refusal naming the reason), detach → the base model's outputs again.
#pragma once

#include <doctest/doctest.h>

#include <functional>
#include <memory>
#include <regex>
#include <string>

#include "autograd/node.h"
#include "autograd/optim.h"
#include "engine/tensor_copy.h"
#include "models/checkpoint.h"
#include "ops/ops.h"
#include "peft/peft.h"
#include "tests/test_util.h"
#include "tests/models/tiny_models.h"

namespace ssmtune::peft_test {

using namespace ssmtune;
using models::AnyModel;

using testing::tiny_lm_config;

using testing::tiny_s4d_config;

// Two LoRA configs for the tests of several adapters on one model (together, per sample, combined, the CLI): they
// share in_proj and differ in r, lora_alpha, rsLoRA, a rank pattern and their other targets.
inline const nlohmann::json kLoraA = {{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 3},
                                      {"target_modules", {"embeddings", "in_proj", "x_proj", "out_proj"}}};
inline const nlohmann::json kLoraB = {{"peft_type", "LORA"}, {"r", 3}, {"lora_alpha", 5}, {"use_rslora", true},
                                      {"rank_pattern", {{"dt_proj", 1}}}, {"target_modules", {"in_proj", "dt_proj"}}};

// A tiny model in float64 and evaluation mode, with its batch.
struct Subject {
    std::string kind;  // mamba | longhorn | s4d
    AnyModel any;
    Tensor ids, x, labels;
    models::Module& module() { return any.module(); }
    Tensor output() { return any.lm ? any.lm->forward(ids) : any.s4d->forward(x); }
    Tensor loss() { return any.lm ? any.lm->loss(ids) : any.s4d->loss(x, labels); }
};

// `tied` false gives a language model its own lm_head (for modules_to_save lm_head); S4D has no head to tie.
inline Subject make_subject(const std::string& kind, uint64_t seed = 3, bool tied = true) {
    Subject s;
    s.kind = kind;
    s.any.model_type = kind;
    if (kind == "s4d") {
        s.any.s4d = std::make_shared<models::S4DClassifier>(tiny_s4d_config(), seed);
        s.x = Tensor::randn({2, 5, 3}, seed + 1, DType::F64);
        s.labels = Tensor::from_vector<int64_t>({1, 3}, {2});
    } else {
        models::LMConfig c = tiny_lm_config(kind);
        c.tie_word_embeddings = tied;
        s.any.lm = std::make_shared<models::LanguageModel>(c, seed);
        s.ids = Tensor::from_vector<int64_t>({1, 4, 2, 9, 0, 3, 7, 5, 5, 10, 2, 1, 8, 6}, {2, 7});
    }
    s.module().to(DType::F64);
    s.module().eval();
    return s;
}

// LM logits from the parallel forward equal the token-by-token recurrent mode started from initial_states().
inline void check_lm_recurrent(Subject& s, double atol) {
    autograd::NoGradGuard no_grad;
    models::LanguageModel& lm = *s.any.lm;
    const Tensor logits = lm.forward(s.ids);  // [B, L, V]
    auto states = lm.initial_states(s.ids.size(0));
    for (int64_t t = 0; t < s.ids.size(1); ++t) {
        const Tensor step_logits = lm.step(s.ids.select(1, t).contiguous(), states);
        testing::expect_close(step_logits, logits.select(1, t), 0.0, atol, "step " + std::to_string(t));
    }
}

// Adds seeded noise (0.3 · N(0, 1)) to every adapter tensor, biases and in-place base tensors included, so that
// zero-initialised tensors act.
inline void randomize(peft::Adapter& a, uint64_t seed) {
    autograd::NoGradGuard no_grad;
    for (auto& [name, t] : a.named_parameters())
        copy_into(t, ops::add(t.detach(), ops::mul_scalar(Tensor::randn(t.shape(), seed++, t.dtype()), 0.3)));
}

// The message of the Error that applying this config to `model` throws ("no error" when none is thrown).
inline std::string apply_error(models::Module& model, const char* config_text) {
    try {
        peft::apply(model, peft::Config::parse(config_text));
    } catch (const Error& e) {
        return e.what();
    }
    return "no error";
}

inline bool bit_equal(const Tensor& a, const Tensor& b) {
    if (a.shape() != b.shape()) return false;
    auto va = a.to_vector<double>(), vb = b.to_vector<double>();
    return va == vb;
}

struct BatteryOptions {
    bool zero_init = true;    // a fresh adapter leaves the outputs unchanged
    bool mergeable = false;
    bool in_place = false;    // FULL / BITFIT / LoRA's "bias": trains base tensors
    // Config overrides that give a non-zero start, for the gradcheck (e.g. {"init": "random"}).
    nlohmann::json random_init = nlohmann::json::object();
    double merge_atol = 1e-10;
    // False where the method's backward deliberately differs from the derivative (DoRA holds its weight norm
    // constant); such a method has its own gradient test.
    bool gradcheck = true;
};

// Runs every check of the battery for one method config on one model kind.
inline void run_battery(const std::string& kind, const nlohmann::json& config_json, const BatteryOptions& opt) {
    const std::string label = kind + " " + config_json.dump();
    INFO(label);
    const peft::Config config = peft::Config::from_json(config_json);

    // 1. zero init leaves outputs unchanged; report format.
    Subject s = make_subject(kind);
    const Tensor out0 = s.output().detach();
    TensorMap base_before = s.module().state_dict();
    for (auto& [k, v] : base_before) v = v.detach().clone();
    peft::Adapter adapter = peft::apply(s.module(), config);
    TensorMap base_applied = s.module().state_dict();  // as apply left it (PiSSA / OLoRA rewrite base weights)
    for (auto& [k, v] : base_applied) v = v.detach().clone();
    if (opt.zero_init) CHECK(bit_equal(s.output(), out0));
    CHECK(std::regex_match(adapter.trainable_report(),
                           std::regex(R"(trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: \d+\.\d{4})")));
    CHECK(adapter.num_trainable() > 0);
    for (auto& [name, t] : adapter.named_parameters()) CHECK(t.requires_grad());

    // 2. training steps: base bit-identical to how apply left it (except in-place methods' own tensors), every
    //    adapter tensor moves.
    std::vector<Tensor> start;
    for (auto& t : adapter.parameters()) start.push_back(t.detach().clone());
    autograd::AdamW opt_w(adapter.parameters(), autograd::AdamW::Options().lr(1e-2).weight_decay(0.0));
    for (int step = 0; step < 3; ++step) {
        Tensor loss = s.loss();
        loss.backward();
        opt_w.step();
        opt_w.zero_grad();
    }
    auto named = adapter.named_parameters();
    for (size_t i = 0; i < named.size(); ++i) {
        INFO("adapter tensor " << named[i].first);
        CHECK_FALSE(bit_equal(named[i].second, start[i]));
    }
    for (auto& entry : s.module().state_dict()) {
        const std::string& name = entry.first;  // not a structured binding: INFO captures it
        const Tensor& t = entry.second;
        if (!base_before.count(name)) continue;  // the method's own tensors
        bool own = false;
        for (auto& [n, a] : named) {  // (LoRA's "bias" files a target's bias as <module>.base_layer.bias)
            const size_t at = n.find(".base_layer.");
            const std::string base_name = at == std::string::npos ? n : n.substr(0, at) + n.substr(at + 11);
            own = own || (opt.in_place && base_name == name);
        }
        if (own) continue;
        INFO("base tensor " << name);
        CHECK(bit_equal(t, base_applied[name]));
        CHECK_FALSE(t.grad().defined());  // frozen: no weight gradient computed at all
    }
    const Tensor adapted = s.output().detach();

    // 3. save -> load into a fresh copy of the base -> identical outputs.
    const auto dir = testing::scratch_dir("peft_battery_" + kind + "_" + config.peft_type());
    adapter.save(dir.string());
    {
        Subject fresh = make_subject(kind);
        if (opt.in_place) fresh.module().load_state_dict(base_before);
        peft::Adapter loaded = peft::load(fresh.module(), dir.string());
        CHECK(bit_equal(fresh.output(), adapted));
        CHECK(loaded.num_trainable() == adapter.num_trainable());
    }

    // 4. merge -> same outputs as the adapted model, or a refusal that says why.
    if (opt.mergeable) {
        CHECK(adapter.merge_refusal().empty());
        adapter.merge();
        testing::expect_close(s.output(), adapted, 0.0, opt.merge_atol, "merged output");
        CHECK_FALSE(adapter.attached());
    } else {
        CHECK_FALSE(adapter.merge_refusal().empty());
        CHECK_THROWS_WITH_AS(adapter.merge(), doctest::Contains("cannot be merged"), Error);
        // 5. detach -> the base model again.
        adapter.detach();
        if (!opt.in_place) CHECK(bit_equal(s.output(), out0));
    }
    for (auto& [name, t] : s.module().named_parameters())
        if (base_before.count(name)) CHECK(t.requires_grad());  // restored as before apply

    // 6. float64 gradcheck of the loss w.r.t. every adapter tensor, from a non-zero start.
    if (!opt.gradcheck) return;
    Subject g = make_subject(kind);
    peft::Adapter ga = peft::apply(g.module(), peft::Config::from_json(config_json).with(opt.random_init));
    autograd::GradcheckOptions gopt;
    gopt.max_checked_per_input = 12;
    gopt.atol = 1e-6;
    gopt.rtol = 1e-5;
    testing::expect_gradcheck([&](const std::vector<Tensor>&) { return g.loss(); }, ga.parameters(), gopt);
}

}  // namespace ssmtune::peft_test
