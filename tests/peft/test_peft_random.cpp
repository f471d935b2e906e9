// PEFT on models of random sizes (seeded): for every method, on Mamba and Longhorn with odd widths (E not a multiple
// of the scan's 8 lanes, N = 1, 1-tap convolutions, D = 1) and random adapter values, the token-by-token recurrent
// mode equals the parallel forward, save -> load into a fresh base reproduces the outputs bit for bit, and a
// mergeable method's merged model equals the unmerged one. The numbers themselves are checked against PyTorch by
// tools/crosscheck (ctest torch_crosscheck_random); this covers the modes and paths that script does not run.
#include <random>

#include "tests/peft/peft_test_util.h"

using namespace ssmtune;
using namespace ssmtune::peft_test;
using nlohmann::json;

namespace {

// A Mamba or Longhorn config of random size drawn from `rng`.
models::LMConfig random_lm_config(std::mt19937_64& rng, const std::string& type) {
    auto pick = [&](int64_t lo, int64_t hi) { return lo + int64_t(rng() % uint64_t(hi - lo + 1)); };
    models::LMConfig c;
    c.model_type = type;
    c.hidden_size = pick(1, 12);
    c.expand = pick(1, 3);
    c.intermediate_size = pick(0, 1) ? pick(1, 70) : c.expand * c.hidden_size;
    c.state_size = pick(1, 9);
    c.conv_kernel = pick(1, 4);
    c.time_step_rank = pick(1, 3);
    c.vocab_size = pick(2, 20);
    c.num_hidden_layers = pick(1, 2);
    c.use_bias = pick(0, 1) == 1;
    c.use_conv_bias = pick(0, 1) == 1;
    c.tie_word_embeddings = pick(0, 1) == 1;
    return c;
}

// Every method, with the options that change its code path. "merge" says whether it folds into the weights.
struct MethodCase {
    json config;
    bool merge;
};
std::vector<MethodCase> method_cases(const models::LMConfig& c) {
    std::vector<MethodCase> out = {
        {{{"peft_type", "LORA"}, {"r", 3}, {"lora_alpha", 5}, {"target_modules", "all-linear"}}, true},
        {{{"peft_type", "LORA"}, {"r", 2}, {"use_rslora", true}, {"target_modules", {"embeddings", "in_proj", "dt_proj"}}}, true},
        {{{"peft_type", "LORA"}, {"r", 2}, {"use_dora", true}, {"target_modules", {"embeddings", "x_proj", "out_proj"}}}, true},
        {{{"peft_type", "LORA"}, {"r", 2}, {"bias", "all"}, {"lora_bias", true}, {"target_modules", {"dt_proj"}}}, true},
        {{{"peft_type", "LORA"}, {"r", 1}, {"layers_to_transform", {0}}, {"target_modules", {"in_proj", "out_proj"}},
          {"modules_to_save", {"dt_proj"}}}, true},
        {{{"peft_type", "STATE_OFFSET"}, {"variant", "h"}}, false},
        {{{"peft_type", "STATE_OFFSET"}, {"variant", "y"}}, false},
        {{{"peft_type", "STATE_OFFSET"}, {"r", 2}}, false},
        {{{"peft_type", "INITIAL_STATE"}, {"conv_init_state", c.conv_kernel > 1}}, false},
        {{{"peft_type", "PREFIX"}, {"num_virtual_tokens", 3}}, false},
        {{{"peft_type", "PROMPT"}, {"num_virtual_tokens", 2}}, false},
        {{{"peft_type", "PARALLEL_ADAPTER"}, {"r", 2}, {"activation", "gelu"}}, false},
        {{{"peft_type", "SURM"}, {"structure", "circulant"}}, true},
        {{{"peft_type", "SURM"}, {"structure", "ldr"}, {"mode", "adapter"}}, false},
        {{{"peft_type", "PARTIAL"}, {"param_names", {"conv1d", "D", "norm_f"}}}, true},
        {{{"peft_type", "BITFIT"}}, true},
    };
    json dims = c.model_type == "mamba" ? json{{"channels", {0}}, {"states", {{0}}}} : json{{"channels", {0}}};
    out.push_back({{{"peft_type", "SDLORA"}, {"r", 2}, {"layers_to_transform", {0}}, {"dimensions", {{"0", dims}}}}, true});
    if (c.model_type == "mamba") out.push_back({{{"peft_type", "ADDITIONAL_SCAN"}, {"d_state", 2}}, false});
    return out;
}

}  // namespace

