// Loading a model directory one tensor at a time (models::ModelWeights over engine/tensor_file.h): CPU storage peaks at
// the model plus one tensor where reading the whole file first holds both (safetensors and .bin); the loaded values
// are the file's; names, counts, renames and drops; a strict load names every problem before it reads anything; a
// float64 weight beyond float32's range is refused; and load_model builds the model without paying for its random
// initialisation (SkipRandomInit), leaving the same values and generators as create_model + load_state_dict.
#include "test_util.h"

#include <fstream>

#include "engine/storage.h"
#include "engine/torch_checkpoint.h"
#include "models/checkpoint.h"
#include "tests/models/tiny_models.h"

using namespace ssmtune;
using namespace ssmtune::testing;
using namespace ssmtune::models;

namespace {

// A Mamba large enough that a second copy of its weights stands out from the loader's small allocations.
AnyModel medium_mamba(uint64_t seed) {
    LMConfig c = tiny_lm_config();
    c.vocab_size = 500;
    c.hidden_size = 64;
    c.intermediate_size = 128;
    c.state_size = 16;
    c.time_step_rank = 4;
    AnyModel m;
    m.model_type = "mamba";
    m.lm = std::make_shared<LanguageModel>(c, seed);
    return m;
}

struct Sizes {
    size_t total = 0, largest = 0;
};
Sizes weight_sizes(const Module& m) {
    Sizes s;
    for (const auto& [name, t] : m.state_dict()) {
        const size_t bytes = size_t(t.numel()) * dtype_size(t.dtype());
        s.total += bytes;
        s.largest = std::max(s.largest, bytes);
    }
    return s;
}

// The peak of CPU storage in use while `fn` runs, above what was in use before it.
template <class Fn>
size_t peak_storage_during(Fn&& fn) {
    const size_t before = cpu_bytes_in_use();
    reset_cpu_peak_bytes();
    fn();
    return cpu_peak_bytes() - before;
}

}  // namespace

TEST_CASE("load_model holds the model and one tensor of the file, not the file's tensors beside the model") {
    const AnyModel original = medium_mamba(3);
    const Sizes sizes = weight_sizes(original.module());
    const auto dir = scratch_dir("weights_peak");
    save_model(dir.string(), original);
    // (the embedding is a third of the model here; the init's own float64 temporaries take a few kB)
    const size_t bound = sizes.total + sizes.largest / 2;
    AnyModel loaded;
    const size_t peak = peak_storage_during([&] { loaded = load_model(dir.string()); });
    CAPTURE(peak);
    CAPTURE(sizes.total);
    CHECK(peak <= bound);
    expect_same_tensors(loaded.module().state_dict(), original.module().state_dict());
    // the control: a model built, then the whole file read and copied in, as loading did until 2026-12-07
    const size_t whole_file = peak_storage_during([&] {
        AnyModel fresh = create_model(original.lm->config().to_json(), 0);
        fresh.module().load_state_dict(read_model_tensors(dir.string()), true, dir.string());
    });
    CAPTURE(whole_file);
    CHECK(whole_file >= sizes.total * 2);
    // a PyTorch checkpoint (pytorch_model.bin) takes no more storage than its safetensors twin: its storages are copied
    // out of the mapped file straight into the parameters
    const auto fixtures = std::filesystem::path(SSMTUNE_SOURCE_DIR) / "tests/engine/torch_checkpoints";
    const size_t from_safetensors = peak_storage_during([&] { load_model((fixtures / "tiny_mamba_safetensors").string()); });
    const size_t from_bin = peak_storage_during([&] { loaded = load_model((fixtures / "tiny_mamba_bin").string()); });
    CAPTURE(from_bin);
    CHECK(from_bin <= from_safetensors);
    // the tied lm_head.weight the file holds is the embedding: the same values
    CHECK(read_model_tensors((fixtures / "tiny_mamba_bin").string()).at("lm_head.weight").to_vector<float>() ==
          loaded.lm->embeddings().weight().to_vector<float>());
}

