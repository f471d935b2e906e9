// libFuzzer target: the safetensors parser on arbitrary bytes (every rejection must be an ssmtune::Error).
#include "engine/safetensors.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        ssmtune::Metadata meta;
        ssmtune::TensorMap t = ssmtune::parse_safetensors(data, size, "fuzz input", &meta);
        for (auto& [name, tensor] : t) (void)tensor.numel();
    } catch (const ssmtune::Error&) {
    }
    return 0;
}
