// Mamba and Longhorn: whole-model float64 gradient checks (sampled elements of every parameter), Longhorn's
// recurrent mode, and a short training run on selective copying whose loss must fall well below chance.
#include "test_util.h"

#include "autograd/optim.h"
#include "models/ssm_lm.h"

using namespace ssmtune;
using namespace ssmtune::testing;
using namespace ssmtune::models;

namespace {

LMConfig small_config(const std::string& type, int64_t vocab, int64_t d, int64_t layers, int64_t n) {
    LMConfig c;
    c.model_type = type;
    c.vocab_size = vocab;
    c.hidden_size = d;
    c.num_hidden_layers = layers;
    c.state_size = n;
    c.expand = 2;
    c.intermediate_size = 2 * d;
    c.conv_kernel = 4;
    c.time_step_rank = (d + 15) / 16;
    return c;
}

// Selective copying (Mamba paper §4.1.1), small: `colors` colored tokens 1..C placed at random positions among
// `span` blank tokens (0), then `colors` marker tokens (C+1); the model must output the colored tokens in order at
// the markers. Returns ids [B, span + colors] and targets aligned with next-token prediction (−100 elsewhere).
void selective_copying(Generator& gen, int64_t batch, int64_t span, int64_t count, int64_t C, Tensor& ids, Tensor& targets) {
    const int64_t L = span + count;
    std::vector<int64_t> x(size_t(batch * L), 0), y(size_t(batch * L), -100);
    for (int64_t b = 0; b < batch; ++b) {
        std::vector<int64_t> positions;
        while (int64_t(positions.size()) < count) {
            const int64_t p = int64_t(philox_uniform(gen.seed(), gen.advance(1)) * double(span));
            if (std::find(positions.begin(), positions.end(), p) == positions.end()) positions.push_back(p);
        }
        std::sort(positions.begin(), positions.end());
        for (int64_t i = 0; i < count; ++i) {
            const int64_t color = 1 + int64_t(philox_uniform(gen.seed(), gen.advance(1)) * double(C));
            x[size_t(b * L + positions[size_t(i)])] = color;
            x[size_t(b * L + span + i)] = C + 1;
            y[size_t(b * L + span + i - 1)] = color;  // predicted from the position before the i-th marker
        }
    }
    ids = Tensor::from_vector<int64_t>(x, {batch, L});
    targets = Tensor::from_vector<int64_t>(y, {batch * L});
}

double train_selective_copying(const std::string& type, int steps) {
    const int64_t C = 4;
    LanguageModel model(small_config(type, C + 2, 32, 2, 8), 11);
    autograd::AdamW opt(model.parameters(), autograd::AdamW::Options().lr(5e-3).weight_decay(0.0));
    Generator data(5);
    double last = 0;
    for (int step = 0; step < steps; ++step) {
        Tensor ids, targets;
        selective_copying(data, 16, 12, 3, C, ids, targets);
        Tensor logits = model.forward(ids);
        Tensor loss = ops::cross_entropy(logits.reshape({-1, C + 2}), targets);
        loss.backward();
        autograd::clip_grad_norm(opt.parameters(), 1.0);
        opt.step();
        opt.zero_grad();
        last = step == 0 ? loss.item() : 0.9 * last + 0.1 * loss.item();
    }
    return last;
}

}  // namespace

TEST_CASE("mamba and longhorn whole-model gradients pass a float64 gradient check") {
    for (const char* type : {"mamba", "longhorn"}) {
        LanguageModel model(small_config(type, 7, 8, 2, 3), 2);
        model.to(DType::F64);
        model.eval();
        Tensor ids = Tensor::from_vector<int64_t>({1, 4, 2, 6, 0, 3, 5, 5, 2, 1}, {2, 5});
        auto named = model.named_parameters();
        std::vector<Tensor> params;
        for (auto& [n, p] : named) params.push_back(p);
        autograd::GradcheckOptions opt;
        opt.max_checked_per_input = 6;
        opt.atol = 1e-7;
        opt.rtol = 1e-5;
        INFO(type);
        expect_gradcheck([&](const auto&) { return model.loss(ids); }, params, opt);
    }
}

TEST_CASE("longhorn recurrent step mode equals the parallel forward") {
    LanguageModel model(small_config("longhorn", 9, 8, 2, 4), 3);
    model.eval();
    Tensor ids = Tensor::from_vector<int64_t>({1, 4, 2, 8, 0, 3, 7, 5, 5, 6, 2, 1}, {2, 6});
    Tensor logits = model.forward(ids);
    auto states = model.initial_states(2);
    for (int64_t t = 0; t < ids.size(1); ++t)
        expect_close(model.step(ids.select(1, t).contiguous(), states), logits.select(1, t), 1e-4, 1e-5,
                     "step " + std::to_string(t));
    auto sd = model.state_dict();
    CHECK(sd.count("backbone.layers.0.mixer.A_log") == 0);
    CHECK(sd.count("backbone.layers.1.mixer.dt_proj.bias") == 1);
    CHECK(sd.at("backbone.layers.1.mixer.dt_proj.bias").to_vector<float>() == std::vector<float>(16, 0.0f));
}

TEST_CASE("mamba learns selective copying") {
    const double chance = std::log(4.0);
    const double loss = train_selective_copying("mamba", 250);
    MESSAGE("smoothed loss " << loss << " (chance " << chance << ")");
    CHECK(loss < 0.35 * chance);
}

TEST_CASE("longhorn learns selective copying") {
    const double chance = std::log(4.0);
    const double loss = train_selective_copying("longhorn", 250);
    MESSAGE("smoothed loss " << loss << " (chance " << chance << ")");
    CHECK(loss < 0.35 * chance);
}
