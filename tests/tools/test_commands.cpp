// inspect, generate and gradcheck: happy paths on tiny models and their bad-input cases (exit 1 with an error line
// for bad data, exit 2 for usage mistakes), and --help for each.
#include "test_util.h"
#include "tests/tools/cli_test_util.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "cuda/runtime.h"
#include "models/checkpoint.h"
#include "peft/peft.h"
#include "tools/commands.h"
#include "tools/run_config.h"
#include "tools/workload.h"
#include "tools/data/synthetic.h"

using namespace ssmtune;
namespace fs = std::filesystem;
using namespace ssmtune::testing;

namespace {

std::string byte_lm(const std::filesystem::path& dir) {
    nlohmann::json cfg = {{"model_type", "mamba"}, {"vocab_size", 256}, {"hidden_size", 8}, {"num_hidden_layers", 1},
                          {"state_size", 4}, {"intermediate_size", 16}, {"time_step_rank", 1}};
    models::save_model(dir.string(), models::create_model(cfg, 1));
    return dir.string();
}
}  // namespace

TEST_CASE("commands: inspect, generate and gradcheck") {
    const auto dir = scratch_dir("commands");
    const std::string model = byte_lm(dir / "lm");
    CHECK(cli({"inspect", "--model", model}) == 0);
    CHECK(cli({"inspect", "--model", model, "--peft", R"({"peft_type": "LORA", "r": 2})"}) == 0);
    CHECK(cli({"inspect", "--model", model, "--peft", R"({"peft_type": "LORA", "target_modules": ["nope"]})"}) == 1);
    CHECK(cli({"inspect", "--model", (dir / "missing").string()}) == 1);
    CHECK(cli({"generate", "--model", model, "--prompt", "ab", "--max-new-tokens", "5"}) == 0);
    CHECK(cli({"generate", "--model", model, "--ids", "1,2,3", "--temperature", "0.8", "--top-k", "5", "--seed", "3"}) == 0);
    CHECK(cli({"generate", "--model", model, "--ids", "1,x"}) == 2);
    CHECK(cli({"generate", "--model", model, "--ids", "999"}) == 1);
    CHECK(cli({"generate", "--model", model}) == 2);
    // a negative seed used to wrap around to 2^64 − 5; nan / inf numbers reached configs as null
    CHECK(cli({"generate", "--model", model, "--ids", "1", "--seed", "-5"}) == 2);
    CHECK(cli({"generate", "--model", model, "--ids", "1", "--temperature", "nan"}) == 2);
    CHECK(cli({"train", "--steps", "1", "--lr", "inf", "--quiet"}) == 2);
    CHECK(cli({"train", "--steps", "1", "--seed", "-1", "--quiet"}) == 2);
    // a model field no config defines (a typo) is named in a warning; the run goes on with the default
    std::ofstream(dir / "typo.json") << R"({"model": {"model_type": "mamba", "vocab_size": 10, "hidden_size": 8,
        "num_hidden_layer": 1, "state_size": 4}, "train": {"steps": 1, "batch_size": 2, "eval_batches": 1}})";
    const auto typo = cli_captured({"train", "--config", (dir / "typo.json").string(), "--out", (dir / "typo").string(),
                                    "--quiet"}, 2);
    CHECK(typo.first == 0);
    CHECK(typo.second.find("warning: model config field(s) \"num_hidden_layer\" are not read") != std::string::npos);
    CHECK(cli({"gradcheck", "--op", "selective_scan"}) == 0);
    CHECK(cli({"gradcheck", "--model-type", "longhorn", "--max-per-tensor", "3"}) == 0);
    CHECK(cli({"gradcheck", "--model", model, "--max-per-tensor", "2"}) == 0);
    CHECK(cli({"gradcheck", "--op", "nope"}) == 2);
    CHECK(cli({"gradcheck"}) == 2);
    // a deliberately loose finite difference fails and says so with exit 1
    const auto loose = cli_captured({"gradcheck", "--op", "gelu", "--eps", "0.5", "--atol", "1e-12", "--rtol", "1e-12"}, 2);
    CHECK(loose.first == 1);
    CHECK(loose.second.rfind("error: gradcheck of op gelu: ", 0) == 0);
    CHECK(std::count(loose.second.begin(), loose.second.end(), '\n') == 1);
    CHECK(cli({"gradcheck", "--op", "gelu", "--eps", "-1"}) == 2);  // a step must be positive
    CHECK(cli({"gradcheck", "--op", "gelu", "--rtol", "-1"}) == 2);
    CHECK(cli({"study", "--model", model, "--data", model + "/config.json", "--seq-len", "12", "--batch-size", "2", "--out",
               (dir / "study").string()}) == 0);
    for (const char* f : {"reach.csv", "reach.svg", "alog_grad.csv", "alog_grad.svg", "channel_grad.csv", "lora_grads.csv"})
        CHECK(std::filesystem::exists(dir / "study" / f));
    CHECK(cli({"study", "--model", model}) == 2);
    // a Longhorn study (no A_log, so no A_log plot) into the Mamba study's --out leaves no stale alog_grad.svg
    nlohmann::json longhorn = {{"model_type", "longhorn"}, {"vocab_size", 256}, {"hidden_size", 8},
                               {"num_hidden_layers", 1}, {"state_size", 4}, {"intermediate_size", 16}};
    models::save_model((dir / "longhorn").string(), models::create_model(longhorn, 1));
    CHECK(cli({"study", "--model", (dir / "longhorn").string(), "--data", model + "/config.json", "--seq-len", "12",
               "--batch-size", "2", "--out", (dir / "study").string()}) == 0);
    CHECK(std::filesystem::exists(dir / "study" / "reach.svg"));
    CHECK_FALSE(std::filesystem::exists(dir / "study" / "alog_grad.svg"));
    for (const char* c : {"inspect", "generate", "gradcheck", "merge", "plot", "grads", "study"}) CHECK(cli({c, "--help"}) == 0);
}

