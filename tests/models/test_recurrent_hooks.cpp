// Recurrent mode == parallel mode with the PEFT hooks set, for the Mamba and Longhorn LMs in float64: random
// initial state h0 [E, N], state offset h′ [E, N], output offset y′ [E] on every mixer (each alone and all
// together), prompt embeddings [P, D], and prefix vectors [P, E]. LanguageModel::forward's logits must equal
// those of stepping token by token (initial_states() / step()) to 1e-10, the hooks must actually move the
// logits, and all-zero hooks must give exactly (bit for bit) the hook-free logits in both modes.
#include "test_util.h"
#include "tests/models/tiny_models.h"

#include "models/ssm_lm.h"

using namespace ssmtune;
using namespace ssmtune::testing;
using namespace ssmtune::models;

namespace {

LMConfig tiny_config(const std::string& type) { return testing::tiny_lm_config(type); }

constexpr int64_t kE = 16, kN = 4, kD = 8, kV = 11, kP = 3;


std::shared_ptr<LanguageModel> make_model(const std::string& type, uint64_t seed) {
    auto m = std::make_shared<LanguageModel>(tiny_config(type), seed);
    m->to(DType::F64);
    m->eval();
    return m;
}

// Which hooks to set (random, non-zero, F64) on every mixer; `zero` sets them to zeros instead.
struct HookSet {
    bool h0 = false, state_offset = false, output_offset = false, prefix = false, prompt = false;
    std::string name;
};

void set_hooks(LanguageModel& model, const HookSet& s, bool zero = false) {
    auto make = [zero](const Shape& shape, uint64_t seed, double scale) {
        return zero ? Tensor::zeros(shape, DType::F64) : Tensor::randn(shape, seed, DType::F64) * scale;
    };
    for (int64_t i = 0; i < model.num_layers(); ++i) {
        Mixer& m = model.mixer(i);
        const uint64_t base = 1000 * uint64_t(i + 1);
        m.hook_initial_state = s.h0 ? make({kE, kN}, base + 1, 0.7) : Tensor();
        m.hook_state_offset = s.state_offset ? make({kE, kN}, base + 2, 0.5) : Tensor();
        m.hook_output_offset = s.output_offset ? make({kE}, base + 3, 0.5) : Tensor();
        m.hook_prefix = s.prefix ? make({kP, kE}, base + 4, 0.8) : Tensor();
    }
    model.prompt_embeddings = s.prompt ? make({kP, kD}, 77, 0.5) : Tensor();
}

// Logits [B, L, V] from the recurrent mode, one token at a time. With prompt embeddings set, the virtual tokens
// are fed first through a twin model whose vocabulary is extended by P rows holding the prompt vectors (the
// same weights otherwise; the tied head's extra columns are dropped), since step() takes token ids.
Tensor stepped_logits(LanguageModel& model, const Tensor& ids) {
    const int64_t B = ids.size(0), L = ids.size(1);
    LanguageModel* runner = &model;
    std::shared_ptr<LanguageModel> twin;
    int64_t P = 0;
    if (model.prompt_embeddings.defined()) {
        P = model.prompt_embeddings.size(0);
        LMConfig c = model.config();
        c.vocab_size += P;
        twin = std::make_shared<LanguageModel>(c, 0);
        twin->to(DType::F64);
        twin->eval();
        TensorMap sd = model.state_dict();
        sd["backbone.embeddings.weight"] = ops::concat({sd.at("backbone.embeddings.weight"), model.prompt_embeddings}, 0);
        twin->load_state_dict(sd);
        for (int64_t i = 0; i < model.num_layers(); ++i) {
            twin->mixer(i).hook_initial_state = model.mixer(i).hook_initial_state;
            twin->mixer(i).hook_state_offset = model.mixer(i).hook_state_offset;
            twin->mixer(i).hook_output_offset = model.mixer(i).hook_output_offset;
            twin->mixer(i).hook_prefix = model.mixer(i).hook_prefix;
        }
        runner = twin.get();
    }
    std::vector<MixerState> states = runner->initial_states(B);
    for (int64_t p = 0; p < P; ++p)
        runner->step(Tensor::full({B}, double(model.config().vocab_size + p), DType::I64), states);
    std::vector<Tensor> out;
    for (int64_t t = 0; t < L; ++t)
        out.push_back(runner->step(ids.select(1, t).contiguous(), states).narrow(1, 0, kV).unsqueeze(1));
    return ops::concat(out, 1);
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
    const std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
    double m = 0;
    for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(x[i] - y[i]));
    return m;
}