TEST_CASE("peft random sizes: step mode = parallel forward, save/load round trip, merged = unmerged") {
    int trials = 0;
    for (uint64_t seed = 0; seed < 24; ++seed) {
        std::mt19937_64 rng(seed);
        const models::LMConfig c = random_lm_config(rng, seed % 2 ? "longhorn" : "mamba");
        const auto cases = method_cases(c);
        for (size_t m = 0; m < cases.size(); ++m) {
            if ((seed + m) % 3 != 0) continue;  // a third of the pairs: every method meets 8 random sizes
            const json& config = cases[m].config;
            INFO("seed " << seed << " " << c.model_type << " D=" << c.hidden_size << " E=" << c.intermediate_size
                         << " N=" << c.state_size << " K=" << c.conv_kernel << " R=" << c.time_step_rank
                         << " V=" << c.vocab_size << " layers=" << c.num_hidden_layers << " " << config.dump());
            auto make = [&] {
                Subject s;
                s.kind = c.model_type;
                s.any.model_type = c.model_type;
                s.any.lm = std::make_shared<models::LanguageModel>(c, seed + 1);
                s.module().to(DType::F64);
                s.module().eval();
                std::vector<int64_t> ids;
                const int64_t B = 1 + int64_t(seed % 2), L = 1 + int64_t((seed * 7 + m) % 19);
                for (int64_t i = 0; i < B * L; ++i) ids.push_back(int64_t((seed * 31 + m * 7 + uint64_t(i) * 13) % uint64_t(c.vocab_size)));
                s.ids = Tensor::from_vector<int64_t>(ids, {B, L});
                return s;
            };
            Subject s = make();
            peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(config));
            randomize(a, 100 * seed + m);
            check_lm_recurrent(s, 1e-10);
            const Tensor adapted = s.output().detach();
            const auto dir = testing::scratch_dir("peft_random_" + std::to_string(seed) + "_" + std::to_string(m));
            a.save(dir.string());
            {
                Subject fresh = make();
                peft::Adapter loaded = peft::load(fresh.module(), dir.string());
                CHECK(bit_equal(fresh.output(), adapted));
            }
            if (cases[m].merge) {
                REQUIRE(a.merge_refusal().empty());
                a.merge();
                testing::expect_close(s.output(), adapted, 0.0, 1e-10, "merged");
            }
            ++trials;
        }
    }
    CHECK(trials >= 100);
}

TEST_CASE("peft random sizes, LoRA adapters active together: step mode = parallel forward, sum of plain ones = merged = cat") {
    for (uint64_t seed = 100; seed < 112; ++seed) {
        std::mt19937_64 rng(seed);
        const models::LMConfig c = random_lm_config(rng, seed % 2 ? "longhorn" : "mamba");
        INFO("seed " << seed << " " << c.model_type << " D=" << c.hidden_size << " E=" << c.intermediate_size
                     << " N=" << c.state_size << " K=" << c.conv_kernel << " R=" << c.time_step_rank);
        Subject s;
        s.kind = c.model_type;
        s.any.model_type = c.model_type;
        s.any.lm = std::make_shared<models::LanguageModel>(c, seed);
        s.module().to(DType::F64);
        s.module().eval();
        s.ids = Tensor::from_vector<int64_t>({0, 1 % c.vocab_size, 5 % c.vocab_size, 3 % c.vocab_size, 2 % c.vocab_size}, {1, 5});
        peft::AdapterSet set(s.module());
        const std::vector<std::pair<const char*, json>> adapters = {
            {"pissa", {{"peft_type", "LORA"}, {"r", 1}, {"init_lora_weights", "pissa"}, {"target_modules", {"in_proj", "out_proj"}}}},
            {"all", {{"peft_type", "LORA"}, {"r", 3}, {"lora_alpha", 5}, {"target_modules", "all-linear"}}},
            {"rs", {{"peft_type", "LORA"}, {"r", 2}, {"use_rslora", true}, {"lora_bias", seed % 3 == 0},
                    {"target_modules", {"in_proj", "dt_proj"}}}},
            {"dora", {{"peft_type", "LORA"}, {"r", 2}, {"use_dora", true}, {"target_modules", {"embeddings", "x_proj", "out_proj"}}}},
        };
        for (size_t i = 0; i < adapters.size(); ++i) randomize(set.add(adapters[i].first, peft::Config::from_json(adapters[i].second)), seed * 10 + i);
        set.set_active({"pissa", "all", "rs", "dora"});
        check_lm_recurrent(s, 1e-10);
        // LoRA on a state parameter beside trainable tokens (their own adapters): the step mode agrees too
        randomize(set.add("params", peft::Config::from_json({{"peft_type", "LORA"}, {"r", 2}, {"target_modules", json::array()},
                                                             {"target_parameters", {c.model_type == "mamba" ? "A_log" : "x_proj.weight"}},
                                                             {"trainable_token_indices", {int64_t(seed) % c.vocab_size}}})), seed);
        set.set_active("params");
        check_lm_recurrent(s, 1e-10);
        set.set_active({"all", "rs"});
        check_lm_recurrent(s, 1e-10);
        const Tensor both = s.output().detach();
        if (!adapters[2].second["lora_bias"].get<bool>()) {  // combined exactly by cat (lora_bias does not combine)
            peft::WeightedAdapterOptions cat;
            cat.combination_type = "cat";
            set.add_weighted_adapter({"all", "rs"}, {1.0, 1.0}, "cat", cat);
            set.set_active("cat");
            testing::expect_close(s.output(), both, 0.0, 1e-10, "cat of the pair");
            set.set_active({"all", "rs"});
        }
        if (!adapters[2].second["lora_bias"].get<bool>() || c.use_bias) {  // lora_bias merges into a bias only
            set.get("all").merge();
            set.get("rs").merge();
            testing::expect_close(s.output(), both, 0.0, 1e-10, "both merged");
        }
    }
}

