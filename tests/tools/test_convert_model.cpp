// `ssmtune convert --model DIR --out DIR` (no --adapter): a model in a form ssmtune reads but does not write —
// pytorch_model.bin, sharded or not, with mamba_ssm's config.json and original names, as state-spaces/mamba-* ship —
// comes out as config.json with HF's field names + model.safetensors holding the same tensors, and the commands read
// the .bin directory directly too.
#include "test_util.h"

#include <nlohmann/json.hpp>

#include "models/checkpoint.h"
#include "tests/tools/cli_test_util.h"

using namespace ssmtune;
using namespace ssmtune::testing;
namespace fs = std::filesystem;

TEST_CASE("convert: pytorch_model.bin with mamba_ssm's config becomes config.json + model.safetensors") {
    const auto dir = scratch_dir("convert_model");
    const fs::path fixtures = fs::path(SSMTUNE_SOURCE_DIR) / "tests/engine/torch_checkpoints";
    const models::AnyModel reference = models::load_model((fixtures / "tiny_mamba_safetensors").string());
    for (const char* input : {"tiny_mamba_bin", "tiny_mamba_sharded"}) {
        CAPTURE(input);
        const fs::path out = dir / input;
        const auto [status, printed] = cli_captured({"convert", "--model", (fixtures / input).string(), "--out",
                                                     out.string()}, 1);
        REQUIRE(status == 0);
        CHECK(printed.find("as config.json + model.safetensors") != std::string::npos);
        CHECK(fs::exists(out / "model.safetensors"));
        CHECK_FALSE(fs::exists(out / "pytorch_model.bin"));
        const nlohmann::json config = models::read_json_file((out / "config.json").string());
        CHECK(config.at("model_type") == "mamba");
        CHECK(config.at("hidden_size") == 8);
        const models::AnyModel converted = models::load_model(out.string());
        expect_same_tensors(converted.module().state_dict(), reference.module().state_dict());
    }
    // the commands read the .bin directory as it is
    CHECK(cli({"inspect", "--model", (fixtures / "tiny_mamba_bin").string()}) == 0);
    CHECK(cli({"eval", "--model", (fixtures / "tiny_mamba_bin").string(), "--adapter",
               (fixtures / "lora_bin").string(), "--task", "selective_copying"}) == 0);
    // usage mistakes
    CHECK(cli({"convert", "--model", (fixtures / "tiny_mamba_bin").string()}) == 2);
    CHECK(cli({"convert", "--model", (dir / "tiny_mamba_bin").string(), "--out", (dir / "tiny_mamba_bin").string()}) == 2);
}
