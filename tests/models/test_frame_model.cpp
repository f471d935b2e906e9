// Mamba and Longhorn frame models (config input_size > 0): real-valued frames through backbone.encoder, a class
// head read at the last frame. Names and counts, config round trip, causality, float64 gradients of the
// classification loss, save/load, and the token-only paths refusing cleanly.
#include "test_util.h"
#include "tests/models/tiny_models.h"

#include "models/checkpoint.h"
#include "ops/ops.h"

using namespace ssmtune;
using namespace ssmtune::models;
using namespace ssmtune::testing;

namespace {

LMConfig tiny_frame_config(const std::string& type) {
    LMConfig c = tiny_lm_config(type);
    c.input_size = 3;
    c.vocab_size = 4;  // classes
    c.tie_word_embeddings = false;
    return c;
}

Tensor tiny_frames(DType dtype = DType::F32) { return Tensor::randn({2, 6, 3}, 11, dtype); }

}  // namespace

TEST_CASE("frame model: encoder in place of the embedding, untied head, parameter count, config round trip") {
    for (const char* type : {"mamba", "longhorn"}) {
        INFO(type);
        const LMConfig c = tiny_frame_config(type);
        LanguageModel model(c, 1);
        auto sd = model.state_dict();
        CHECK(sd.count("backbone.embeddings.weight") == 0);
        CHECK(sd.at("backbone.encoder.weight").shape() == Shape{c.hidden_size, 3});
        CHECK(sd.at("backbone.encoder.bias").shape() == Shape{c.hidden_size});
        CHECK(sd.at("lm_head.weight").shape() == Shape{4, c.hidden_size});
        CHECK(double(model.num_parameters()) == c.num_parameters());
        const nlohmann::json j = c.to_json();
        CHECK(j["input_size"] == 3);
        CHECK(j["architectures"][0].get<std::string>().find("ForFrameClassification") != std::string::npos);
        CHECK(model.type_name().find("ForFrameClassification") != std::string::npos);
        const LMConfig back = LMConfig::from_json(j);
        CHECK(back.input_size == 3);
        CHECK_FALSE(back.tie_word_embeddings);
        // input_size without a tie flag unties by default; asking for a tied head is an error naming the field
        nlohmann::json k = {{"model_type", type}, {"input_size", 3}, {"vocab_size", 4}};
        CHECK_FALSE(LMConfig::from_json(k).tie_word_embeddings);
        k["tie_word_embeddings"] = true;
        CHECK_THROWS_WITH_AS(LMConfig::from_json(k), doctest::Contains("tie_word_embeddings"), Error);
        k["tie_word_embeddings"] = false;
        k["input_size"] = -1;
        CHECK_THROWS_WITH_AS(LMConfig::from_json(k), doctest::Contains("input_size"), Error);
        // token models keep their config.json unchanged
        CHECK_FALSE(tiny_lm_config(type).to_json().contains("input_size"));
    }
}

TEST_CASE("frame model: causal logits, classification at the last frame, token-only paths refuse") {
    LanguageModel model(tiny_frame_config("mamba"), 2);
    model.eval();
    Tensor x = tiny_frames();
    Tensor logits = model.forward_frames(x);  // [B, L, V]
    REQUIRE(logits.shape() == Shape{2, 6, 4});
    CHECK(model.classify_frames(x).to_vector<float>() == logits.select(1, 5).to_vector<float>());
    // changing the frames after t leaves logits[:, :t+1] unchanged
    std::vector<float> v = x.to_vector<float>();
    for (size_t i = 3 * 3; i < 6 * 3; ++i) v[i] += 1.5f;  // batch 0, frames 3..5
    Tensor x2 = Tensor::from_vector<float>(v, {2, 6, 3});
    Tensor logits2 = model.forward_frames(x2);
    CHECK(logits2.narrow(1, 0, 3).to_vector<float>() == logits.narrow(1, 0, 3).to_vector<float>());
    CHECK(logits2.select(1, 5).to_vector<float>() != logits.select(1, 5).to_vector<float>());
    CHECK_THROWS_WITH_AS(model.forward(tiny_ids()), doctest::Contains("real-valued frames"), Error);
    CHECK_THROWS_WITH_AS(model.generate({1, 2}, {}), doctest::Contains("real-valued frames"), Error);
    CHECK_THROWS_WITH_AS(model.forward_frames(Tensor::zeros({2, 6, 5})), doctest::Contains("F=3"), Error);
    LanguageModel tokens(tiny_lm_config("mamba"), 2);
    CHECK_THROWS_WITH_AS(tokens.forward_frames(x), doctest::Contains("no frame encoder"), Error);
}

TEST_CASE("frame model: float64 gradients of the classification loss match finite differences") {
    for (const char* type : {"mamba", "longhorn"}) {
        INFO(type);
        LanguageModel model(tiny_frame_config(type), 3);
        model.to(DType::F64);
        model.eval();
        Tensor x = rand_input({2, 5, 3}, 4);
        Tensor y = Tensor::from_vector<int64_t>({1, 3}, {2});
        std::vector<Tensor> inputs{x};
        for (const char* name : {"backbone.encoder.weight", "backbone.encoder.bias", "lm_head.weight",
                                 "backbone.layers.0.mixer.in_proj.weight"})
            inputs.push_back(*model.find_parameter(name));
        autograd::GradcheckOptions o;
        o.max_checked_per_input = 12;
        expect_gradcheck([&](const std::vector<Tensor>&) { return ops::cross_entropy(model.classify_frames(x), y); },
                         inputs, o);
    }
}

TEST_CASE("frame model: save then load gives identical logits, a config that disagrees names input_size") {
    auto lm = std::make_shared<LanguageModel>(tiny_frame_config("longhorn"), 5);
    AnyModel any{"longhorn", lm, nullptr};
    const auto dir = scratch_dir("frame_model_roundtrip");
    save_model(dir.string(), any);
    AnyModel loaded = load_model(dir.string());
    REQUIRE(loaded.lm->reads_frames());
    Tensor x = tiny_frames();
    CHECK(loaded.lm->forward_frames(x).to_vector<float>() == lm->forward_frames(x).to_vector<float>());
    nlohmann::json cfg = read_json_file((dir / "config.json").string());
    cfg["input_size"] = 7;
    write_json_file((dir / "config.json").string(), cfg);
    CHECK_THROWS_WITH_AS(load_model(dir.string()), doctest::Contains("input_size"), Error);
}
