// Mamba LM: golden check against an independent float64 composite implementation (primitive ops, an explicit
// loop over time), recurrent == parallel, save → load, parameter count formula, HF names, and a short training
// run on selective copying whose loss must fall.
#include <fstream>

#include "test_util.h"
#include "tests/models/tiny_models.h"

#include "autograd/optim.h"
#include "models/checkpoint.h"
#include "models/mamba_mixer.h"

using namespace ssmtune;
using namespace ssmtune::testing;
using namespace ssmtune::models;

namespace {

LMConfig tiny_config(const std::string& type = "mamba") { return testing::tiny_lm_config(type); }


// The Mamba mixer written the way a student would: primitive ops, one time step at a time.
Tensor composite_mixer(MambaMixer& m, const Tensor& hidden) {
    const int64_t B = hidden.size(0), L = hidden.size(1);
    const int64_t E = m.D().size(0), N = m.A_log().size(1), R = m.dt_proj->in_features();
    const int64_t K = m.conv1d->kernel();
    Tensor xz = ops::linear(hidden, m.in_proj->weight());
    Tensor x = xz.narrow(2, 0, E), z = xz.narrow(2, E, E);  // [B, L, E]
    Tensor w = m.conv1d->weight().reshape({E, K});
    Tensor A = ops::neg(ops::exp(m.A_log()));
    Tensor h = Tensor::zeros({B, E, N}, hidden.dtype());
    std::vector<Tensor> outputs;
    for (int64_t t = 0; t < L; ++t) {
        Tensor xc = *m.conv1d->bias();  // [E]
        for (int64_t k = 0; k < K; ++k) {
            const int64_t src = t - (K - 1) + k;
            if (src < 0) continue;
            xc = ops::add(xc, ops::mul(x.select(1, src), w.narrow(1, k, 1).squeeze(1)));
        }
        Tensor u = ops::silu(xc);                                   // [B, E]
        Tensor dbl = ops::linear(u, m.x_proj->weight());            // [B, R + 2N]
        Tensor delta = ops::softplus(ops::linear(dbl.narrow(1, 0, R), m.dt_proj->weight(), *m.dt_proj->bias()));
        Tensor Bt = dbl.narrow(1, R, N), Ct = dbl.narrow(1, R + N, N);
        h = ops::add(ops::mul(ops::exp(ops::mul(delta.unsqueeze(2), A)), h),
                     ops::mul(ops::mul(delta, u).unsqueeze(2), Bt.unsqueeze(1)));
        Tensor y = ops::add(ops::sum(ops::mul(h, Ct.unsqueeze(1)), {2}), ops::mul(m.D(), u));
        y = ops::mul(y, ops::silu(z.select(1, t)));
        outputs.push_back(ops::linear(y, m.out_proj->weight()).unsqueeze(1));
    }
    return ops::concat(outputs, 1);
}

Tensor composite_logits(LanguageModel& model, const Tensor& ids) {
    Tensor h = ops::embedding(model.embeddings().weight(), ids);
    for (int64_t i = 0; i < model.num_layers(); ++i) {
        Tensor normed = ops::rmsnorm(h, *model.find_parameter("backbone.layers." + std::to_string(i) + ".norm.weight"),
                                     model.config().layer_norm_epsilon);
        h = ops::add(h, composite_mixer(static_cast<MambaMixer&>(model.mixer(i)), normed));
    }
    h = ops::rmsnorm(h, *model.find_parameter("backbone.norm_f.weight"), model.config().layer_norm_epsilon);
    return ops::linear(h, model.lm_head_weight());
}

}  // namespace