TEST_CASE("ModelWeights: names and shapes, count, rename, drop, read, and a strict load that reads nothing first") {
    const AnyModel original = medium_mamba(4);
    const auto dir = scratch_dir("weights_api");
    save_model(dir.string(), original);
    ModelWeights weights(dir.string());
    CHECK(weights.dir() == dir.string());
    const TensorMap state = original.module().state_dict();
    CHECK(weights.shapes().size() == state.size());
    double count = 0;
    for (const auto& entry : state) {
        CHECK(weights.shapes().at(entry.first) == entry.second.shape());
        count += double(entry.second.numel());
    }
    CHECK(weights.element_count() == count);
    CHECK(raw_bytes(weights.read("backbone.norm_f.weight")) == raw_bytes(state.at("backbone.norm_f.weight")));
    CHECK_THROWS_WITH_AS(weights.read("nope"), doctest::Contains("holds no tensor named nope"), Error);
    CHECK_THROWS_WITH_AS(weights.rename("backbone.norm_f.weight", "backbone.embeddings.weight"),
                         doctest::Contains("name one tensor"), Error);
    weights.rename("backbone.norm_f.weight", "final_norm");
    CHECK(weights.shapes().count("final_norm") == 1);
    CHECK(weights.shapes().count("backbone.norm_f.weight") == 0);
    weights.drop("backbone.layers.1.mixer.D");
    // strict: every problem in one Error, and no parameter read before it
    AnyModel target = medium_mamba(5);
    const Tensor before = target.lm->embeddings().weight().clone();
    const std::string error = error_of([&] { weights.load_into(target.module()); });
    CHECK(error.find("missing: backbone.layers.1.mixer.D backbone.norm_f.weight") != std::string::npos);
    CHECK(error.find("unexpected: final_norm") != std::string::npos);
    CHECK(raw_bytes(target.lm->embeddings().weight()) == raw_bytes(before));
    weights.rename("final_norm", "backbone.norm_f.weight");
    ModelWeights whole(dir.string());
    whole.load_into(target.module());
    expect_same_tensors(target.module().state_dict(), state);
}

TEST_CASE("load_model converts weights of another dtype and refuses a float64 value beyond float32's range") {
    const AnyModel original = medium_mamba(6);
    const auto dir = scratch_dir("weights_f64");
    save_model(dir.string(), original);
    const std::string file = (dir / "model.safetensors").string();
    TensorMap w = load_safetensors(file);
    for (auto& entry : w) entry.second = entry.second.to(DType::F64);
    save_safetensors(file, w);
    AnyModel loaded = load_model(dir.string());
    expect_same_tensors(loaded.module().state_dict(), original.module().state_dict());
    w.at("backbone.layers.0.mixer.D").data<double>()[3] = 1e300;  // finite in float64, inf in float32
    save_safetensors(file, w);
    const std::string error = error_of([&] { load_model(dir.string()); });
    CHECK(error.find("backbone.layers.0.mixer.D converted to F32 holds a non-finite value (inf)") != std::string::npos);
    w.at("backbone.layers.0.mixer.D").data<double>()[3] = std::nan("");
    save_safetensors(file, w);
    CHECK(error_of([&] { load_model(dir.string()); }).find("backbone.layers.0.mixer.D holds a non-finite value") !=
          std::string::npos);
}

TEST_CASE("load_model skips the random initialisation: the same model as a seeded one loaded with load_state_dict") {
    const auto dir = scratch_dir("weights_skip_init");
    AnyModel s4d;
    s4d.model_type = "s4d";
    S4DConfig c = tiny_s4d_config();
    c.dropout = 0.25;  // a dropout generator, drawn from after the weights
    s4d.s4d = std::make_shared<S4DClassifier>(c, 8);
    save_model(dir.string(), s4d);
    for (const std::string& at : {std::string("s4d"), std::string("mamba")}) {
        CAPTURE(at);
        AnyModel source = s4d;
        if (at == "mamba") {
            source = medium_mamba(9);
            save_model(dir.string(), source);
        }
        const nlohmann::json config = read_json_file((dir / "config.json").string());
        AnyModel seeded = create_model(config, 0);
        seeded.module().load_state_dict(read_model_tensors(dir.string()), true, dir.string());
        const AnyModel loaded = load_model(dir.string());
        expect_same_tensors(loaded.module().state_dict(), seeded.module().state_dict());
        const std::vector<Generator*> a = training_generators(loaded.module()), b = training_generators(seeded.module());
        REQUIRE(a.size() == b.size());
        for (size_t i = 0; i < a.size(); ++i) {
            CHECK(a[i]->seed() == b[i]->seed());
            CHECK(a[i]->offset() == b[i]->offset());
        }
    }
}