TEST_CASE("peft random sizes, S4D: recurrent = convolution, save/load round trip, merged = unmerged") {
    int trials = 0;
    for (uint64_t seed = 0; seed < 16; ++seed) {
        std::mt19937_64 rng(1000 + seed);
        auto pick = [&](int64_t lo, int64_t hi) { return lo + int64_t(rng() % uint64_t(hi - lo + 1)); };
        models::S4DConfig c;
        c.d_input = pick(1, 4);
        c.d_output = pick(2, 5);
        c.d_model = pick(1, 10);
        c.d_state = 2 * pick(1, 6);
        c.n_layers = pick(1, 2);
        c.prenorm = pick(0, 1) == 1;
        c.discretization = pick(0, 1) ? "zoh" : "bilinear";
        c.dropout = 0.0;
        const std::vector<std::pair<json, bool>> cases = {
            {{{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 3}}, true},
            {{{"peft_type", "LORA"}, {"r", 2}, {"use_dora", true}}, true},
            {{{"peft_type", "LORA"}, {"r", 3}, {"bias", "lora_only"}, {"lora_bias", true}}, true},
            {{{"peft_type", "STATE_OFFSET"}, {"variant", "h"}}, false},
            {{{"peft_type", "STATE_OFFSET"}, {"variant", "y"}}, false},
            {{{"peft_type", "STATE_OFFSET"}, {"r", 2}}, false},
            {{{"peft_type", "INITIAL_STATE"}}, false},
            {{{"peft_type", "PARALLEL_ADAPTER"}, {"r", 2}}, false},
            {{{"peft_type", "SURM"}, {"structure", "circulant"}}, true},
            {{{"peft_type", "PARTIAL"}, {"param_names", {"kernel", "norms"}}}, true},
            {{{"peft_type", "BITFIT"}}, true},
            {{{"peft_type", "SDLORA"}, {"r", 2}, {"layers_to_transform", {0}},
              {"dimensions", {{"0", {{"channels", {0}}, {"states", {{0}}}}}}}}, true},
        };
        for (size_t m = 0; m < cases.size(); ++m) {
            if ((seed + m) % 2 != 0) continue;  // half the pairs: every method meets 8 random sizes
            const json& config = cases[m].first;
            INFO("seed " << seed << " H=" << c.d_model << " N=" << c.d_state << " layers=" << c.n_layers << " "
                         << (c.prenorm ? "prenorm " : "postnorm ") << c.discretization << " " << config.dump());
            const int64_t B = pick(1, 2), L = pick(1, 12);
            const Tensor x = Tensor::randn({B, L, c.d_input}, seed * 13 + m, DType::F64);
            auto make = [&] {
                auto model = std::make_shared<models::S4DClassifier>(c, seed + 1);
                model->to(DType::F64);
                model->eval();
                return model;
            };
            auto model = make();
            peft::Adapter a = peft::apply(*model, peft::Config::from_json(config));
            randomize(a, 100 * seed + m);
            const Tensor adapted = model->forward(x).detach();
            {
                autograd::NoGradGuard no_grad;
                testing::expect_close(model->forward_recurrent(x), adapted, 0.0, 1e-10, "recurrent");
            }
            const auto dir = testing::scratch_dir("peft_random_s4d_" + std::to_string(seed) + "_" + std::to_string(m));
            a.save(dir.string());
            {
                auto fresh = make();
                peft::Adapter loaded = peft::load(*fresh, dir.string());
                CHECK(bit_equal(fresh->forward(x), adapted));
            }
            if (cases[m].second) {
                REQUIRE(a.merge_refusal().empty());
                a.merge();
                testing::expect_close(model->forward(x), adapted, 0.0, 1e-10, "merged");
            }
            ++trials;
        }
    }
    CHECK(trials >= 90);
}