TEST_CASE("mamba golden: fused model equals the float64 composite in logits loss and every gradient") {
    LanguageModel model(tiny_config(), 7);
    model.to(DType::F64);
    Tensor ids = tiny_ids();
    Tensor logits = model.forward(ids);
    Tensor loss = LanguageModel::next_token_loss(logits, ids);
    loss.backward();
    std::map<std::string, Tensor> fused_grads;
    for (auto& [name, p] : model.named_parameters()) fused_grads[name] = p.grad();
    for (auto& [name, p] : model.named_parameters()) p.zero_grad();

    Tensor ref_logits = composite_logits(model, ids);
    Tensor ref_loss = LanguageModel::next_token_loss(ref_logits, ids);
    ref_loss.backward();
    expect_close(logits, ref_logits, 1e-10, 1e-12, "logits");
    expect_close(loss, ref_loss, 1e-10, 1e-12, "loss");
    for (auto& named : model.named_parameters()) {
        const std::string& name = named.first;  // not a structured binding: REQUIRE_MESSAGE captures it
        REQUIRE_MESSAGE(fused_grads[name].defined(), name);
        expect_close(fused_grads[name], named.second.grad(), 1e-8, 1e-11, name);
    }
}

TEST_CASE("mamba uses HF parameter names and the parameter count formula") {
    LMConfig c = tiny_config();
    LanguageModel model(c, 1);
    const int64_t D = c.hidden_size, E = c.intermediate_size, N = c.state_size, R = c.time_step_rank,
                  K = c.conv_kernel, V = c.vocab_size;
    const int64_t per_layer = 2 * E * D + E * K + E + (R + 2 * N) * E + E * R + E + E * N + E + D * E + D;
    CHECK(model.num_parameters() == V * D + c.num_hidden_layers * per_layer + D);
    auto sd = model.state_dict();
    for (const char* name : {"backbone.embeddings.weight", "backbone.layers.0.norm.weight",
                             "backbone.layers.1.mixer.in_proj.weight", "backbone.layers.1.mixer.conv1d.weight",
                             "backbone.layers.1.mixer.conv1d.bias", "backbone.layers.0.mixer.x_proj.weight",
                             "backbone.layers.0.mixer.dt_proj.weight", "backbone.layers.0.mixer.dt_proj.bias",
                             "backbone.layers.0.mixer.A_log", "backbone.layers.0.mixer.D",
                             "backbone.layers.0.mixer.out_proj.weight", "backbone.norm_f.weight"})
        CHECK_MESSAGE(sd.count(name) == 1, name);
    CHECK(sd.at("backbone.layers.0.mixer.conv1d.weight").shape() == Shape{E, 1, K});
    CHECK(sd.count("lm_head.weight") == 0);  // tied
    // init: A_log = log(1..N), D = 1, softplus(dt bias) within [dt_min, dt_max]
    CHECK(sd.at("backbone.layers.0.mixer.A_log").at({3, 2}) == doctest::Approx(std::log(3.0)));
    CHECK(sd.at("backbone.layers.0.mixer.D").at({5}) == 1.0);
    for (double b : sd.at("backbone.layers.0.mixer.dt_proj.bias").to_vector<double>()) {
        const double dt = std::log1p(std::exp(b));
        CHECK(dt >= 0.9e-3);
        CHECK(dt <= 0.11);
    }
}

TEST_CASE("mamba recurrent step mode equals the parallel forward") {
    LanguageModel model(tiny_config(), 3);
    model.eval();
    Tensor ids = tiny_ids();
    Tensor logits = model.forward(ids);  // [B, L, V]
    auto states = model.initial_states(2);
    for (int64_t t = 0; t < ids.size(1); ++t) {
        Tensor step_logits = model.step(ids.select(1, t).contiguous(), states);
        expect_close(step_logits, logits.select(1, t), 1e-4, 1e-5, "step " + std::to_string(t));
    }
}

TEST_CASE("mamba save then load gives identical logits and strict loading lists problems") {
    LanguageModel model(tiny_config(), 5);
    AnyModel any{"mamba", std::make_shared<LanguageModel>(tiny_config(), 5), nullptr};
    const auto dir = scratch_dir("mamba_roundtrip");
    save_model(dir.string(), any);
    AnyModel loaded = load_model(dir.string());
    Tensor ids = tiny_ids();
    CHECK(loaded.lm->forward(ids).to_vector<float>() == any.lm->forward(ids).to_vector<float>());
    // a weight with the wrong shape and a config that disagrees are named
    TensorMap w = load_safetensors((dir / "model.safetensors").string());
    w["backbone.layers.0.mixer.A_log"] = Tensor::zeros({16, 5});
    w.erase("backbone.layers.1.mixer.D");
    w["extra.weight"] = Tensor::zeros({1});
    save_safetensors((dir / "model.safetensors").string(), w);
    try {
        load_model(dir.string());
        FAIL("expected an error");
    } catch (const Error& e) {
        const std::string msg = e.what();
        CHECK(msg.find("state_size") != std::string::npos);
    }
    w["backbone.layers.0.mixer.A_log"] = Tensor::zeros({16, 4});
    save_safetensors((dir / "model.safetensors").string(), w);
    try {
        load_model(dir.string());
        FAIL("expected an error");
    } catch (const Error& e) {
        const std::string msg = e.what();
        CHECK(msg.find("backbone.layers.1.mixer.D") != std::string::npos);
        CHECK(msg.find("extra.weight") != std::string::npos);
    }
}

