// libFuzzer target: a model directory (config.json + model.safetensors) built from the input — the first part is
// the config, the rest the weights — loaded with models::load_model.
#include "models/checkpoint.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    namespace fz = ssmtune::fuzz;
    std::string config, weights;
    fz::split2(data, size, config, weights);
    const auto dir = fz::scratch() / "model";
    std::filesystem::create_directories(dir);
    fz::write_bytes(dir / "config.json", reinterpret_cast<const uint8_t*>(config.data()), config.size());
    fz::write_bytes(dir / "model.safetensors", reinterpret_cast<const uint8_t*>(weights.data()), weights.size());
    try {
        ssmtune::models::AnyModel m = ssmtune::models::load_model(dir.string());
        (void)m.module().num_parameters();
    } catch (const ssmtune::Error&) {
    }
    return 0;
}
