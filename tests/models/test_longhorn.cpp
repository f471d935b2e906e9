// Longhorn LM: golden check of the fused model (longhorn_scan) against an independent float64 composite built
// from primitive ops with an explicit loop over time (logits, loss and every parameter gradient, also with the
// scan hooks h0, h′, y′ as trainable tensors), the parameter-count formula and names, save → load → identical
// logits.
#include "test_util.h"
#include "tests/models/tiny_models.h"

#include "models/checkpoint.h"
#include "models/longhorn_mixer.h"

using namespace ssmtune;
using namespace ssmtune::testing;
using namespace ssmtune::models;

namespace {

LMConfig tiny_config() { return testing::tiny_lm_config("longhorn"); }


// Adds seeded noise of scale `scale` to every parameter of an F64 model (in place, no graph), so that no
// parameter sits at a special init value (D = 1, zero dt bias, unit norm weights).
void perturb(Module& model, uint64_t seed, double scale) {
    uint64_t k = 0;
    for (auto& [name, p] : model.named_parameters()) {
        Tensor noise = Tensor::randn(p.shape(), seed + 97 * ++k, DType::F64);
        double* d = p.data<double>();
        const double* n = noise.data<double>();
        for (int64_t i = 0; i < p.numel(); ++i) d[i] += scale * n[i];
    }
}

// The scan hooks of one mixer as plain tensors (undefined = off).
struct Hooks {
    Tensor h0, state_offset, output_offset;
};

// The Longhorn mixer written the way a student would: primitive ops, one time step at a time.
//   u = SiLU(conv(x));  [dt; k; q] = x_proj(u);  β = σ(dt_proj(dt));  ε = β / (1 + β Σ k²);
//   h = (1 − ε k²) h + ε u k;  y = Σ_n q (h + h′) + D u + y′;  out = out_proj(y · SiLU(z)).
Tensor composite_mixer(LonghornMixer& m, const Tensor& hidden, const Hooks& hooks) {
    const int64_t B = hidden.size(0), L = hidden.size(1);
    const int64_t E = m.D().size(0), R = m.dt_proj->in_features(), N = (m.x_proj->out_features() - R) / 2;
    const int64_t K = m.conv1d->kernel();
    Tensor xz = ops::linear(hidden, m.in_proj->weight());   // [B, L, 2E]
    Tensor x = xz.narrow(2, 0, E), z = xz.narrow(2, E, E);  // [B, L, E]
    Tensor w = m.conv1d->weight().reshape({E, K});
    Tensor h = hooks.h0.defined() ? ops::add(Tensor::zeros({B, E, N}, hidden.dtype()), hooks.h0)
                                  : Tensor::zeros({B, E, N}, hidden.dtype());
    std::vector<Tensor> outputs;
    for (int64_t t = 0; t < L; ++t) {
        Tensor xc = *m.conv1d->bias();  // [E]
        for (int64_t k = 0; k < K; ++k) {
            const int64_t src = t - (K - 1) + k;
            if (src < 0) continue;
            xc = ops::add(xc, ops::mul(x.select(1, src), w.narrow(1, k, 1).squeeze(1)));
        }
        Tensor u = ops::silu(xc);                         // [B, E]
        Tensor dbl = ops::linear(u, m.x_proj->weight());  // [B, R + 2N]
        Tensor beta = ops::sigmoid(ops::linear(dbl.narrow(1, 0, R), m.dt_proj->weight(), *m.dt_proj->bias()));
        Tensor kt = dbl.narrow(1, R, N), qt = dbl.narrow(1, R + N, N);  // [B, N]
        Tensor k2 = ops::mul(kt, kt);
        Tensor eps = ops::div(beta, ops::add_scalar(ops::mul(beta, ops::sum(k2, {1}, true)), 1.0));  // [B, E]
        Tensor forget = ops::sub(Tensor::ones({1}, hidden.dtype()), ops::mul(eps.unsqueeze(2), k2.unsqueeze(1)));
        h = ops::add(ops::mul(forget, h), ops::mul(ops::mul(eps, u).unsqueeze(2), kt.unsqueeze(1)));  // [B, E, N]
        Tensor read = hooks.state_offset.defined() ? ops::add(h, hooks.state_offset) : h;
        Tensor y = ops::add(ops::sum(ops::mul(read, qt.unsqueeze(1)), {2}), ops::mul(m.D(), u));  // [B, E]
        if (hooks.output_offset.defined()) y = ops::add(y, hooks.output_offset);
        y = ops::mul(y, ops::silu(z.select(1, t)));
        outputs.push_back(ops::linear(y, m.out_proj->weight()).unsqueeze(1));
    }
    return ops::concat(outputs, 1);  // [B, L, D]
}

Tensor composite_logits(LanguageModel& model, const Tensor& ids, const std::vector<Hooks>& hooks) {
    Tensor h = ops::embedding(model.embeddings().weight(), ids);
    for (int64_t i = 0; i < model.num_layers(); ++i) {
        Tensor normed = ops::rmsnorm(h, *model.find_parameter("backbone.layers." + std::to_string(i) + ".norm.weight"),
                                     model.config().layer_norm_epsilon);
        h = ops::add(h, composite_mixer(static_cast<LonghornMixer&>(model.mixer(i)), normed, hooks[size_t(i)]));
    }
    h = ops::rmsnorm(h, *model.find_parameter("backbone.norm_f.weight"), model.config().layer_norm_epsilon);
    return ops::linear(h, model.lm_head_weight());
}

// Runs the fused model and the composite on the same weights; compares logits, loss and the gradient of every
// parameter and every hook tensor. Returns the worst relative gradient difference (for the report).
double compare_with_composite(LanguageModel& model, const std::vector<Hooks>& hooks) {
    std::vector<Tensor> hook_tensors;
    for (const Hooks& h : hooks)
        for (const Tensor& t : {h.h0, h.state_offset, h.output_offset})
            if (t.defined()) hook_tensors.push_back(t);
    Tensor ids = tiny_ids();
    Tensor logits = model.forward(ids);
    Tensor loss = LanguageModel::next_token_loss(logits, ids);
    loss.backward();
    std::map<std::string, Tensor> fused;
    for (auto& [name, p] : model.named_parameters()) {
        fused[name] = p.grad();
        p.zero_grad();
    }
    std::vector<Tensor> fused_hook_grads;
    for (Tensor& t : hook_tensors) {
        fused_hook_grads.push_back(t.grad());
        t.zero_grad();
    }

    Tensor ref_logits = composite_logits(model, ids, hooks);
    Tensor ref_loss = LanguageModel::next_token_loss(ref_logits, ids);
    ref_loss.backward();
    expect_close(logits, ref_logits, 1e-10, 1e-12, "logits");
    expect_close(loss, ref_loss, 1e-10, 1e-12, "loss");
    double worst = 0;
    auto check_grad = [&](const Tensor& got, const Tensor& ref, const std::string& name) {
        REQUIRE_MESSAGE(got.defined(), name);
        REQUIRE_MESSAGE(ref.defined(), name);
        const CloseReport r = compare(got, ref, 1e-9, 1e-12);
        INFO(name << ": " << r.message);
        CHECK(r.ok);
        double max_ref = 0;
        for (double v : ref.to_vector<double>()) max_ref = std::max(max_ref, std::fabs(v));
        CHECK_MESSAGE(max_ref > 0, name << " has an all-zero gradient: the check would be vacuous");
        worst = std::max(worst, r.max_abs / max_ref);
    };
    for (auto& [name, p] : model.named_parameters()) check_grad(fused[name], p.grad(), name);
    for (size_t i = 0; i < hook_tensors.size(); ++i)
        check_grad(fused_hook_grads[i], hook_tensors[i].grad(), "hook " + std::to_string(i));
    return worst;
}

}  // namespace

