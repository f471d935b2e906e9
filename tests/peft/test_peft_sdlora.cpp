// SDLORA (peft/sdlora.h): the PEFT battery on Mamba, Longhorn and S4D (with and without C pruning) from fixed
// dimensions; the sparse scatter against a plain loop with its float64 gradcheck; the warm-up selection on
// hand-set warm-up changes (Mamba, Longhorn, S4D against an oracle built from ops::s4d_kernel) and after real
// AdamW warm-up steps; trainable counts against the formulas (incl. the mamba-130m layer of the notes' table);
// only the selected entries move; the missing-dimensions error; save → load keeps the dimensions.
#include "tests/peft/peft_test_util.h"

#include <cmath>
#include <fstream>

#include "autograd/gradcheck.h"
#include "models/mamba_mixer.h"
#include "ops/ops.h"
#include "ops/ssm.h"
#include "peft/sdlora.h"

using namespace ssmtune;
using namespace ssmtune::peft_test;
using nlohmann::json;

namespace {

// tiny LM: D 8, E 16, N 4, R 2, 2 layers; tiny S4D: H 6, M = N/2 = 2, 2 layers
const json kMambaDims = {{"0", {{"channels", {1, 7, 12}}, {"states", {{0, 3}, {2}, {1, 2, 3}}}}},
                         {"1", {{"channels", {4}}, {"states", {{1}}}}}};
const json kLonghornDims = {{"0", {{"channels", {0, 5}}}}, {"1", {{"channels", {15}}}}};
const json kS4DDims = {{"0", {{"channels", {1, 4}}, {"states", {{0}, {0, 1}}}}},
                       {"1", {{"channels", {2}}, {"states", {{1}}}}}};
const json kS4DPrunedDims = {
    {"0", {{"usable_channels", {0, 1, 3, 4}}, {"channels", {1, 4}}, {"usable_states", {{0, 1}, {1}}}, {"states", {{0}, {1}}}}},
    {"1", {{"usable_channels", {2, 5}}, {"channels", {2}}, {"usable_states", {{1}}}, {"states", {{1}}}}}};

json sdlora(const json& dims, const json& extra = json::object()) {
    json j = {{"peft_type", "SDLORA"}, {"r", 2}, {"lora_alpha", 4}, {"dimensions", dims}};
    j.update(extra);
    return j;
}

TensorMap cloned_state(models::Module& m) {
    TensorMap out;
    for (auto& [k, v] : m.state_dict()) out[k] = v.detach().clone();
    return out;
}

void train_steps(Subject& s, peft::Adapter& a, int steps) {
    autograd::AdamW opt(a.parameters(), autograd::AdamW::Options().lr(1e-2).weight_decay(0.0));
    for (int i = 0; i < steps; ++i) {
        s.loss().backward();
        opt.step();
        opt.zero_grad();
    }
}

Tensor named(const peft::Adapter& a, const std::string& name) {
    for (auto& [n, t] : a.named_parameters())
        if (n == name) return t;
    FAIL("no adapter tensor " << name);
    return Tensor();
}

}  // namespace

TEST_CASE("peft sdlora: battery on mamba, longhorn and s4d with fixed dimensions") {
    BatteryOptions o;
    o.mergeable = true;
    o.random_init = {{"init", "random"}};
    run_battery("mamba", sdlora(kMambaDims, {{"sdlora_alpha", 2.0}}), o);
    run_battery("longhorn", sdlora(kLonghornDims, {{"target_modules", {"out_proj", "x_proj"}}}), o);
    run_battery("s4d", sdlora(kS4DDims, {{"sdlora_alpha", 0.5}}), o);
    // pruning C changes the outputs from the start
    BatteryOptions p = o;
    p.zero_init = false;
    run_battery("s4d", sdlora(kS4DPrunedDims), p);
}