TEST_CASE("study: channel_grad.csv holds the A_log and Δ-bias gradients grads gives on the same batch, to the last digit") {
    // the CSVs used std::to_string (six decimals): every gradient below 5e-7 came out as 0.000000
    const auto dir = scratch_dir("study_csv");
    const std::string model = byte_lm(dir / "lm");
    std::vector<int64_t> ids(2 * 10);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int64_t((i * 37 + 11) % 256);
    save_safetensors((dir / "batch.safetensors").string(), {{"input_ids", Tensor::from_vector<int64_t>(ids, {2, 10})}});
    REQUIRE(cli({"study", "--model", model, "--batch", (dir / "batch.safetensors").string(), "--out",
                 (dir / "study").string()}) == 0);
    REQUIRE(cli({"grads", "--model", model, "--batch", (dir / "batch.safetensors").string(), "--dtype", "f64", "--out",
                 (dir / "grads.safetensors").string()}) == 0);
    const TensorMap grads = load_safetensors((dir / "grads.safetensors").string());
    const std::vector<double> alog = grads.at("backbone.layers.0.mixer.A_log").to_vector<double>();
    const std::vector<double> dt_bias = grads.at("backbone.layers.0.mixer.dt_proj.bias").to_vector<double>();
    const int64_t E = 16, N = 4;
    std::ifstream csv(dir / "study" / "channel_grad.csv");
    std::string line;
    std::getline(csv, line);
    CHECK(line == "layer,channel,abs_grad_A_log_row,abs_grad_dt_bias");
    int64_t rows = 0, tiny = 0;
    while (std::getline(csv, line)) {
        int layer = -1;
        long long e = -1;
        double row = -1, bias = -1;
        REQUIRE(std::sscanf(line.c_str(), "%d,%lld,%lf,%lf", &layer, &e, &row, &bias) == 4);
        REQUIRE((layer == 0 && e == rows && e < E));
        double expected = 0;
        for (int64_t n = 0; n < N; ++n) expected += std::fabs(alog[size_t(e * N + n)]);
        CHECK(row == doctest::Approx(expected).epsilon(1e-12));
        CHECK(bias == doctest::Approx(std::fabs(dt_bias[size_t(e)])).epsilon(1e-12));
        CHECK(row > 0);
        tiny += row < 5e-7;
        ++rows;
    }
    CHECK(rows == E);
    CHECK(tiny > 0);  // (13 of the 16 rows here: what the six decimals lost)
}