TEST_CASE("longhorn golden: fused model equals the float64 composite in logits loss and every gradient") {
    LanguageModel model(tiny_config(), 7);
    model.to(DType::F64);
    perturb(model, 3, 0.05);
    const double worst = compare_with_composite(model, std::vector<Hooks>(2));
    MESSAGE("longhorn golden: worst gradient difference / max |gradient| = " << worst);
}

TEST_CASE("longhorn golden with scan hooks h0, h' and y' as trainable tensors") {
    LanguageModel model(tiny_config(), 8);
    model.to(DType::F64);
    perturb(model, 5, 0.05);
    const int64_t E = tiny_config().intermediate_size, N = tiny_config().state_size;
    std::vector<Hooks> hooks;
    for (int64_t i = 0; i < model.num_layers(); ++i) {
        Hooks h;
        h.h0 = rand_input({E, N}, 100 + uint64_t(i)) * 0.5;
        h.state_offset = rand_input({E, N}, 200 + uint64_t(i)) * 0.3;
        h.output_offset = rand_input({E}, 300 + uint64_t(i)) * 0.3;
        for (Tensor* t : {&h.h0, &h.state_offset, &h.output_offset}) *t = t->detach().set_requires_grad(true);
        Mixer& m = model.mixer(i);
        m.hook_initial_state = h.h0;
        m.hook_state_offset = h.state_offset;
        m.hook_output_offset = h.output_offset;
        hooks.push_back(h);
    }
    const double worst = compare_with_composite(model, hooks);
    MESSAGE("longhorn golden with hooks: worst gradient difference / max |gradient| = " << worst);
}