TEST_CASE("mamba accepts original state-spaces names and an untied head") {
    LMConfig c = tiny_config();
    c.tie_word_embeddings = false;
    AnyModel any{"mamba", std::make_shared<LanguageModel>(c, 9), nullptr};
    CHECK(any.lm->state_dict().count("lm_head.weight") == 1);
    const auto dir = scratch_dir("mamba_original_names");
    save_model(dir.string(), any);
    TensorMap w = load_safetensors((dir / "model.safetensors").string());
    w["backbone.embedding.weight"] = w.at("backbone.embeddings.weight");
    w.erase("backbone.embeddings.weight");
    save_safetensors((dir / "model.safetensors").string(), w);
    AnyModel loaded = load_model(dir.string());
    Tensor ids = tiny_ids();
    CHECK(loaded.lm->forward(ids).to_vector<float>() == any.lm->forward(ids).to_vector<float>());
}

TEST_CASE("mamba loads mamba_ssm's own checkpoint layout: config without model_type, padded vocab, lm_head copy") {
    // state-spaces/mamba-130m: {d_model, n_layer, vocab_size (unpadded), ssm_cfg, pad_vocab_size_multiple, ...},
    // backbone.embedding.weight and an lm_head.weight equal to it.
    LMConfig c = tiny_config();
    c.vocab_size = 16;  // what 11 pads to with a multiple of 8
    AnyModel any{"mamba", std::make_shared<LanguageModel>(c, 13), nullptr};
    const auto dir = scratch_dir("mamba_ssm_layout");
    save_model(dir.string(), any);
    TensorMap w = load_safetensors((dir / "model.safetensors").string());
    w["backbone.embedding.weight"] = w.at("backbone.embeddings.weight");
    w["lm_head.weight"] = w.at("backbone.embeddings.weight");
    w.erase("backbone.embeddings.weight");
    save_safetensors((dir / "model.safetensors").string(), w);
    const nlohmann::json original = {{"d_model", c.hidden_size}, {"n_layer", c.num_hidden_layers},
                                     {"vocab_size", 11}, {"pad_vocab_size_multiple", 8}, {"rms_norm", true},
                                     {"residual_in_fp32", true}, {"fused_add_norm", true},
                                     {"ssm_cfg", {{"d_state", c.state_size}, {"d_conv", c.conv_kernel},
                                                  {"expand", c.intermediate_size / c.hidden_size},
                                                  {"dt_rank", c.time_step_rank}}}};
    REQUIRE(c.intermediate_size % c.hidden_size == 0);
    std::ofstream(dir / "config.json") << original.dump();
    AnyModel loaded = load_model(dir.string());
    CHECK(loaded.model_type == "mamba");
    CHECK(loaded.lm->config().vocab_size == 16);
    Tensor ids = tiny_ids();
    CHECK(loaded.lm->forward(ids).to_vector<float>() == any.lm->forward(ids).to_vector<float>());
    // without model_type and without mamba_ssm's fields the type stays unknown
    std::ofstream(dir / "config.json") << R"({"hidden_size": 8, "num_hidden_layers": 2})";
    CHECK_THROWS_WITH_AS(load_model(dir.string()), doctest::Contains("missing \"model_type\""), Error);
}

