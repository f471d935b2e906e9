// Parameter counts equal the formulas (LMConfig/S4DConfig::num_parameters), and a config.json that describes a far
// larger model than its weights hold is refused before anything is allocated.
#include "test_util.h"

#include <fstream>

#include "models/checkpoint.h"

using namespace ssmtune;
using namespace ssmtune::models;
using namespace ssmtune::testing;

TEST_CASE("model parameter counts equal the config formulas") {
    for (const char* type : {"mamba", "longhorn"}) {
        for (int variant = 0; variant < 3; ++variant) {
            LMConfig c;
            c.model_type = type;
            c.vocab_size = 37;
            c.hidden_size = 12;
            c.num_hidden_layers = 3;
            c.state_size = 5;
            c.intermediate_size = 20;
            c.conv_kernel = 3;
            c.time_step_rank = 2;
            c.use_bias = variant == 1;
            c.tie_word_embeddings = variant != 2;
            c.use_conv_bias = variant != 1;
            LanguageModel m(c, 1);
            INFO(type << " variant " << variant);
            CHECK(double(m.num_parameters()) == c.num_parameters());
        }
    }
    S4DConfig s;
    s.d_input = 3; s.d_output = 5; s.d_model = 6; s.d_state = 8; s.n_layers = 2;
    S4DClassifier m(s, 1);
    CHECK(double(m.num_parameters()) == s.num_parameters());
}

TEST_CASE("a config describing a much larger model than its weights is refused before allocation") {
    const auto dir = scratch_dir("huge_config");
    nlohmann::json cfg = {{"model_type", "mamba"}, {"vocab_size", 11}, {"hidden_size", 8}, {"num_hidden_layers", 1},
                          {"state_size", 4}, {"intermediate_size", 16}, {"time_step_rank", 1}};
    save_model(dir.string(), create_model(cfg, 1));
    cfg["hidden_size"] = 4000000;
    cfg["intermediate_size"] = 8000000;
    std::ofstream(dir / "config.json") << cfg.dump();
    CHECK_THROWS_WITH_AS(load_model(dir.string()), doctest::Contains("parameters but the weights in"), Error);
}