TEST_CASE("peft sdlora: SparseDelta equals a plain-loop scatter, float64 gradcheck, worst errors") {
    Subject s = make_subject("s4d");
    models::S4DKernel& kernel = *s.any.s4d->layer(0).kernel;  // C [6, 2, 2]
    const std::vector<int64_t> idx = {1, 4, 5, 10, 23};
    std::vector<double> drop(24, 0.0);
    drop[0] = drop[4] = drop[17] = 1.0;
    auto d = std::make_shared<peft::SparseDelta>(kernel, "C", idx, 1.5,
                                                 Tensor::randn({5}, 7, DType::F64).set_requires_grad(true),
                                                 Tensor::from_vector<double>(drop, {6, 2, 2}));
    const std::vector<double> v = d->values().to_vector<double>(), base = kernel.C().to_vector<double>();
    std::vector<double> expect(24, 0.0);
    for (size_t j = 0; j < idx.size(); ++j) expect[size_t(idx[j])] = 1.5 * v[j];
    for (size_t p = 0; p < 24; ++p) expect[p] -= base[p] * drop[p];
    CHECK(bit_equal(d->delta(), Tensor::from_vector<double>(expect, {6, 2, 2})));
    autograd::GradcheckOptions gopt;
    const auto r = autograd::gradcheck([&](const std::vector<Tensor>&) { return d->delta(); }, {d->values()}, gopt);
    MESSAGE("SparseDelta gradcheck worst abs error " << r.inputs[0].max_abs_error);
    CHECK(r.ok);
    // unsorted or out-of-range indices are refused
    CHECK_THROWS_WITH_AS(peft::SparseDelta(kernel, "C", {4, 1}, 1.0, Tensor::zeros({2}, DType::F64)),
                         doctest::Contains("strictly ascending"), Error);

    // whole-model gradchecks from a random start, worst errors reported
    for (const char* kind : {"mamba", "longhorn", "s4d"}) {
        Subject g = make_subject(kind);
        const json dims = std::string(kind) == "mamba" ? kMambaDims : std::string(kind) == "longhorn" ? kLonghornDims
                                                                                                      : kS4DPrunedDims;
        peft::Adapter a = peft::apply(g.module(), peft::Config::from_json(sdlora(dims, {{"init", "random"}})));
        autograd::GradcheckOptions mopt;
        mopt.max_checked_per_input = 12;
        const auto rep = autograd::gradcheck([&](const std::vector<Tensor>&) { return g.loss(); }, a.parameters(), mopt);
        double worst = 0;
        for (auto& in : rep.inputs) worst = std::max(worst, in.max_abs_error);
        MESSAGE(std::string(kind) << " SDLORA loss gradcheck worst abs error " << worst);
        INFO(rep.summary());
        CHECK(rep.ok);
    }
}

TEST_CASE("peft sdlora: mamba selection picks the largest warm-up changes, base bit-identical") {
    Subject s = make_subject("mamba");
    const TensorMap before = cloned_state(s.module());
    const peft::Config cfg = peft::Config::from_json(
        {{"peft_type", "SDLORA"}, {"r", 2}, {"channel_ratio", 0.125}, {"state_ratio", 0.5}});  // 2 of 16, 2 of 4
    bool called = false;
    const peft::Config sel = peft::sdlora_select(s.module(), cfg, [&](peft::Adapter& warm) {
        called = true;
        CHECK_FALSE(warm.merge_refusal().empty());
        for (auto& [n, t] : s.module().named_parameters())
            if (before.count(n)) CHECK_FALSE(t.requires_grad());  // the base is frozen during the warm-up
        Tensor a0 = named(warm, "backbone.layers.0.mixer.A_log_delta"), a1 = named(warm, "backbone.layers.1.mixer.A_log_delta");
        CHECK(a0.numel() == 16 * 4);
        CHECK(named(warm, "backbone.layers.0.mixer.out_proj.lora_B.weight").numel() == 8 * 2);
        CHECK(warm.named_parameters().size() == 2 + 2 * 2);
        auto put = [](Tensor& t, int64_t d, int64_t n, double v) { t.set({d * 4 + n}, v); };
        // layer 0: channel 3 (0.25 + 0.16 + 1e-4) and 11 (0.09 + 0.04) beat channel 5 (0.01)
        put(a0, 3, 1, 0.5); put(a0, 3, 2, -0.4); put(a0, 3, 0, 0.01); put(a0, 11, 0, 0.3); put(a0, 11, 3, 0.2);
        put(a0, 5, 2, 0.1);
        // layer 1: ties go to the lower index (channel 2: states 0 and 1 tie; channel 9: states 0..2 tie at 0)
        put(a1, 9, 3, -1.0); put(a1, 2, 0, 0.2); put(a1, 2, 1, 0.2);
    });
    CHECK(called);
    const json expect = {{"0", {{"channels", {3, 11}}, {"states", {{1, 2}, {0, 3}}}}},
                         {"1", {{"channels", {2, 9}}, {"states", {{0, 1}, {0, 3}}}}}};
    CHECK(sel.json["dimensions"] == expect);
    CHECK(sel.json["channel_ratio"] == 0.125);  // the rest of the config is kept
    // the base is bit-identical, nothing of the warm-up stays, requires_grad is restored
    const TensorMap after = s.module().state_dict();
    CHECK(after.size() == before.size());
    for (auto& entry : after) {
        const std::string& n = entry.first;  // not a structured binding: INFO captures it
        const Tensor& t = entry.second;
        INFO(n);
        REQUIRE(before.count(n));
        CHECK(bit_equal(t, before.at(n)));
    }
    for (auto& [n, t] : s.module().named_parameters()) CHECK(t.requires_grad());
    // the selected config applies
    peft::Adapter a = peft::apply(s.module(), sel);
    CHECK(a.num_trainable() == (2 + 2 + 2 * 4 * 2 + 2 * (16 + 8)) + (2 + 2 + 2 * 4 * 2 + 2 * (16 + 8)));
}