TEST_CASE("mamba config: mamba_ssm's ssm_cfg arguments are read, configs for other blocks are refused") {
    const nlohmann::json base = {{"d_model", 8}, {"n_layer", 2}, {"vocab_size", 11},
                                 {"ssm_cfg", {{"layer", "Mamba1"}, {"bias", true}, {"conv_bias", false},
                                              {"dt_min", 0.002}, {"dt_max", 0.2}, {"dt_init", "constant"},
                                              {"dt_scale", 0.5}, {"dt_init_floor", 2e-4}}}};
    nlohmann::json j = base;
    j["model_type"] = "mamba";
    const LMConfig c = LMConfig::from_json(j, "config.json");
    CHECK(c.use_bias);
    CHECK_FALSE(c.use_conv_bias);
    CHECK(c.time_step_min == 0.002);
    CHECK(c.time_step_max == 0.2);
    CHECK(c.time_step_init_scheme == "constant");
    CHECK(c.time_step_scale == 0.5);
    CHECK(c.time_step_floor == 2e-4);
    // HF names given as well win over ssm_cfg, as for the other fields
    j["use_bias"] = false;
    CHECK_FALSE(LMConfig::from_json(j, "config.json").use_bias);
    // fields that ask for a different block: one-line errors naming the field
    const std::pair<nlohmann::json, const char*> refused[] = {
        {{{"rms_norm", false}}, "\"rms_norm\" = false asks for LayerNorm instead of RMSNorm"},
        {{{"hidden_act", "gelu"}}, "\"hidden_act\" = \"gelu\" asks for an activation other than SiLU"},
        {{{"d_intermediate", 64}}, "\"d_intermediate\" = 64 asks for an MLP after each mixer"},
        {{{"attn_layer_idx", {1}}}, "asks for attention layers"},
        {{{"ssm_cfg", {{"layer", "Mamba2"}}}}, "ssm_cfg \"layer\" = \"Mamba2\" is not a mixer this loader builds"},
    };
    for (const auto& [patch, message] : refused) {
        nlohmann::json bad = base;
        bad.update(patch);
        CHECK_THROWS_WITH_AS(LMConfig::from_json(bad, "config.json"), doctest::Contains(message), Error);
    }
    // the values that describe our blocks pass (mamba_ssm and HF write them)
    j.update({{"rms_norm", true}, {"hidden_act", "silu"}, {"d_intermediate", 0}, {"attn_layer_idx", nlohmann::json::array()}});
    CHECK_NOTHROW(LMConfig::from_json(j, "config.json"));
    // a field of the wrong JSON type is refused by name: nlohmann's get<int64_t> took true as 1, truncated 8.5 and
    // converted 1e30 with undefined behaviour; a float with an integral value (8.0) is the integer
    for (const nlohmann::json& bad : {nlohmann::json(8.5), nlohmann::json(1e30), nlohmann::json(true), nlohmann::json("8")}) {
        nlohmann::json k = j;
        k["hidden_size"] = bad;
        CHECK_THROWS_WITH_AS(LMConfig::from_json(k, "config.json"),
                             doctest::Contains("config.json: field \"hidden_size\" must be an integer"), Error);
    }
    nlohmann::json k = j;
    k["hidden_size"] = 8.0;
    CHECK(LMConfig::from_json(k, "config.json").hidden_size == 8);
    // fields no config defines are named (train warns: a typo leaves the default), the ones we write are not
    CHECK(LMConfig::unknown_fields(LMConfig::from_json(j, "config.json").to_json()).empty());
    CHECK(LMConfig::unknown_fields(j).empty());  // mamba_ssm's names
    k["num_hidden_layer"] = 3;
    CHECK(LMConfig::unknown_fields(k) == std::vector<std::string>{"num_hidden_layer"});
    k.erase("num_hidden_layer");
    k["use_bias"] = 1;
    CHECK_THROWS_WITH_AS(LMConfig::from_json(k, "config.json"), doctest::Contains("\"use_bias\" must be true or false"),
                         Error);
}

