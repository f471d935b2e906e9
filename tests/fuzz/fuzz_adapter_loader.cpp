// libFuzzer target: an adapter directory (adapter_config.json + adapter_model.safetensors) from the input, loaded
// into a tiny fixed Mamba with peft::load.
#include "models/ssm_lm.h"
#include "peft/peft.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    namespace fz = ssmtune::fuzz;
    static ssmtune::models::LanguageModel* model = [] {
        ssmtune::models::LMConfig c;
        c.vocab_size = 11;
        c.hidden_size = 8;
        c.num_hidden_layers = 2;
        c.state_size = 4;
        c.intermediate_size = 16;
        c.time_step_rank = 1;
        return new ssmtune::models::LanguageModel(c, 1);
    }();
    std::string config, weights;
    fz::split2(data, size, config, weights);
    const auto dir = fz::scratch() / "adapter";
    std::filesystem::create_directories(dir);
    fz::write_bytes(dir / "adapter_config.json", reinterpret_cast<const uint8_t*>(config.data()), config.size());
    fz::write_bytes(dir / "adapter_model.safetensors", reinterpret_cast<const uint8_t*>(weights.data()), weights.size());
    try {
        ssmtune::peft::Adapter a = ssmtune::peft::load(*model, dir.string());
        a.detach();
    } catch (const ssmtune::Error&) {
    }
    return 0;
}