TEST_CASE("peft sdlora: selection after real AdamW warm-up steps (longhorn and mamba)") {
    for (const char* kind : {"longhorn", "mamba"}) {
        INFO(kind);
        Subject s = make_subject(kind);
        const peft::Config cfg = peft::Config::from_json(
            {{"peft_type", "SDLORA"}, {"channel_ratio", 0.2}, {"state_ratio", 0.5}, {"layers_to_transform", {1}}});
        std::vector<double> v;
        const peft::Config sel = peft::sdlora_select(s.module(), cfg, [&](peft::Adapter& warm) {
            train_steps(s, warm, 3);
            const std::string name = std::string("backbone.layers.1.mixer.") +
                                     (std::string(kind) == "mamba" ? "A_log_delta" : "x_proj.weight_delta");
            v = named(warm, name).to_vector<double>();
        });
        // expected by hand: round(0.2 · 16) = 3 channels by the summed squared change, lower index on ties
        std::vector<std::pair<double, int64_t>> score(16);
        for (int64_t e = 0; e < 16; ++e) {
            double sum = 0;
            if (std::string(kind) == "mamba")
                for (int64_t n = 0; n < 4; ++n) sum += v[size_t(e * 4 + n)] * v[size_t(e * 4 + n)];
            else
                for (int64_t r = 0; r < 8; ++r) sum += v[size_t(r * 16 + e)] * v[size_t(r * 16 + e)];
            score[size_t(e)] = {-sum, e};
        }
        std::sort(score.begin(), score.end());
        CHECK(score[2].first < score[3].first);  // the warm-up separated them (not a tie)
        std::vector<int64_t> ch = {score[0].second, score[1].second, score[2].second};
        std::sort(ch.begin(), ch.end());
        const json& got = sel.json["dimensions"];
        CHECK(got.size() == 1);
        CHECK(got["1"]["channels"] == json(ch));
        if (std::string(kind) == "mamba") {
            for (size_t j = 0; j < 3; ++j) {
                std::vector<std::pair<double, int64_t>> st(4);
                for (int64_t n = 0; n < 4; ++n) st[size_t(n)] = {-std::pow(v[size_t(ch[j] * 4 + n)], 2), n};
                std::sort(st.begin(), st.end());
                std::vector<int64_t> exp_states = {st[0].second, st[1].second};
                std::sort(exp_states.begin(), exp_states.end());
                CHECK(got["1"]["states"][j] == json(exp_states));
            }
        } else {
            CHECK_FALSE(got["1"].contains("states"));
        }
    }
}