std::vector<HookSet> hook_sets() {
    std::vector<HookSet> sets;
    auto add = [&](const std::string& name, bool h0, bool so, bool oo, bool prefix, bool prompt) {
        HookSet s;
        s.h0 = h0;
        s.state_offset = so;
        s.output_offset = oo;
        s.prefix = prefix;
        s.prompt = prompt;
        s.name = name;
        sets.push_back(s);
    };
    add("h0", true, false, false, false, false);
    add("state offset", false, true, false, false, false);
    add("output offset", false, false, true, false, false);
    add("h0 + state offset + output offset", true, true, true, false, false);
    add("prompt embeddings", false, false, false, false, true);
    add("all scan hooks + prompt embeddings", true, true, true, false, true);
    add("prefix", false, false, false, true, false);
    add("all scan hooks + prefix + prompt embeddings", true, true, true, true, true);
    return sets;
}

}  // namespace

TEST_CASE("recurrent hooks: step mode equals the parallel forward with every hook (mamba and longhorn, F64)") {
    Tensor ids = tiny_ids();
    double worst = 0;
    for (const char* type : {"mamba", "longhorn"}) {
        auto model = make_model(type, 5);
        const Tensor plain = model->forward(ids);
        {
            const std::string label = std::string(type) + " without hooks";
            INFO(label);
            const double d = max_abs_diff(stepped_logits(*model, ids), plain);
            CHECK(d <= 1e-10);
            worst = std::max(worst, d);
        }
        for (const HookSet& s : hook_sets()) {
            const std::string label = std::string(type) + " with " + s.name;
            INFO(label);
            set_hooks(*model, s);
            const Tensor parallel = model->forward(ids);
            REQUIRE(parallel.shape() == Shape{2, 7, kV});
            const double d = max_abs_diff(stepped_logits(*model, ids), parallel);
            CHECK(d <= 1e-10);
            worst = std::max(worst, d);
            CHECK(max_abs_diff(parallel, plain) > 1e-4);  // the hook does change the model
            set_hooks(*model, HookSet{});
        }
        CHECK(model->forward(ids).to_vector<double>() == plain.to_vector<double>());  // hooks cleared again
    }
    MESSAGE("recurrent hooks: worst |forward − step| = " << worst);
}

TEST_CASE("recurrent hooks: all-zero hooks give exactly the hook-free logits in both modes") {
    Tensor ids = tiny_ids();
    for (const char* type : {"mamba", "longhorn"}) {
        auto model = make_model(type, 9);
        const std::vector<double> plain = model->forward(ids).to_vector<double>();
        const std::vector<double> plain_step = stepped_logits(*model, ids).to_vector<double>();
        for (int which = 0; which < 4; ++which) {
            HookSet one;
            one.h0 = which == 0 || which == 3;
            one.state_offset = which == 1 || which == 3;
            one.output_offset = which == 2 || which == 3;
            const std::string label = std::string(type) + " zero hook set " + std::to_string(which);
            INFO(label);
            set_hooks(*model, one, /*zero=*/true);
            CHECK(model->forward(ids).to_vector<double>() == plain);
            CHECK(stepped_logits(*model, ids).to_vector<double>() == plain_step);
        }
    }
}

TEST_CASE("recurrent hooks: initial_states() starts every layer from h0 and restarts cleanly") {
    // The cache before the first token holds h0 itself (broadcast over the batch) and an empty conv window;
    // a second initial_states() starts over (step() must not re-apply or keep h0 elsewhere).
    Tensor ids = tiny_ids();
    for (const char* type : {"mamba", "longhorn"}) {
        auto model = make_model(type, 13);
        HookSet s;
        s.h0 = s.state_offset = s.output_offset = true;
        set_hooks(*model, s);
        const std::string label = type;
        INFO(label);
        std::vector<MixerState> states = model->initial_states(2);
        REQUIRE(states.size() == 2);
        for (int64_t i = 0; i < 2; ++i) {
            const Tensor h0 = model->mixer(i).hook_initial_state;
            for (int64_t b = 0; b < 2; ++b)
                CHECK(states[size_t(i)].ssm_state.select(0, b).to_vector<double>() == h0.to_vector<double>());
            for (double v : states[size_t(i)].conv_state.to_vector<double>()) CHECK(v == 0.0);
        }
        const Tensor first = model->step(ids.select(1, 0).contiguous(), states);
        model->step(ids.select(1, 1).contiguous(), states);
        CHECK(max_abs_diff(states[0].ssm_state.select(0, 0), model->mixer(0).hook_initial_state) > 1e-6);
        std::vector<MixerState> again = model->initial_states(2);
        CHECK(model->step(ids.select(1, 0).contiguous(), again).to_vector<double>() == first.to_vector<double>());
    }
}
