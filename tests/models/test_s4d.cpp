// S4D classifier: example.py names and the parameter-count formula (201,482 for example.py's model), whole-model
// float64 gradient check, recurrent mode == convolution mode, save → load, dropout only in training, and a short
// training run on a separable sequence task; an unknown config field is refused.
#include "test_util.h"

#include "autograd/optim.h"
#include "models/checkpoint.h"

using namespace ssmtune;
using namespace ssmtune::testing;
using namespace ssmtune::models;

namespace {

S4DConfig tiny(bool prenorm = false, const std::string& init = "lin", const std::string& disc = "zoh") {
    S4DConfig c;
    c.d_input = 2;
    c.d_output = 3;
    c.d_model = 4;
    c.d_state = 4;
    c.n_layers = 2;
    c.prenorm = prenorm;
    c.dropout = 0.1;
    c.init = init;
    c.discretization = disc;
    return c;
}

}  // namespace

TEST_CASE("s4d uses example.py names and the parameter count formula") {
    S4DConfig c;
    c.d_input = 3;
    c.d_output = 10;
    c.d_model = 128;
    c.d_state = 64;
    c.n_layers = 4;
    S4DClassifier model(c, 0);
    CHECK(model.num_parameters() == 201482);
    auto sd = model.state_dict();
    for (const char* name : {"encoder.weight", "encoder.bias", "s4_layers.0.kernel.log_dt", "s4_layers.0.kernel.C",
                             "s4_layers.0.kernel.log_A_real", "s4_layers.0.kernel.A_imag", "s4_layers.3.D",
                             "s4_layers.3.output_linear.0.weight", "s4_layers.3.output_linear.0.bias", "norms.2.weight",
                             "norms.2.bias", "decoder.weight", "decoder.bias"})
        CHECK_MESSAGE(sd.count(name) == 1, name);
    CHECK(sd.at("s4_layers.0.output_linear.0.weight").shape() == Shape{256, 128, 1});
    CHECK(sd.at("s4_layers.0.kernel.C").shape() == Shape{128, 32, 2});
    CHECK(sd.at("s4_layers.0.kernel.A_imag").at({5, 3}) == doctest::Approx(3 * M_PI).epsilon(1e-6));
    CHECK(std::exp(sd.at("s4_layers.0.kernel.log_A_real").at({5, 3})) == doctest::Approx(0.5));
}

TEST_CASE("s4d whole-model gradients pass a float64 gradient check") {
    for (bool prenorm : {false, true}) {
        S4DClassifier model(tiny(prenorm, prenorm ? "inv" : "lin", prenorm ? "bilinear" : "zoh"), 1);
        model.to(DType::F64);
        model.eval();
        Tensor x = Tensor::randn({2, 6, 2}, 3, DType::F64);
        Tensor y = Tensor::from_vector<int64_t>({0, 2}, {2});
        std::vector<Tensor> params = model.parameters();
        autograd::GradcheckOptions opt;
        opt.max_checked_per_input = 6;
        INFO("prenorm " << prenorm);
        expect_gradcheck([&](const auto&) { return model.loss(x, y); }, params, opt);
    }
}

TEST_CASE("s4d recurrent mode equals the convolution mode") {
    for (const char* init : {"lin", "inv", "real"}) {
        for (const char* disc : {"zoh", "bilinear"}) {
            S4DClassifier model(tiny(std::string(init) == "inv", init, disc), 2);
            model.eval();
            Tensor x = Tensor::randn({3, 11, 2}, 4);
            INFO(init << " " << disc);
            expect_close(model.forward_recurrent(x), model.forward(x), 1e-4, 1e-5, "logits");
        }
    }
}

TEST_CASE("s4d save then load gives identical logits") {
    AnyModel m{"s4d", nullptr, std::make_shared<S4DClassifier>(tiny(), 5)};
    const auto dir = scratch_dir("s4d_roundtrip");
    save_model(dir.string(), m);
    AnyModel loaded = load_model(dir.string());
    m.s4d->eval();
    loaded.s4d->eval();
    Tensor x = Tensor::randn({2, 7, 2}, 6);
    CHECK(loaded.s4d->forward(x).to_vector<float>() == m.s4d->forward(x).to_vector<float>());
    CHECK(read_json_file((dir / "config.json").string())["model_type"] == "s4d");
}

TEST_CASE("s4d config: an unknown field is an error that names it and the valid ones") {
    nlohmann::json j = tiny().to_json();
    CHECK(S4DConfig::from_json(j, "cfg").to_json() == j);
    j["n_layer"] = 6;  // a typo of n_layers used to build the default 4 layers silently
    CHECK_THROWS_WITH_AS(S4DConfig::from_json(j, "cfg"),
                         doctest::Contains("cfg: unknown S4D config field \"n_layer\"; valid: model_type, d_input"), Error);
    j.erase("n_layer");
    j["lr"] = 1e-3;  // example.py's S4D(lr=...) is an optimizer setting
    CHECK_THROWS_WITH_AS(S4DConfig::from_json(j, "cfg"), doctest::Contains("train.ssm_lr"), Error);
}

TEST_CASE("s4d dropout acts only in training mode") {
    S4DClassifier model(tiny(), 7);
    Tensor x = Tensor::randn({2, 5, 2}, 8);
    model.eval();
    CHECK(model.forward(x).to_vector<float>() == model.forward(x).to_vector<float>());
    model.train();
    CHECK(model.forward(x).to_vector<float>() != model.forward(x).to_vector<float>());
}

TEST_CASE("s4d learns to tell two frequencies apart") {
    S4DConfig c;
    c.d_input = 1;
    c.d_output = 2;
    c.d_model = 16;
    c.d_state = 8;
    c.n_layers = 2;
    c.dropout = 0.0;
    S4DClassifier model(c, 3);
    autograd::AdamW opt(model.parameters(), autograd::AdamW::Options().lr(1e-2).weight_decay(0.0));
    Generator gen(9);
    const int64_t B = 32, L = 32;
    double smoothed = 0;
    for (int step = 0; step < 120; ++step) {
        Tensor noise = Tensor::randn({B, L, 1}, gen, DType::F32, 0.0, 0.5);
        std::vector<float> x(static_cast<size_t>(B * L));
        std::vector<int64_t> y(static_cast<size_t>(B));
        for (int64_t b = 0; b < B; ++b) {
            y[size_t(b)] = int64_t(philox_uniform(gen.seed(), gen.advance(1)) * 2.0);
            const double f = y[size_t(b)] ? 0.6 : 0.2, phase = philox_uniform(gen.seed(), gen.advance(1)) * 6.28;
            for (int64_t t = 0; t < L; ++t) x[size_t(b * L + t)] = float(std::sin(f * double(t) + phase)) + noise.at({b, t, 0});
        }
        Tensor loss = model.loss(Tensor::from_vector<float>(x, {B, L, 1}), Tensor::from_vector<int64_t>(y, {B}));
        loss.backward();
        opt.step();
        opt.zero_grad();
        smoothed = step == 0 ? loss.item() : 0.9 * smoothed + 0.1 * loss.item();
    }
    MESSAGE("smoothed loss " << smoothed << " (chance " << std::log(2.0) << ")");
    CHECK(smoothed < 0.3 * std::log(2.0));
}
