// The flag parser shared by the commands (see commands.h). No dependency: `--name value` and `--switch`.
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "tools/commands.h"

namespace ssmtune::tools {

Flags::Flags(int argc, char** argv, const std::map<std::string, std::string>& spec, const std::string& command)
    : values_(spec), command_(command) {
    for (auto& [name, value] : values_)
        if (value == kSwitch) value = "";
    for (int i = 0; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "--help" || arg == "-h") { help_ = true; continue; }
        if (arg.rfind("--", 0) != 0) throw UsageError(command + ": unexpected argument '" + arg + "'");
        std::string name = arg.substr(2), value;
        const size_t eq = name.find('=');
        const bool inline_value = eq != std::string::npos;
        if (inline_value) { value = name.substr(eq + 1); name = name.substr(0, eq); }
        auto it = spec.find(name);
        if (it == spec.end()) {
            std::string known;
            for (const auto& [k, v] : spec) known += " --" + k;
            throw UsageError(command + ": unknown flag '--" + name + "'; known:" + known);
        }
        if (it->second == kSwitch) {
            if (inline_value) throw UsageError(command + ": flag '--" + name + "' takes no value");
            value = "1";
        } else if (!inline_value) {
            if (i + 1 >= argc) throw UsageError(command + ": flag '--" + name + "' needs a value");
            value = argv[++i];
        }
        // the last one used to win silently: `eval --adapter A --adapter B` evaluated B alone
        if (set_.count(name))
            throw UsageError(command + ": flag '--" + name + "' is given twice; fix: give it once" +
                             (name == "adapter" ? " (several adapters go in one --adapter, as --help shows)" : ""));
        values_[name] = value;
        set_[name] = true;
    }
}

std::string Flags::str(const std::string& name) const { return values_.at(name); }
bool Flags::is_set(const std::string& name) const { return set_.count(name) > 0; }

namespace {
// Base-10 text to a long long: false when it is not all digits (an optional sign first); `out_of_range` when it is
// but does not fit 64 bits (strtoll then clamps).
bool parse_integer(const std::string& text, long long& value, bool& out_of_range) {
    char* end = nullptr;
    errno = 0;
    value = std::strtoll(text.c_str(), &end, 10);
    out_of_range = errno == ERANGE;
    return !text.empty() && *end == '\0';
}
}  // namespace

long long Flags::integer(const std::string& name) const {
    const std::string& v = values_.at(name);
    long long x = 0;
    bool out_of_range = false;
    if (!parse_integer(v, x, out_of_range))
        throw UsageError(command_ + ": --" + name + " expects an integer, got '" + v + "'");
    if (out_of_range) throw UsageError(command_ + ": --" + name + " " + v + " is beyond the 64-bit integer range");
    return x;
}

long long Flags::integer(const std::string& name, long long min, long long max) const {
    const long long x = integer(name);
    if (x < min || x > max)
        throw UsageError(command_ + ": --" + name + " must be an integer in [" + std::to_string(min) + ", " +
                         std::to_string(max) + "], got " + std::to_string(x));
    return x;
}

uint64_t Flags::seed(const std::string& name) const {
    const long long v = integer(name);
    if (v < 0) throw UsageError(command_ + ": --" + name + " must be an integer >= 0, got " + std::to_string(v));
    return uint64_t(v);
}

std::vector<int64_t> Flags::integers(const std::string& name) const {
    std::vector<int64_t> out;
    for (const std::string& item : list(name)) {
        long long v = 0;
        bool out_of_range = false;
        if (!parse_integer(item, v, out_of_range) || out_of_range)
            throw UsageError(command_ + ": --" + name + " must be comma-separated integers, got '" + item + "'");
        out.push_back(v);
    }
    return out;
}

double Flags::number(const std::string& name) const {
    const std::string& v = values_.at(name);
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0') throw UsageError(command_ + ": --" + name + " expects a number, got '" + v + "'");
    // nan / inf parse, but no flag means them (--lr nan reached the run config as null and was reported as "got null")
    if (!std::isfinite(x)) throw UsageError(command_ + ": --" + name + " expects a finite number, got '" + v + "'");
    return x;
}

std::vector<std::string> Flags::list(const std::string& name) const {
    std::vector<std::string> out;
    std::stringstream in(values_.at(name));
    for (std::string part; std::getline(in, part, ',');) out.push_back(part);
    return out;
}

}  // namespace ssmtune::tools