TEST_CASE("fuzz regressions: every input that once crashed a fuzz target is now an ssmtune::Error or accepted") {
    // tests/fuzz/regressions/<target>_<what>: run_config: a --set value of raw non-UTF-8 bytes made the error
    // message itself throw nlohmann::json::type_error (fuzz_run_config, first 60 s run); the same bytes in the key
    // path, where the key lands on a string slot, made the "must be string" message throw (CI, stop 13).
    nlohmann::json rc = tools::resolve_run_config(nlohmann::json::object(), "test");
    CHECK_THROWS_WITH_AS(tools::apply_assignments(rc, "train.batch_size=\xca"), doctest::Contains("not valid UTF-8"), Error);
    CHECK_THROWS_WITH_AS(tools::apply_assignments(rc, "data.kind.nu#_to\xff" "ens=6"), doctest::Contains("not valid UTF-8"),
                         Error);
    tools::apply_assignments(rc, "data.classes=[5,6,7],train.lr=0.5");  // commas inside brackets belong to the value
    CHECK(rc["data"]["classes"] == nlohmann::json::array({5, 6, 7}));
    CHECK(rc["train"]["lr"] == 0.5);
    tools::apply_assignments(rc, "data.task.nm_utokens=3");  // task keys are checked by the task parser
    CHECK_THROWS_WITH_AS(data::SyntheticTask::from_json(rc["data"]["task"]), doctest::Contains("nm_utokens"), Error);
    // run_config_float_beyond_integer (found by fuzzing the CLI, 2026-12-06): 1e30 in an integer field (train.seed,
    // data.task.span, --set train.batch_size) was converted to int64 / uint64 with undefined behaviour; each is now an
    // error naming the field, as the fuzz target meets them (the run config, the assignments, then the task)
    const std::string floats =
        file_bytes(fs::path(SSMTUNE_SOURCE_DIR) / "tests" / "fuzz" / "regressions" / "run_config_float_beyond_integer");
    REQUIRE(floats.size() > 2);
    const size_t m = std::min(floats.size() - 2, size_t(uint8_t(floats[0])) << 8 | uint8_t(floats[1]));
    const nlohmann::json parsed = nlohmann::json::parse(floats.substr(2, m));
    CHECK_THROWS_WITH_AS(tools::resolve_run_config(parsed, "fuzz"), doctest::Contains("train.seed must be an integer"), Error);
    nlohmann::json no_seed = parsed;
    no_seed["train"].erase("seed");
    nlohmann::json resolved = tools::resolve_run_config(no_seed, "fuzz");
    CHECK_THROWS_WITH_AS(tools::apply_assignments(resolved, floats.substr(2 + m)), doctest::Contains("must be an integer"),
                         Error);
    CHECK_THROWS_WITH_AS(data::SyntheticTask::from_json(resolved["data"]["task"]), doctest::Contains("\"span\" must be an integer"),
                         Error);

    // adapter_loader_number_beyond_double (CI, stop 17): an adapter_config.json holding a 300-digit number; nlohmann
    // throws out_of_range for a number beyond double, and the JSON readers caught only parse_error. Replayed as the
    // fuzz target does: two length bytes, then the config, then the weights.
    const std::string input =
        file_bytes(fs::path(SSMTUNE_SOURCE_DIR) / "tests" / "fuzz" / "regressions" / "adapter_loader_number_beyond_double");
    REQUIRE(input.size() > 2);
    const size_t n = std::min(input.size() - 2, size_t(uint8_t(input[0])) << 8 | uint8_t(input[1]));
    const auto adapter = scratch_dir("fuzz_regression_adapter");
    std::ofstream(adapter / "adapter_config.json", std::ios::binary) << input.substr(2, n);
    std::ofstream(adapter / "adapter_model.safetensors", std::ios::binary) << input.substr(2 + n);
    models::AnyModel lm = models::create_model({{"model_type", "mamba"}, {"vocab_size", 11}, {"hidden_size", 8},
                                                {"num_hidden_layers", 2}, {"state_size", 4}, {"intermediate_size", 16},
                                                {"time_step_rank", 1}}, 1);
    CHECK_THROWS_WITH_AS(peft::load(lm.module(), adapter.string()), doctest::Contains("not valid JSON"), Error);
}