TEST_CASE("peft sdlora: the warm-up deltas act scaled by sdlora_alpha, as in the run (mamba and longhorn)") {
    // sd_lora.py's warm-up forward is A_log + α·δ (α = sdlora_alpha), like the run's sparse deltas
    for (const char* kind : {"mamba", "longhorn"}) {
        INFO(kind);
        const bool mamba = std::string(kind) == "mamba";
        Subject s = make_subject(kind);
        const std::string param = mamba ? "A_log" : "x_proj.weight";
        Tensor* base = s.any.lm->mixer(1).find_parameter(param);
        REQUIRE(base);
        const std::vector<double> base_values = base->to_vector<double>();
        const peft::Config cfg = peft::Config::from_json({{"peft_type", "SDLORA"}, {"sdlora_alpha", 2.5}});
        peft::sdlora_select(s.module(), cfg, [&](peft::Adapter& warm) {
            Tensor d = named(warm, "backbone.layers.1.mixer." + param + "_delta");
            std::vector<double> v(size_t(d.numel()));
            for (size_t k = 0; k < v.size(); ++k) v[k] = 0.01 * double(int64_t(k % 7) - 3);
            copy_into(d, Tensor::from_vector<double>(v, d.shape()));
            const Tensor with_delta = s.output().detach().clone();
            // the same change written into the base by hand: A_log (all of it) or x_proj's k and q rows [R, R+2N)
            std::vector<double> w = base_values;
            const int64_t N = 4, E = 16, R = mamba ? 0 : base->size(0) - 2 * N;
            for (size_t k = 0; k < v.size(); ++k)
                w[mamba ? k : size_t(R * E) + k] += 2.5 * v[k];
            CHECK(v.size() == (mamba ? size_t(E * N) : size_t(2 * N * E)));
            copy_into(d, Tensor::zeros(d.shape(), d.dtype()));
            copy_into(*base, Tensor::from_vector<double>(w, base->shape()));
            testing::expect_close(s.output(), with_delta, 0, 1e-12, "output");
            copy_into(*base, Tensor::from_vector<double>(base_values, base->shape()));
        });
    }
}

