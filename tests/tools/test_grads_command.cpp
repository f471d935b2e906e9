// `ssmtune grads`: happy paths for a language model (f32, f64), the S4D classifier and a frame model, and bad inputs that must
// give exit status 1 and leave no output file.
#include "test_util.h"
#include "tests/tools/cli_test_util.h"

#include "engine/safetensors.h"
#include "models/checkpoint.h"
#include "ops/ops.h"
#include "tools/commands.h"

using namespace ssmtune;
using namespace ssmtune::testing;
using namespace ssmtune::models;

namespace {

LMConfig small_lm_config() {
    LMConfig c;
    c.vocab_size = 13;
    c.hidden_size = 8;
    c.num_hidden_layers = 2;
    c.state_size = 4;
    c.intermediate_size = 16;
    c.time_step_rank = 1;
    return c;
}

std::string make_lm_dir(const std::filesystem::path& dir) {
    save_model(dir.string(), AnyModel{"mamba", std::make_shared<LanguageModel>(small_lm_config(), 1), nullptr});
    return dir.string();
}

}  // namespace

TEST_CASE("grads writes loss logits and every parameter gradient of a language model") {
    const auto dir = scratch_dir("grads_lm");
    const std::string model = make_lm_dir(dir / "model"), batch = (dir / "batch.safetensors").string(),
                      out = (dir / "out.safetensors").string();
    save_safetensors(batch, {{"input_ids", Tensor::from_vector<int32_t>({1, 2, 3, 4, 5, 6, 7, 12}, {2, 4})}});
    for (const char* dtype : {"f32", "f64"}) {
        REQUIRE(cli({"grads", "--model", model, "--batch", batch, "--out", out, "--dtype", dtype}) == 0);
        TensorMap r = load_safetensors(out);
        CHECK(r.at("loss").dim() == 0);
        CHECK(r.at("logits").shape() == Shape{2, 4, 13});
        CHECK(r.at("loss").dtype() == (std::string(dtype) == "f64" ? DType::F64 : DType::F32));
        AnyModel m = load_model(model);
        for (auto& named : m.module().named_parameters()) {
            const std::string& name = named.first;  // not a structured binding: REQUIRE_MESSAGE captures it
            REQUIRE_MESSAGE(r.count(name) == 1, name);
            CHECK(r.at(name).shape() == named.second.shape());
        }
        // the loss is the model's own mean next-token loss
        Tensor ids = load_safetensors(batch).at("input_ids");
        CHECK(r.at("loss").item() == doctest::Approx(m.lm->loss(ids).item()).epsilon(1e-5));
    }
}

TEST_CASE("grads runs the S4D classifier on inputs and labels") {
    const auto dir = scratch_dir("grads_s4d");
    S4DConfig c;
    c.d_input = 2;
    c.d_output = 3;
    c.d_model = 4;
    c.d_state = 4;
    c.n_layers = 1;
    save_model((dir / "model").string(), AnyModel{"s4d", nullptr, std::make_shared<S4DClassifier>(c, 2)});
    const std::string batch = (dir / "batch.safetensors").string(), out = (dir / "out.safetensors").string();
    save_safetensors(batch, {{"inputs", Tensor::randn({2, 5, 2}, 3)}, {"labels", Tensor::from_vector<int64_t>({0, 2}, {2})}});
    REQUIRE(cli({"grads", "--model", (dir / "model").string(), "--batch", batch, "--out", out}) == 0);
    TensorMap r = load_safetensors(out);
    CHECK(r.at("logits").shape() == Shape{2, 3});
    CHECK(r.count("s4_layers.0.kernel.log_dt") == 1);
}

TEST_CASE("grads runs a frame model on frames and labels, classified at the last frame") {
    const auto dir = scratch_dir("grads_frames");
    LMConfig c = small_lm_config();
    c.vocab_size = 5;  // classes
    c.num_hidden_layers = 1;
    c.input_size = 3;
    c.tie_word_embeddings = false;
    auto lm = std::make_shared<LanguageModel>(c, 4);
    save_model((dir / "model").string(), AnyModel{"mamba", lm, nullptr});
    const std::string batch = (dir / "batch.safetensors").string(), out = (dir / "out.safetensors").string();
    Tensor frames = Tensor::randn({2, 6, 3}, 5), labels = Tensor::from_vector<int64_t>({4, 1}, {2});
    save_safetensors(batch, {{"inputs", frames}, {"labels", labels}});
    REQUIRE(cli({"grads", "--model", (dir / "model").string(), "--batch", batch, "--out", out}) == 0);
    TensorMap r = load_safetensors(out);
    CHECK(r.at("logits").shape() == Shape{2, 5});
    CHECK(r.at("logits").to_vector<float>() == lm->classify_frames(frames).to_vector<float>());
    CHECK(r.count("backbone.encoder.weight") == 1);
    CHECK(r.at("loss").item() == doctest::Approx(ops::cross_entropy(lm->classify_frames(frames), labels).item()));
    // token ids instead of frames, and a frame width the model does not take, are one-line errors
    save_safetensors(batch, {{"input_ids", Tensor::from_vector<int64_t>({1, 2}, {1, 2})}});
    CHECK(cli({"grads", "--model", (dir / "model").string(), "--batch", batch, "--out", (dir / "x").string()}) == 1);
    save_safetensors(batch, {{"inputs", Tensor::randn({2, 6, 4}, 5)}, {"labels", labels}});
    CHECK(cli({"grads", "--model", (dir / "model").string(), "--batch", batch, "--out", (dir / "x").string()}) == 1);
    CHECK_FALSE(std::filesystem::exists(dir / "x"));
}

TEST_CASE("grads rejects bad input with exit 1 and writes nothing") {
    const auto dir = scratch_dir("grads_bad");
    const std::string model = make_lm_dir(dir / "model"), out = (dir / "out.safetensors").string();
    const auto batch_with = [&](const std::string& name, const TensorMap& tensors) {
        const std::string path = (dir / name).string();
        save_safetensors(path, tensors);
        return path;
    };
    const std::string out_of_range = batch_with("oor.safetensors", {{"input_ids", Tensor::from_vector<int64_t>({1, 13}, {1, 2})}});
    const std::string wrong_name = batch_with("name.safetensors", {{"tokens", Tensor::from_vector<int64_t>({1, 2}, {1, 2})}});
    const std::string float_ids = batch_with("float.safetensors", {{"input_ids", Tensor::zeros({1, 3})}});
    const std::string short_seq = batch_with("short.safetensors", {{"input_ids", Tensor::from_vector<int64_t>({1}, {1, 1})}});
    for (const std::string& batch : {out_of_range, wrong_name, float_ids, short_seq, (dir / "missing.safetensors").string()}) {
        INFO(batch);
        CHECK(cli({"grads", "--model", model, "--batch", batch, "--out", out}) == 1);
        CHECK_FALSE(std::filesystem::exists(out));
    }
    // unknown model type, missing model dir, missing flags, bad dtype
    std::filesystem::create_directories(dir / "weird");
    write_json_file((dir / "weird" / "config.json").string(), {{"model_type", "transformer"}});
    CHECK(cli({"grads", "--model", (dir / "weird").string(), "--batch", out_of_range, "--out", out}) == 1);
    CHECK(cli({"grads", "--model", (dir / "nowhere").string(), "--batch", out_of_range, "--out", out}) == 1);
    CHECK(cli({"grads", "--model", model, "--batch", out_of_range}) == 2);
    CHECK(cli({"grads", "--model", model, "--batch", out_of_range, "--out", out, "--dtype", "f16"}) == 2);
    CHECK_FALSE(std::filesystem::exists(out));
}
