// Formatting of ssmtune::Error messages (see error.h).
#include "engine/error.h"

#include <cstring>

namespace ssmtune::detail {

[[noreturn]] void throw_error(const std::string& what, const char* file, int line) {
    // Keep only the path from the project folder down, so messages do not leak build-machine paths.
    const char* short_file = file;
    for (const char* dir : {"engine/", "autograd/", "ops/", "cuda/", "models/", "peft/", "tools/", "tests/"}) {
        if (const char* p = std::strstr(file, dir)) { short_file = p; break; }
    }
    throw Error(what + " [at " + short_file + ":" + std::to_string(line) + "]");
}

}  // namespace ssmtune::detail