TEST_CASE("every example run config in tools/configs resolves, and its model and PEFT sections parse") {
    int64_t seen = 0;
    for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::path(SSMTUNE_SOURCE_DIR) / "tools" / "configs")) {
        if (entry.path().extension() != ".json") continue;
        INFO(entry.path().string());
        ++seen;
        const nlohmann::json rc = tools::resolve_run_config(models::read_json_file(entry.path().string()), entry.path().string());
        if (!rc["model"].is_null()) {
            const models::AnyModel m = models::create_model(rc["model"], 0, entry.path().string());
            CHECK(m.module().num_parameters() > 0);
            if (m.lm) CHECK(models::LMConfig::unknown_fields(rc["model"]).empty());  // no field `train` warns about
        }
        if (!rc["peft"].is_null()) CHECK_NOTHROW(peft::Config::from_json(rc["peft"], entry.path().string()));
        CHECK(tools::unused_data_settings(rc).empty());  // no data setting the run would warn about
    }
    CHECK(seen >= 6);
}

TEST_CASE("the example configs run as the README's pipeline: train, finetune, then eval from the finetune config") {
    const auto dir = scratch_dir("config_pipeline");
    const std::filesystem::path configs = std::filesystem::path(SSMTUNE_SOURCE_DIR) / "tools" / "configs";
    const std::string small = "train.batch_size=2,train.eval_batches=1", base = (dir / "base" / "model").string();
    REQUIRE(cli({"train", "--config", (configs / "mamba_selective_copying.json").string(), "--steps", "1", "--set", small,
                 "--out", (dir / "base").string(), "--quiet"}) == 0);
    const std::string ft = (configs / "finetune_lora.json").string();  // its base_model is relative to the README's cwd
    REQUIRE(cli({"finetune", "--config", ft, "--model", base, "--steps", "1", "--set", small + ",train.warmup_steps=0", "--out",
                 (dir / "ft").string(), "--quiet"}) == 0);
    const auto with = cli_captured({"eval", "--config", ft, "--model", base, "--adapter", (dir / "ft" / "adapter").string(),
                                    "--set", small}, 1);
    const auto without = cli_captured({"eval", "--config", ft, "--model", base, "--set", small}, 1);
    REQUIRE(with.first == 0);
    REQUIRE(without.first == 0);
    CHECK(with.second != without.second);  // the adapter was applied (one LoRA step, no warm-up, moved the loss)
}

TEST_CASE("unused_data_settings: a data setting its data.kind does not read is named, the defaults and the read ones are not") {
    auto unused = [](const nlohmann::json& user) { return tools::unused_data_settings(tools::resolve_run_config(user, "test")); };
    CHECK(unused(nlohmann::json::object()).empty());  // the built-in default: synthetic, nothing else set
    // text reads path, tokenizer, val_fraction and seq_len
    CHECK(unused({{"data", {{"kind", "text"}, {"path", "a.txt"}, {"tokenizer", "t.json"}, {"val_fraction", 0.2}}},
                  {"train", {{"seq_len", 64}}}}).empty());
    // a config written for images, then pointed at text: order and classes would be skipped silently
    const auto text = unused({{"data", {{"kind", "text"}, {"path", "a.txt"}, {"order", "pixel"}, {"classes", {1, 2}}}}});
    REQUIRE(text.size() == 2);
    CHECK(text[0] == "data.classes = [1,2] has no effect with data.kind \"text\" (only fashion_mnist reads it)");
    CHECK(text[1] == "data.order = \"pixel\" has no effect with data.kind \"text\" (only fashion_mnist reads it)");
    // tokens are ids already: a tokenizer is not read
    const auto tokens = unused({{"data", {{"kind", "tokens"}, {"path", "a.safetensors"}, {"tokenizer", "t.json"}}}});
    REQUIRE(tokens.size() == 1);
    CHECK(tokens[0].find("data.tokenizer") == 0);
    // --data FILE --task NAME: the task wins, the file and the sequence length are not read
    const auto synthetic = unused({{"data", {{"path", "corpus.txt"}}}, {"train", {{"seq_len", 512}}}});
    REQUIRE(synthetic.size() == 2);
    CHECK(synthetic[0].find("data.path = \"corpus.txt\" has no effect with data.kind \"synthetic\"") == 0);
    CHECK(synthetic[1].find("train.seq_len = 512 has no effect") == 0);
    // images: a task, a val_fraction; a permutation seed only matters for the permuted order
    const auto images = unused({{"data", {{"kind", "fashion_mnist"}, {"task", {{"span", 8}}}, {"val_fraction", 0.3},
                                          {"permutation_seed", 5}}}});
    REQUIRE(images.size() == 3);
    CHECK(images[0].find("data.permutation_seed = 5") == 0);
    CHECK(images[1].find("data.task = ") == 0);
    CHECK(images[2].find("data.val_fraction = 0.3") == 0);
    CHECK(unused({{"data", {{"kind", "fashion_mnist"}, {"order", "permuted"}, {"permutation_seed", 5}, {"limit", 10},
                            {"classes", {0, 1}}}}}).empty());
}