TEST_CASE("peft sdlora: s4d selection by |dA| and by the kernel contribution at lag L/2") {
    for (const char* disc : {"zoh", "bilinear"}) {
        INFO(disc);
        models::S4DConfig sc = tiny_s4d_config();
        sc.discretization = disc;
        auto model = std::make_shared<models::S4DClassifier>(sc, 5);
        model->to(DType::F64);
        const int64_t H = 6, M = 2, half = 4;
        auto write_warmup = [&](peft::Adapter& warm) {  // ΔA_imag[h, n] = 0.01 (h + 1)(n + 1): grows with h and n
            for (int64_t layer = 0; layer < 2; ++layer) {
                Tensor d = named(warm, "s4_layers." + std::to_string(layer) + ".kernel.A_imag_delta");
                for (int64_t h = 0; h < H; ++h)
                    for (int64_t n = 0; n < M; ++n) d.set({h * M + n}, 0.01 * double((h + 1) * (n + 1)));
            }
        };
        // (a) everything usable: the update channels/states are the largest |ΔA|
        peft::Config a = peft::sdlora_select(*model, peft::Config::from_json(
            {{"peft_type", "SDLORA"}, {"channel_ratio", 0.34}, {"state_ratio", 0.5}}), [&](peft::Adapter& warm) {
                CHECK(warm.named_parameters().size() == 2 * 5);  // C, log_A_real, A_imag, log_dt, D per layer
                write_warmup(warm);
            });
        const json all = {{"usable_channels", {0, 1, 2, 3, 4, 5}}, {"channels", {4, 5}},
                          {"usable_states", {{0, 1}, {0, 1}}}, {"states", {{1}, {1}}}};
        CHECK(a.json["dimensions"] == json({{"0", all}, {"1", all}}));

        // (b) half the channels and states usable: an oracle from ops::s4d_kernel with unit C per mode gives
        // |W e^{λ L/2}| = ½ √(K_re² + K_im²) at lag L/2, times |C|.
        std::vector<std::vector<double>> ac(2, std::vector<double>(size_t(H * M)));
        peft::Config b = peft::sdlora_select(*model, peft::Config::from_json(
            {{"peft_type", "SDLORA"}, {"channel_ratio", 0.34}, {"state_ratio", 0.5}, {"select_channel_ratio", 0.5},
             {"select_state_ratio", 0.5}, {"seq_len", 2 * half}}), [&](peft::Adapter& warm) {
                write_warmup(warm);
                for (int64_t layer = 0; layer < 2; ++layer) {
                    models::S4DKernel& k = *model->layer(layer).kernel;
                    const Tensor C = k.effective("C");
                    for (int64_t n = 0; n < M; ++n) {
                        Tensor unit_re = Tensor::zeros({H, M, 2}, DType::F64), unit_im = unit_re.clone();
                        for (int64_t h = 0; h < H; ++h) { unit_re.set({h, n, 0}, 1.0); unit_im.set({h, n, 1}, 1.0); }
                        const auto m = std::string(disc) == "zoh" ? ops::S4DDiscretization::ZOH : ops::S4DDiscretization::Bilinear;
                        Tensor k_re = ops::s4d_kernel(k.effective("log_dt"), unit_re, k.effective("log_A_real"), k.effective("A_imag"), half + 1, m);
                        Tensor k_im = ops::s4d_kernel(k.effective("log_dt"), unit_im, k.effective("log_A_real"), k.effective("A_imag"), half + 1, m);
                        for (int64_t h = 0; h < H; ++h) {
                            const double re = k_re.at({h, half}), im = k_im.at({h, half});
                            ac[size_t(layer)][size_t(h * M + n)] =
                                0.5 * std::sqrt(re * re + im * im) * std::hypot(C.at({h, n, 0}), C.at({h, n, 1}));
                        }
                    }
                }
            });
        for (int64_t layer = 0; layer < 2; ++layer) {
            const auto& v = ac[size_t(layer)];
            std::vector<std::pair<double, int64_t>> ch(H);
            for (int64_t h = 0; h < H; ++h) ch[size_t(h)] = {-(v[size_t(h * M)] * v[size_t(h * M)] + v[size_t(h * M + 1)] * v[size_t(h * M + 1)]), h};
            std::sort(ch.begin(), ch.end());
            std::vector<int64_t> usable = {ch[0].second, ch[1].second, ch[2].second};
            std::sort(usable.begin(), usable.end());
            const std::vector<int64_t> update = {usable[1], usable[2]};  // |ΔA| grows with h
            json us = json::array(), st = json::array();
            for (int64_t h : update) {
                const int64_t best = v[size_t(h * M + 1)] > v[size_t(h * M)] ? 1 : 0;
                us.push_back({best});
                st.push_back({best});
            }
            const json& got = b.json["dimensions"][std::to_string(layer)];
            CHECK(got["usable_channels"] == json(usable));
            CHECK(got["channels"] == json(update));
            CHECK(got["usable_states"] == us);
            CHECK(got["states"] == st);
        }
        // applying it prunes C exactly there
        peft::Adapter ad = peft::apply(*model, b);
        for (int64_t layer = 0; layer < 2; ++layer) {
            const json& d = b.json["dimensions"][std::to_string(layer)];
            const Tensor C = model->layer(layer).kernel->effective("C"), C0 = model->layer(layer).kernel->C();
            for (int64_t h = 0; h < H; ++h)
                for (int64_t n = 0; n < M; ++n) {
                    bool keep = false;
                    for (auto& u : d["usable_channels"]) keep = keep || u == h;
                    for (size_t j = 0; j < d["channels"].size(); ++j)
                        if (d["channels"][j] == h && d["usable_states"][j][0] != n) keep = false;
                    for (int64_t p = 0; p < 2; ++p) CHECK(C.at({h, n, p}) == (keep ? C0.at({h, n, p}) : 0.0));
                }
        }
    }
}