TEST_CASE("longhorn golden: parameter count formula, names, init and save then load") {
    const LMConfig c = tiny_config();
    LanguageModel model(c, 1);
    const int64_t D = c.hidden_size, E = c.intermediate_size, N = c.state_size, R = c.time_step_rank,
                  K = c.conv_kernel, V = c.vocab_size;
    // in_proj 2E·D, conv1d E·K + E, x_proj (R+2N)·E, dt_proj E·R + E, D E, out_proj D·E, norm D (no A_log)
    const int64_t per_layer = 2 * E * D + (E * K + E) + (R + 2 * N) * E + (E * R + E) + E + D * E + D;
    CHECK(model.num_parameters() == V * D + c.num_hidden_layers * per_layer + D);  // tied head, + norm_f
    CHECK(model.num_parameters() == int64_t(c.num_parameters()));
    auto sd = model.state_dict();
    for (const char* name : {"backbone.embeddings.weight", "backbone.layers.0.norm.weight",
                             "backbone.layers.1.mixer.in_proj.weight", "backbone.layers.1.mixer.conv1d.weight",
                             "backbone.layers.1.mixer.conv1d.bias", "backbone.layers.0.mixer.x_proj.weight",
                             "backbone.layers.0.mixer.dt_proj.weight", "backbone.layers.0.mixer.dt_proj.bias",
                             "backbone.layers.0.mixer.D", "backbone.layers.0.mixer.out_proj.weight",
                             "backbone.norm_f.weight"})
        CHECK_MESSAGE(sd.count(name) == 1, name);
    CHECK(sd.count("backbone.layers.0.mixer.A_log") == 0);
    CHECK(sd.count("lm_head.weight") == 0);
    CHECK(sd.at("backbone.layers.0.mixer.x_proj.weight").shape() == Shape{R + 2 * N, E});
    for (double b : sd.at("backbone.layers.1.mixer.dt_proj.bias").to_vector<double>()) CHECK(b == 0.0);  // β ≈ ½
    for (double d : sd.at("backbone.layers.1.mixer.D").to_vector<double>()) CHECK(d == 1.0);

    AnyModel any{"longhorn", std::make_shared<LanguageModel>(c, 5), nullptr};
    const auto dir = scratch_dir("longhorn_roundtrip");
    save_model(dir.string(), any);
    CHECK(read_json_file((dir / "config.json").string())["model_type"] == "longhorn");
    AnyModel loaded = load_model(dir.string());
    REQUIRE(loaded.lm);
    CHECK(loaded.lm->config().model_type == "longhorn");
    Tensor ids = tiny_ids();
    CHECK(loaded.lm->forward(ids).to_vector<float>() == any.lm->forward(ids).to_vector<float>());
    for (auto& named : any.lm->named_parameters()) {
        const std::string& name = named.first;  // not a structured binding: CHECK_MESSAGE captures it
        CHECK_MESSAGE(loaded.lm->find_parameter(name)->to_vector<float>() == named.second.to_vector<float>(), name);
    }
}

TEST_CASE("longhorn loads its own code's layout: dt_head names, and a mamba_ssm-style config without model_type") {
    const LMConfig c = tiny_config();
    AnyModel any{"longhorn", std::make_shared<LanguageModel>(c, 7), nullptr};
    const auto dir = scratch_dir("longhorn_own_layout");
    save_model(dir.string(), any);
    TensorMap w = load_safetensors((dir / "model.safetensors").string()), renamed;
    for (auto& [name, t] : w) {
        std::string n = name;
        const size_t at = n.find(".mixer.dt_proj.");
        if (at != std::string::npos) n.replace(at, 15, ".mixer.dt_head.");
        if (n == "backbone.embeddings.weight") n = "backbone.embedding.weight";
        renamed[n] = t;
    }
    REQUIRE(renamed.count("backbone.layers.0.mixer.dt_head.bias") == 1);
    save_safetensors((dir / "model.safetensors").string(), renamed);
    Tensor ids = tiny_ids();
    const std::vector<float> expected = any.lm->forward(ids).to_vector<float>();
    // with model_type "longhorn" (HF-style config) ...
    AnyModel loaded = load_model(dir.string());
    CHECK(loaded.lm->forward(ids).to_vector<float>() == expected);
    // ... and with mamba_ssm's config fields and no model_type: dt_head (no A_log) says Longhorn
    const nlohmann::json original = {{"d_model", c.hidden_size}, {"n_layer", c.num_hidden_layers},
                                     {"vocab_size", c.vocab_size}, {"pad_vocab_size_multiple", 1},
                                     {"ssm_cfg", {{"d_state", c.state_size}, {"d_conv", c.conv_kernel},
                                                  {"expand", c.intermediate_size / c.hidden_size},
                                                  {"dt_rank", c.time_step_rank}}}};
    REQUIRE(c.intermediate_size % c.hidden_size == 0);
    write_json_file((dir / "config.json").string(), original);
    AnyModel typed = load_model(dir.string());
    CHECK(typed.model_type == "longhorn");
    CHECK(typed.lm->forward(ids).to_vector<float>() == expected);
}
