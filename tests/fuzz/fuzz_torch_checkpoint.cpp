// libFuzzer target: the PyTorch checkpoint reader (zip directory, restricted unpickler, tensor views) on arbitrary
// bytes — every rejection must be an ssmtune::Error, and no pickle may make it leak, loop or call anything.
// Two kinds of input. An input that starts with "PKL" is split2(data.pkl, storages), the storages a run of
// [u16 big-endian length][bytes] named 0, 1, 2, ...: the target wraps them in a well-formed archive with the right
// CRC-32s, so mutations reach the pickle machine and the views instead of failing the checksums. Any other input is
// the file itself (the archive reader). Either way the file reader (open_torch_checkpoint) must give the same tensors
// to the byte, or an Error exactly where parse_torch_checkpoint gives one.
#include <cstdlib>
#include <cstring>

#include "engine/torch_checkpoint.h"
#include "tests/fuzz/fuzz_common.h"
#include "tests/zip_builder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string wrapped;
    if (size >= 3 && std::memcmp(data, "PKL", 3) == 0) {
        std::string pickle, rest;
        ssmtune::fuzz::split2(data + 3, size - 3, pickle, rest);
        std::vector<std::pair<std::string, std::string>> entries = {{"archive/data.pkl", pickle},
                                                                    {"archive/byteorder", "little"}};
        for (size_t at = 0, key = 0; at + 2 <= rest.size(); ++key) {
            const size_t n = std::min((size_t(uint8_t(rest[at])) << 8 | uint8_t(rest[at + 1])), rest.size() - at - 2);
            entries.emplace_back("archive/data/" + std::to_string(key), rest.substr(at + 2, n));
            at += 2 + n;
        }
        wrapped = ssmtune::testing::stored_zip(entries);
        data = reinterpret_cast<const uint8_t*>(wrapped.data());
        size = wrapped.size();
    }
    bool parsed = false;
    ssmtune::TensorMap t;
    try {
        t = ssmtune::parse_torch_checkpoint(data, size, "fuzz input");
        parsed = true;
    } catch (const ssmtune::Error&) {
    }
    // The file reader (open_torch_checkpoint: pread, a whole stored storage straight into the tensor) must agree with
    // the whole-archive reader: the same tensors to the byte, or an Error where it gave one.
    const auto path = ssmtune::fuzz::scratch() / "pytorch_model.bin";
    ssmtune::fuzz::write_bytes(path, data, size);
    bool read_all = false;
    try {
        const std::unique_ptr<ssmtune::TensorFile> file = ssmtune::open_torch_checkpoint(path.string());
        if (file->entries().size() != t.size() && parsed) std::abort();
        for (const auto& [name, entry] : file->entries()) {
            const ssmtune::Tensor got = file->read(name);
            if (!parsed) continue;
            const ssmtune::Tensor& want = t.at(name);
            const size_t bytes = size_t(want.numel()) * ssmtune::dtype_size(want.dtype());
            if (got.dtype() != want.dtype() || got.shape() != want.shape() ||
                (bytes && std::memcmp(got.raw_data(), want.raw_data(), bytes) != 0))
                std::abort();
        }
        read_all = true;
    } catch (const ssmtune::Error&) {
    }
    if (read_all != parsed) std::abort();
    return 0;
}