TEST_CASE("peft sdlora: trainable counts equal the formulas") {
    {   // Mamba: Σ|S_n| + 2N|S_c| + r(E + D) per layer
        Subject s = make_subject("mamba");
        peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(sdlora(kMambaDims)));
        const int64_t N = 4, E = 16, D = 8, r = 2;
        CHECK(a.num_trainable() == ((2 + 1 + 3) + 2 * N * 3 + r * (E + D)) + (1 + 2 * N * 1 + r * (E + D)));
        std::vector<std::string> names;
        for (auto& [n, t] : a.named_parameters()) names.push_back(n);
        CHECK(names == std::vector<std::string>{
                           "backbone.layers.0.mixer.A_log_delta", "backbone.layers.0.mixer.x_proj.weight_delta",
                           "backbone.layers.1.mixer.A_log_delta", "backbone.layers.1.mixer.x_proj.weight_delta",
                           "backbone.layers.0.mixer.out_proj.lora_A.weight", "backbone.layers.0.mixer.out_proj.lora_B.weight",
                           "backbone.layers.1.mixer.out_proj.lora_A.weight", "backbone.layers.1.mixer.out_proj.lora_B.weight"});
    }
    {   // Longhorn: 2N|S_c| + r(E + D)
        Subject s = make_subject("longhorn");
        peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(sdlora(kLonghornDims)));
        CHECK(a.num_trainable() == (2 * 4 * 2 + 2 * 24) + (2 * 4 * 1 + 2 * 24));
    }
    {   // S4D: 4Σ|S_n| (C re/im, log_A_real, A_imag) + H (log_dt) + H (D) + 2H (bias) + r(H + 2H)
        Subject s = make_subject("s4d");
        peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(sdlora(kS4DDims)));
        const int64_t H = 6, r = 2;
        CHECK(a.num_trainable() == (4 * 3 + 4 * H + r * 3 * H) + (4 * 1 + 4 * H + r * 3 * H));
    }
    {   // a mamba-130m layer with the defaults (channel_ratio 0.01, state_ratio 0.25, r 8): the notes' 18,972
        models::LMConfig c = tiny_lm_config("mamba");
        c.hidden_size = 768;
        c.intermediate_size = 1536;
        c.state_size = 16;
        c.time_step_rank = 48;
        c.num_hidden_layers = 1;
        models::LanguageModel lm(c, 1);
        peft::Config sel = peft::sdlora_select(lm, peft::Config::parse(R"({"peft_type": "SDLORA"})"), [](peft::Adapter&) {});
        CHECK(sel.json["dimensions"]["0"]["channels"].size() == 15);   // round(0.01 · 1536)
        CHECK(sel.json["dimensions"]["0"]["states"][0].size() == 4);   // round(0.25 · 16)
        peft::Adapter a = peft::apply(lm, sel);
        CHECK(a.num_trainable() == 18972);
    }
}

