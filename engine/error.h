// ssmtune::Error — the one exception type of the library.
//
// Every failure the library reports says what was wrong, where (file, tensor name, shape, source line) and,
// where there is one, the fix. The CLI turns it into one `error: <message>` line and exit status 1.
// Not here: error codes or logging; a library throws, the program decides what to print.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace ssmtune {

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
// Builds "<what> [at file:line]" with an optional "; fix: <hint>" tail.
[[noreturn]] void throw_error(const std::string& what, const char* file, int line);

// Streams any number of arguments into one string: str_cat("shape ", 3, "x", 4).
template <class... Args>
std::string str_cat(const Args&... args) {
    std::ostringstream os;
    (os << ... << args);
    return os.str();
}
}  // namespace detail

}  // namespace ssmtune

// SSMTUNE_CHECK(cond, parts...) throws ssmtune::Error with the streamed parts when cond is false.
#define SSMTUNE_CHECK(cond, ...)                                                                          \
    do {                                                                                                  \
        if (!(cond)) ::ssmtune::detail::throw_error(::ssmtune::detail::str_cat(__VA_ARGS__), __FILE__, __LINE__); \
    } while (0)

// SSMTUNE_FAIL(parts...) always throws.
#define SSMTUNE_FAIL(...) ::ssmtune::detail::throw_error(::ssmtune::detail::str_cat(__VA_ARGS__), __FILE__, __LINE__)