TEST_CASE("mamba generate is deterministic and greedy matches argmax of the parallel logits") {
    LanguageModel model(tiny_config(), 4);
    model.eval();
    GenerationOptions greedy;
    greedy.temperature = 0;
    greedy.max_new_tokens = 5;
    std::vector<int64_t> out = model.generate({1, 2, 3}, greedy);
    REQUIRE(out.size() == 8);
    std::vector<int64_t> seq(out.begin(), out.end() - 1);
    Tensor logits = model.forward(Tensor::from_vector<int64_t>(seq, {1, int64_t(seq.size())}));
    for (size_t t = 2; t + 1 < out.size(); ++t) {
        Tensor row = logits.select(1, int64_t(t)).squeeze(0);
        CHECK(ops::argmax(row, 0).item() == double(out[t + 1]));
    }
    GenerationOptions sample;
    sample.temperature = 0.8;
    sample.top_k = 4;
    sample.seed = 12;
    CHECK(model.generate({1}, sample) == model.generate({1}, sample));
    // top_p 0 keeps only the most likely token: sampling is then greedy
    GenerationOptions nucleus = sample;
    nucleus.top_k = 0;
    nucleus.top_p = 0;
    greedy.max_new_tokens = nucleus.max_new_tokens = 6;
    CHECK(model.generate({1, 2}, nucleus) == model.generate({1, 2}, greedy));
    // a stop id ends generation right after it is emitted (kept, as HF keeps the eos)
    const std::vector<int64_t> free_run = model.generate({1, 2}, greedy);
    GenerationOptions stopping = greedy;
    stopping.stop_ids = {free_run.back()};
    const auto first = std::find(free_run.begin() + 2, free_run.end(), free_run.back());  // first generated there
    CHECK(model.generate({1, 2}, stopping) == std::vector<int64_t>(free_run.begin(), first + 1));
    nucleus.top_p = 1.5;
    CHECK_THROWS_WITH_AS(model.generate({1}, nucleus), doctest::Contains("top_p must be in [0, 1]"), Error);
}

TEST_CASE("sampling candidates follow HF's top-k (ties kept) and top-p warpers") {
    auto ids = [](const std::vector<std::pair<int64_t, double>>& c) {
        std::vector<int64_t> out;
        for (const auto& p : c) out.push_back(p.first);
        return out;
    };
    // probabilities 0.05, 0.5, 0.15, 0.3 at temperature 1
    const std::vector<double> logits = {std::log(0.05), std::log(0.5), std::log(0.15), std::log(0.3)};
    GenerationOptions o;
    o.temperature = 1;
    CHECK(ids(sampling_candidates(logits, o)) == std::vector<int64_t>{1, 3, 2, 0});
    const auto all = sampling_candidates(logits, o);
    CHECK(all[1].second == doctest::Approx(0.6).epsilon(1e-12));  // exp(l − max): 0.3 / 0.5
    // ascending cumulative probabilities 0.05, 0.2, 0.5, 1: HF drops those <= 1 − top_p
    for (const auto& c : std::vector<std::pair<double, std::vector<int64_t>>>{
             {0.97, {1, 3, 2, 0}}, {0.9, {1, 3, 2}}, {0.75, {1, 3}}, {0.4, {1}}, {0.0, {1}}}) {
        o.top_p = c.first;
        CAPTURE(c.first);
        CHECK(ids(sampling_candidates(logits, o)) == c.second);
    }
    // top-k keeps ties with the k-th logit, and top-p then acts on what top-k kept
    o.top_p = 1;
    o.top_k = 2;
    CHECK(ids(sampling_candidates({0.0, 2.0, 1.0, 1.0, -1.0}, o)) == std::vector<int64_t>{1, 2, 3});
    o.top_k = 1;
    CHECK(ids(sampling_candidates({0.0, 2.0, 1.0, 1.0, -1.0}, o)) == std::vector<int64_t>{1});
    o.top_k = 2;
    o.top_p = 0.5;  // within {0.5, 0.3}: 0.3 / 0.8 = 0.375 <= 0.5 is dropped
    CHECK(ids(sampling_candidates(logits, o)) == std::vector<int64_t>{1});
    o.top_p = 0.7;  // 0.375 > 0.3 stays
    CHECK(ids(sampling_candidates(logits, o)) == std::vector<int64_t>{1, 3});
    // temperature scales before the filters: at T = 0.5 the weights are squared
    o = GenerationOptions{};
    o.temperature = 0.5;
    CHECK(sampling_candidates(logits, o)[1].second == doctest::Approx(0.36).epsilon(1e-12));
}