TEST_CASE("peft sdlora: after training only the selected entries move (merged weights)") {
    {
        Subject s = make_subject("mamba");
        const TensorMap before = cloned_state(s.module());
        peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(sdlora(kMambaDims)));
        train_steps(s, a, 3);
        a.merge();
        const TensorMap after = s.module().state_dict();
        for (int64_t layer = 0; layer < 2; ++layer) {
            const json& d = kMambaDims[std::to_string(layer)];
            const std::string pre = "backbone.layers." + std::to_string(layer) + ".mixer.";
            const Tensor A0 = before.at(pre + "A_log"), A1 = after.at(pre + "A_log");
            const Tensor W0 = before.at(pre + "x_proj.weight"), W1 = after.at(pre + "x_proj.weight");
            for (int64_t e = 0; e < 16; ++e) {
                int64_t j = -1;
                for (size_t k = 0; k < d["channels"].size(); ++k)
                    if (d["channels"][k] == e) j = int64_t(k);
                for (int64_t n = 0; n < 4; ++n) {
                    bool sel = false;
                    if (j >= 0) for (auto& x : d["states"][size_t(j)]) sel = sel || x == n;
                    INFO("A_log " << layer << " " << e << " " << n);
                    CHECK((A1.at({e, n}) != A0.at({e, n})) == sel);
                }
                for (int64_t r = 0; r < 2 + 8; ++r) {
                    INFO("x_proj " << layer << " " << r << " " << e);
                    CHECK((W1.at({r, e}) != W0.at({r, e})) == (j >= 0 && r >= 2));
                }
            }
            for (const char* p : {"D", "in_proj.weight", "conv1d.weight", "conv1d.bias", "dt_proj.weight", "dt_proj.bias"})
                CHECK(bit_equal(after.at(pre + p), before.at(pre + p)));
            CHECK_FALSE(bit_equal(after.at(pre + "out_proj.weight"), before.at(pre + "out_proj.weight")));  // LoRA
        }
    }
    {
        Subject s = make_subject("s4d");
        const TensorMap before = cloned_state(s.module());
        peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(sdlora(kS4DPrunedDims)));
        train_steps(s, a, 3);
        a.merge();
        const TensorMap after = s.module().state_dict();
        for (int64_t layer = 0; layer < 2; ++layer) {
            const json& d = kS4DPrunedDims[std::to_string(layer)];
            const std::string pre = "s4_layers." + std::to_string(layer) + ".";
            for (int64_t h = 0; h < 6; ++h)
                for (int64_t n = 0; n < 2; ++n) {
                    bool usable = false, update = false;
                    for (auto& u : d["usable_channels"]) usable = usable || u == h;
                    for (size_t j = 0; j < d["channels"].size(); ++j) {
                        if (d["channels"][j] != h) continue;
                        bool us = false;
                        for (auto& x : d["usable_states"][j]) us = us || x == n;
                        usable = usable && us;
                        for (auto& x : d["states"][j]) update = update || x == n;
                    }
                    INFO("layer " << layer << " h " << h << " n " << n);
                    for (int64_t p = 0; p < 2; ++p) {
                        const double c0 = before.at(pre + "kernel.C").at({h, n, p}), c1 = after.at(pre + "kernel.C").at({h, n, p});
                        if (update) CHECK(c1 != c0);
                        else CHECK(c1 == (usable ? c0 : 0.0));
                    }
                    for (const char* p : {"kernel.log_A_real", "kernel.A_imag"})
                        CHECK((after.at(pre + p).at({h, n}) != before.at(pre + p).at({h, n})) == update);
                }
            for (const char* p : {"D", "output_linear.0.bias", "output_linear.0.weight"}) {
                const auto v0 = before.at(pre + p).to_vector<double>(), v1 = after.at(pre + p).to_vector<double>();
                for (size_t k = 0; k < v0.size(); ++k) CHECK(v1[k] != v0[k]);  // dense deltas and LoRA: all move
            }
            // log_dt: dense, but a channel whose C is pruned away has a zero kernel, so its Δ gets no gradient
            const auto t0 = before.at(pre + "kernel.log_dt").to_vector<double>(),
                       t1 = after.at(pre + "kernel.log_dt").to_vector<double>();
            for (int64_t h = 0; h < 6; ++h) {
                bool usable = false;
                for (auto& u : d["usable_channels"]) usable = usable || u == h;
                CHECK((t1[size_t(h)] != t0[size_t(h)]) == usable);
            }
        }
        for (const char* p : {"encoder.weight", "decoder.weight", "norms.0.weight"})
            CHECK(bit_equal(after.at(p), before.at(p)));
    }
}

