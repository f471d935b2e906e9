// Shared pieces of the libFuzzer targets: a per-process scratch directory, writing bytes to files, and the rule
// every target enforces — bad input may only ever surface as ssmtune::Error (which the CLI turns into one line and
// exit 1); any other exception, crash, leak or UB report is a finding.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "engine/error.h"

namespace ssmtune::fuzz {

inline const std::filesystem::path& scratch() {
    static const std::filesystem::path dir = [] {
        auto d = std::filesystem::temp_directory_path() / ("ssmtune_fuzz_" + std::to_string(::getpid()));
        std::filesystem::create_directories(d);
        return d;
    }();
    return dir;
}

inline void write_bytes(const std::filesystem::path& p, const uint8_t* data, size_t size) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), std::streamsize(size));
}

// Splits the input into two parts: the first two bytes give the length of the first part.
inline void split2(const uint8_t* data, size_t size, std::string& a, std::string& b) {
    size_t n = size >= 2 ? (size_t(data[0]) << 8 | data[1]) : 0;
    const uint8_t* rest = data + (size >= 2 ? 2 : size);
    const size_t rest_size = size >= 2 ? size - 2 : 0;
    n = std::min(n, rest_size);
    a.assign(reinterpret_cast<const char*>(rest), n);
    b.assign(reinterpret_cast<const char*>(rest + n), rest_size - n);
}

}  // namespace ssmtune::fuzz