TEST_CASE("bench: the scan benchmark on a tiny shape, and its usage errors") {
    CHECK(cli({"bench", "--what", "scan", "--batch", "1", "--inner", "8", "--state", "4", "--lengths", "8,16",
               "--repeats", "1"}) == 0);
    CHECK(cli({"bench", "--help"}) == 0);
    CHECK(cli({"bench", "--what", "everything"}) == 2);
    CHECK(cli({"bench", "--lengths", "8,x"}) == 2);
    CHECK(cli({"bench", "--repeats", "0"}) == 2);
    CHECK(cli({"bench", "--device", "tpu"}) == 2);
    if (!cuda::available()) {  // no GPU: one error line and exit 1, for every CUDA benchmark
        CHECK(cli({"bench", "--device", "cuda"}) == 1);
        CHECK(cli({"bench", "--device", "cuda", "--what", "scan"}) == 1);
    }
    CHECK(cli({"bench", "--device", "cuda", "--what", "peft"}) == 1);
}

TEST_CASE("--device: cpu trains as before, a GPU that is not there, or a bad name, is one error naming the fix") {
    const std::filesystem::path dir = scratch_dir("device_flag");
    CHECK(cli({"train", "--task", "selective_copying", "--steps", "2", "--batch-size", "2", "--device", "cpu", "--out",
               (dir / "cpu").string(), "--quiet"}) == 0);
    CHECK(nlohmann::json::parse(file_bytes(dir / "cpu" / "run_config.json"))["train"]["device"] == "cpu");
    CHECK_THROWS_WITH_AS(tools::resolve_device("tpu", "train.device"), doctest::Contains("cpu, cuda or cuda:N"), Error);
    CHECK_THROWS_WITH_AS(tools::resolve_device("cuda:", "train.device"), doctest::Contains("cpu, cuda or cuda:N"), Error);
    CHECK_THROWS_WITH_AS(tools::resolve_device("cuda:1x", "--device"), doctest::Contains("cpu, cuda or cuda:N"), Error);
    CHECK(tools::resolve_device("cpu", "x") == Device::cpu());
    if (!cuda::available()) {  // this machine: the error says what to do, and the command exits 1
        CHECK_THROWS_WITH_AS(tools::resolve_device("cuda", "train.device"), doctest::Contains("fix: use cpu"), Error);
        CHECK(cli({"train", "--task", "selective_copying", "--steps", "2", "--device", "cuda", "--out",
                   (dir / "gpu").string(), "--quiet"}) == 1);
        CHECK(cli({"train", "--task", "selective_copying", "--steps", "2", "--set", "train.device=cuda:0", "--out",
                   (dir / "gpu").string(), "--quiet"}) == 1);
    }
    CHECK(cli({"train", "--task", "selective_copying", "--steps", "2", "--device", "tpu", "--out", (dir / "bad").string(),
               "--quiet"}) == 1);
}