TEST_CASE("peft sdlora: errors: no dimensions, bad dimensions") {
    Subject s = make_subject("mamba");
    CHECK_THROWS_WITH_AS(peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "SDLORA"})")),
                         doctest::Contains("\"dimensions\" is null; fix: run peft::sdlora_select"), Error);
    auto bad = [&](const json& dims, const char* says) {
        INFO(dims.dump());
        CHECK_THROWS_WITH_AS(peft::apply(s.module(), peft::Config::from_json(sdlora(dims))), doctest::Contains(says), Error);
    };
    bad({{"0", {{"channels", {16}}, {"states", {{0}}}}}, {"1", {{"channels", {0}}, {"states", {{0}}}}}},
        "holds 16, not an index in [0, 16)");
    bad({{"0", {{"channels", {1, 2}}, {"states", {{0}}}}}, {"1", {{"channels", {0}}, {"states", {{0}}}}}},
        "one state list per channel (2 channels)");
    bad({{"0", {{"channels", {1}}, {"states", {{0}}}}}}, "no object for layer 1");
    bad({{"0", {{"channels", {1, 1}}, {"states", {{0}, {1}}}}}, {"1", {{"channels", {0}}, {"states", {{0}}}}}},
        "repeats an index");
    bad({{"0", {{"channels", {1}}, {"states", {{0}}}}}, {"1", {{"channels", {0}}, {"states", {{0}}}}},
         {"2", {{"channels", {0}}, {"states", {{0}}}}}},
        "layer \"2\", which is not one of the 2 selected layers");
    // a failed apply leaves nothing attached and nothing frozen
    for (auto& [n, t] : s.module().named_parameters()) {
        CHECK(n.find("delta") == std::string::npos);
        CHECK(t.requires_grad());
    }
    Subject l = make_subject("longhorn");
    CHECK_THROWS_WITH_AS(peft::apply(l.module(), peft::Config::from_json(sdlora(kMambaDims))),
                         doctest::Contains("Longhorn has no state selection"), Error);
    Subject d = make_subject("s4d");
    CHECK_THROWS_WITH_AS(peft::apply(d.module(), peft::Config::from_json(sdlora(
                             {{"0", {{"usable_channels", {0}}, {"channels", {1}}, {"states", {{0}}}}},
                              {"1", {{"channels", {1}}, {"states", {{0}}}}}}))),
                         doctest::Contains("update channel 1 is not among usable_channels"), Error);
    CHECK_THROWS_WITH_AS(peft::sdlora_select(s.module(), peft::Config::parse(R"({"peft_type": "SDLORA", "seq_len": 0})"),
                                             [](peft::Adapter&) {}),
                         doctest::Contains("\"seq_len\""), Error);
    // a warm-up that throws leaves the model as it was
    const TensorMap before = cloned_state(s.module());
    CHECK_THROWS_AS(peft::sdlora_select(s.module(), peft::Config::parse(R"({"peft_type": "SDLORA"})"),
                                        [](peft::Adapter&) { SSMTUNE_FAIL("stop"); }),
                    Error);
    CHECK(s.module().state_dict().size() == before.size());
    for (auto& [n, t] : s.module().named_parameters()) CHECK(t.requires_grad());
}

TEST_CASE("peft sdlora: save -> load keeps the dimensions (sorted) and the outputs") {
    for (const char* kind : {"mamba", "s4d"}) {
        INFO(kind);
        Subject s = make_subject(kind);
        // given out of order: saved sorted, with the states following their channels
        const json dims = std::string(kind) == "mamba"
                              ? json{{"0", {{"channels", {12, 1}}, {"states", {{3, 1}, {0}}}}},
                                     {"1", {{"channels", {4}}, {"states", {{1}}}}}}
                              : json{{"0", {{"channels", {4, 1}}, {"states", {{1}, {0}}}}},
                                     {"1", {{"channels", {2}}, {"states", {{1}}}}}};
        peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(sdlora(dims, {{"init", "random"}})));
        const auto dir = testing::scratch_dir(std::string("peft_sdlora_save_") + kind);
        a.save(dir.string());
        const json saved = models::read_json_file((dir / "adapter_config.json").string());
        if (std::string(kind) == "mamba") {
            CHECK(saved["dimensions"] == json({{"0", {{"channels", {1, 12}}, {"states", {{0}, {1, 3}}}}},
                                               {"1", {{"channels", {4}}, {"states", {{1}}}}}}));
            CHECK(saved["target_modules"] == json({"out_proj"}));
        } else {
            CHECK(saved["dimensions"]["0"] == json({{"usable_channels", {0, 1, 2, 3, 4, 5}}, {"channels", {1, 4}},
                                                    {"usable_states", {{0, 1}, {0, 1}}}, {"states", {{0}, {1}}}}));
            CHECK(saved["target_modules"] == json({"output_linear.0"}));
        }
        const Tensor out = s.output().detach();
        Subject fresh = make_subject(kind);
        peft::Adapter b = peft::load(fresh.module(), dir.string());
        CHECK(bit_equal(fresh.output(), out));
        CHECK(b.num_trainable() == a.num_trainable());
        const auto na = a.named_parameters(), nb = b.named_parameters();
        REQUIRE(na.size() == nb.size());
        for (size_t i = 0; i < na.size(); ++i) {
            CHECK(na[i].first == nb[i].first);
            CHECK(bit_equal(na[i].second, nb[i].second));
        }
    }
}
